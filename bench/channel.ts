/**
 * `npm run bench`: one effect-p2pnet channel on loopback between two processes (this driver and bench/peer.ts),
 * each figure beside a plain node:net baseline measured in the same run (bench/baseline.ts): 100-byte PureMessages
 * per second, 64 KiB DataTransmission MB/s and handshake latency. Prints a table, notes, and one JSON line.
 *
 * Also the fan-out of bench/broadcast.ts (one node to 20 peers in other processes) and the 256 MiB file transfer of
 * bench/files.ts.
 *
 * Also the bootstrap server's registrations and heartbeats per second with p99 latency (bench/bootstrap.ts).
 *
 * Environment: BENCH_ONLY=small,single,prebuilt,bulk,handshake,broadcast,file,bootstrap picks metrics; BENCH_SECONDS (default 1) is the length of one
 * timed run; BENCH_ROUNDS (default 5) the timed runs per side, of which the median is reported.
 */
import { Cause, Console, Context, DateTime, Effect, Layer, Logger, LogLevel } from "effect"
import * as os from "node:os"
import { networkLayerWith } from "../src/layers/Network.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { DistributionHandler } from "../src/layers/Distribution.js"
import { fanout, FANOUT } from "./broadcast.js"
import { FileTransfer } from "../src/layers/FileTransfer.js"
import { FILE_BYTES, fileBench } from "./files.js"
import { bootstrapBench, describe as describeBootstrap, IN_FLIGHT } from "./bootstrap.js"
import { DataTransmission, PureMessage } from "../src/schema/packets.js"
import { NetworkSettings } from "../src/schema/settings.js"
import { connect, sendBulk, sendSmall } from "./baseline.js"
import { compare, handshakes, librarySender } from "./measure.js"
import type { Options, Sender, Side } from "./measure.js"
import { BenchFailed, spawnReceiver } from "./receiver.js"
import { BULK_BYTES, SMALL_TEXT } from "./shared.js"

const only = (process.env["BENCH_ONLY"] ?? "small,single,bulk,handshake,broadcast,file,bootstrap").split(",")
const options: Options = {
  seconds: Number(process.env["BENCH_SECONDS"] ?? "1"),
  rounds: Number(process.env["BENCH_ROUNDS"] ?? "5")
}
const HANDSHAKES = 200
const HANDSHAKE_WARMUP = 20
const TARGET = { small: 0.3, bulk: 0.5 }

const baselineSender = <R>(send: (count: number) => Effect.Effect<void, Error, R>): Sender => ({
  send: (count) =>
    Effect.mapError(
      send(count) as Effect.Effect<void, Error>,
      (e) => new BenchFailed({ detail: `baseline: ${e.message}` })
    ),
  guard: (self) => self
})

interface Row {
  readonly metric: string
  readonly library: string
  readonly baseline: string
  readonly ratio: string
  readonly target: string
  readonly pass: string
}

const rounded = (x: number, digits: number) => Number(x.toFixed(digits))
const grouped = (x: number) => Math.round(x).toLocaleString("en-US")

/** A throughput comparison as a table row, notes and a JSON entry. `scale` turns messages/s into the unit shown. */
const throughputReport = (
  r: { readonly baseline: Side; readonly library: Side },
  metric: string,
  unit: string,
  scale: number,
  target: number | undefined
) => {
  const ratio = r.library.rate / r.baseline.rate
  const show = (x: number) => (scale === 1 ? grouped(x) : String(Math.round(x * scale)))
  const row: Row = {
    metric: `${metric} (${unit})`,
    library: show(r.library.rate),
    baseline: show(r.baseline.rate),
    ratio: ratio.toFixed(2),
    target: target === undefined ? "-" : `>= ${target}`,
    pass: target === undefined ? "-" : ratio >= target ? "PASS" : "FAIL"
  }
  const notes = [
    `${metric}: ${r.library.count} library / ${r.baseline.count} baseline messages per timed run; at the receiver ` +
      `alone ${show(r.library.receiverRate)} / ${show(r.baseline.receiverRate)} ${unit}`,
    `${metric}: CPU per message, sender + receiver: library ${r.library.senderCpu.toFixed(1)} + ` +
      `${r.library.receiverCpu.toFixed(1)} us, baseline ${r.baseline.senderCpu.toFixed(1)} + ` +
      `${r.baseline.receiverCpu.toFixed(1)} us`
  ]
  const json = {
    unit,
    library: rounded(r.library.rate * scale, 1),
    baseline: rounded(r.baseline.rate * scale, 1),
    ratio: rounded(ratio, 3),
    ...(target === undefined ? {} : { target, pass: ratio >= target }),
    receiverOnly: {
      library: rounded(r.library.receiverRate * scale, 1),
      baseline: rounded(r.baseline.receiverRate * scale, 1)
    },
    cpuMicrosPerMessage: {
      library: { sender: rounded(r.library.senderCpu, 2), receiver: rounded(r.library.receiverCpu, 2) },
      baseline: { sender: rounded(r.baseline.senderCpu, 2), receiver: rounded(r.baseline.receiverCpu, 2) }
    },
    messagesPerRun: { library: r.library.count, baseline: r.baseline.count }
  }
  return { row, notes, json }
}

const table = (rows: ReadonlyArray<Row>): ReadonlyArray<string> => {
  const header: Row = {
    metric: "metric",
    library: "library",
    baseline: "baseline",
    ratio: "ratio",
    target: "target",
    pass: "pass"
  }
  const keys = Object.keys(header) as Array<keyof Row>
  const width = (k: keyof Row) => Math.max(...[header, ...rows].map((r) => r[k].length))
  const line = (r: Row) => keys.map((k, i) => (i === 0 ? r[k].padEnd(width(k)) : r[k].padStart(width(k)))).join("  ")
  return [line(header), keys.map((k) => "-".repeat(width(k))).join("  "), ...rows.map(line)]
}

const main = Effect.gen(function* () {
  const receiver = yield* spawnReceiver
  const context = yield* Layer.build(networkLayerWith({ host: "127.0.0.1", port: 0, listen: false }))
  const node = Context.get(context, PeerNetwork)
  const distribution = Context.get(context, DistributionHandler)
  const files = Context.get(context, FileTransfer)
  const defaults = NetworkSettings.make({})
  const rows: Array<Row> = []
  const notes: Array<string> = []
  const json: Record<string, unknown> = {
    bench: "channel",
    node: process.version,
    cpus: os.cpus().length,
    seconds: options.seconds,
    rounds: options.rounds,
    settings: {
      maxFramesPerSecond: defaults.maxFramesPerSecond,
      outboxCapacity: defaults.outboxCapacity,
      inboxCapacity: defaults.inboxCapacity
    }
  }
  const origin = node.id
  const smallPacket = () => PureMessage.make({ message: SMALL_TEXT, origin, sentAt: DateTime.unsafeNow() })

  if (only.some((m) => m === "small" || m === "single" || m === "prebuilt" || m === "bulk")) {
    const channel = yield* node.dial("127.0.0.1", receiver.ready.libraryPort)
    yield* channel.awaitTrusted

    if (only.includes("small") || only.includes("single") || only.includes("prebuilt")) {
      const socket = yield* connect(receiver.ready.smallPort).pipe(
        Effect.mapError((e) => new BenchFailed({ detail: `baseline connect: ${e.message}` }))
      )
      const baseline = baselineSender((count) => sendSmall(socket, count))
      let maxRate = 0
      // "small" is the measured figure; "single" (one send() per packet) and "prebuilt" (one packet built once, to
      // separate packet construction from the channel) are diagnostics
      const smallRuns = [
        { metric: "small", mode: "batched", label: "sendAll of 256", key: "small", target: TARGET.small },
        { metric: "single", mode: "single", label: "one send each", key: "smallSingle", target: undefined },
        {
          metric: "prebuilt",
          mode: "prebuilt",
          label: "one packet reused",
          key: "smallPacketReused",
          target: undefined
        }
      ] as const
      for (const run of smallRuns.filter((m) => only.includes(m.metric))) {
        const library = librarySender(channel, smallPacket, run.mode)
        const r = yield* compare(receiver, options, 20_000, 5_000_000, baseline, library)
        const report = throughputReport(r, `100-byte PureMessage, ${run.label}`, "msg/s", 1, run.target)
        rows.push(report.row)
        notes.push(...report.notes)
        json[run.key] = report.json
        maxRate = Math.max(maxRate, r.library.receiverRate)
      }
      const limit = defaults.maxFramesPerSecond
      notes.push(
        maxRate > limit * 0.8
          ? `small: the library rate came near the maxFramesPerSecond flood limit (${limit})`
          : `small: the library rate stayed well under the maxFramesPerSecond flood limit (${limit})`
      )
    }

    if (only.includes("bulk")) {
      const socket = yield* connect(receiver.ready.bulkPort).pipe(
        Effect.mapError((e) => new BenchFailed({ detail: `baseline connect: ${e.message}` }))
      )
      const data = new Uint8Array(BULK_BYTES).map((_, i) => i & 255)
      const bulkPacket = () => DataTransmission.make({ format: "MiscData", data, origin, sentAt: DateTime.unsafeNow() })
      const r = yield* compare(
        receiver,
        options,
        200,
        100_000,
        baselineSender((count) => sendBulk(socket, count, data)),
        librarySender(channel, bulkPacket, "single")
      )
      const report = throughputReport(r, "64 KiB DataTransmission", "MB/s", BULK_BYTES / 1e6, TARGET.bulk)
      rows.push(report.row)
      notes.push(...report.notes)
      json["bulk"] = report.json
    }
    yield* channel.close("benchmark throughput done")
    yield* channel.awaitClosed
  }

  if (only.includes("handshake")) {
    const h = yield* handshakes(receiver, node, HANDSHAKES, HANDSHAKE_WARMUP)
    rows.push({
      metric: `handshake latency, median of ${HANDSHAKES} (ms)`,
      library: h.library.echoed.toFixed(2),
      baseline: h.baseline.toFixed(2),
      ratio: (h.library.echoed / h.baseline).toFixed(2),
      target: "-",
      pass: "-"
    })
    notes.push(
      `handshake: library medians from dial start: dial returned ${h.library.dialed.toFixed(2)} ms, trusted ` +
        `${h.library.trusted.toFixed(2)} ms, first PureMessage echoed ${h.library.echoed.toFixed(2)} ms; baseline: ` +
        `TCP connect and one small message echoed`
    )
    json["handshake"] = {
      unit: "ms",
      library: rounded(h.library.echoed, 3),
      baseline: rounded(h.baseline, 3),
      ratio: rounded(h.library.echoed / h.baseline, 2),
      samples: HANDSHAKES,
      libraryPhases: {
        dialed: rounded(h.library.dialed, 3),
        trusted: rounded(h.library.trusted, 3),
        echoed: rounded(h.library.echoed, 3)
      }
    }
  }

  if (only.includes("file")) {
    const f = yield* fileBench(receiver, node, files, options)
    const ratio = f.library / f.baseline
    rows.push({
      metric: "256 MiB file, sendFile to receipt (MB/s)",
      library: f.library.toFixed(0),
      baseline: f.baseline.toFixed(0),
      ratio: ratio.toFixed(2),
      target: "-",
      pass: "-"
    })
    notes.push(
      `file: ${FILE_BYTES / 2 ** 20} MiB of random bytes read from disk, sent in chunks, written to the receiver's ` +
        `inbox directory and SHA-256 verified before the receipt; baseline: the same bytes as plain 64 KiB frames ` +
        `on node:net, counted at the receiver (nothing written to disk); medians of ${Math.min(options.rounds, 3)} runs`
    )
    json["file"] = {
      unit: "MB/s",
      bytes: FILE_BYTES,
      library: rounded(f.library, 1),
      baseline: rounded(f.baseline, 1),
      ratio: rounded(ratio, 3)
    }
  }

  if (only.includes("broadcast")) {
    const f = yield* fanout(node, distribution, options)
    const ideal = FANOUT * f.library.single
    const ratio = f.library.fanout / ideal
    rows.push({
      metric: `100-byte broadcast to ${FANOUT} peers (deliveries/s)`,
      library: grouped(f.library.fanout),
      baseline: `${FANOUT} x ${grouped(f.library.single)}`,
      ratio: ratio.toFixed(2),
      target: "-",
      pass: "-"
    })
    const baselineRatio = f.baseline.fanout / (FANOUT * f.baseline.single)
    notes.push(
      `broadcast: ${FANOUT} receiving nodes in ${FANOUT} processes; the library column is deliveries per second of ` +
        `DistributionHandler.broadcast (one call per message), the baseline column ${FANOUT} times one channel's ` +
        `rate with one send per message, measured in the same run`,
      `broadcast: plain node:net fan-out for comparison: ${grouped(f.baseline.fanout)} deliveries/s against ` +
        `${FANOUT} x ${grouped(f.baseline.single)} (ratio ${baselineRatio.toFixed(2)}): the receivers share this ` +
        `machine's CPUs, which caps any fan-out; the library keeps ${(ratio / baselineRatio).toFixed(2)} of the ` +
        `baseline's fan-out efficiency`
    )
    json["broadcast"] = {
      unit: "deliveries/s",
      peers: FANOUT,
      library: rounded(f.library.fanout, 0),
      singleChannel: rounded(f.library.single, 0),
      ratio: rounded(ratio, 3),
      baseline: {
        fanout: rounded(f.baseline.fanout, 0),
        singleChannel: rounded(f.baseline.single, 0),
        ratio: rounded(baselineRatio, 3)
      }
    }
  }

  if (only.includes("bootstrap")) {
    const b = yield* bootstrapBench
    const row = (what: string, r: { readonly perSecond: number; readonly p99Millis: number }) =>
      rows.push({
        metric: `bootstrap ${what}/s, p99 ms at ${IN_FLIGHT} in flight`,
        library: `${grouped(r.perSecond)} (p99 ${r.p99Millis.toFixed(1)})`,
        baseline: "-",
        ratio: "-",
        target: "-",
        pass: "-"
      })
    row("registrations", b.sqlite.register)
    row("heartbeats", b.sqlite.heartbeat)
    notes.push(
      ...describeBootstrap(b).map((l) => `bootstrap: ${l}`),
      "bootstrap: the program in a child process with its SQLite store (every write committed with synchronous=FULL " +
        "before the answer), rate limiting off, requests signed beforehand; the memory-store lines run the server in this process, sharing its thread with the " +
        "client; the in-memory store copies its maps per write and shuffles all peers per sample, so it is no " +
        "lower bound on the HTTP side's cost"
    )
    json["bootstrap"] = b
  }

  notes.push(
    `settings: library defaults on both nodes (maxFramesPerSecond ${defaults.maxFramesPerSecond}, outboxCapacity ` +
      `${defaults.outboxCapacity}, inboxCapacity ${defaults.inboxCapacity}); no limit was changed`,
    `ratio is library / baseline (for the handshake, a latency, lower is better); ${options.rounds} timed runs of ` +
      `about ${options.seconds} s per side and metric, medians`
  )
  yield* Console.log(["", ...table(rows), "", ...notes.map((n) => `  ${n}`), "", JSON.stringify(json)].join("\n"))
})

Effect.runPromiseExit(
  main.pipe(Effect.scoped, Effect.timeout("10 minutes"), Effect.provide(Logger.minimumLogLevel(LogLevel.Warning)))
).then((exit) => {
  if (exit._tag === "Failure") {
    process.stderr.write(`benchmark failed: ${Cause.pretty(exit.cause)}\n`)
    process.exitCode = 1
  }
})
