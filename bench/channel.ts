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
 * "secure" (issue 7): a Noise channel (the default session) beside a plain-text channel (`session: "plain"` on both
 * sides), in the same run: small messages per second, bulk MB/s and handshake latency, each with its target.
 *
 * Environment: BENCH_ONLY=small,single,prebuilt,bulk,handshake,secure,broadcast,file,bootstrap picks metrics;
 * BENCH_SECONDS (default 1) is the length of one timed run; BENCH_ROUNDS (default 5) the timed runs per side, of which
 * the median is reported.
 */
import { Cause, Console, Context, DateTime, Effect, Layer, Logger, LogLevel } from "effect"
import * as os from "node:os"
import { networkLayerWith } from "../src/layers/Network.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { noiseSessionLayer } from "../src/layers/NoiseSession.js"
import { DistributionHandler } from "../src/layers/Distribution.js"
import { fanout, FANOUT } from "./broadcast.js"
import { FileTransfer } from "../src/layers/FileTransfer.js"
import { FILE_BYTES, fileBench } from "./files.js"
import { bootstrapBench, describe as describeBootstrap, IN_FLIGHT } from "./bootstrap.js"
import { DataTransmission, PureMessage } from "../src/schema/packets.js"
import { NetworkSettings } from "../src/schema/settings.js"
import { connect, sendBulk, sendSmall } from "./baseline.js"
import { compare, handshakes, librarySender } from "./measure.js"
import type { Options, Phases, Sender, Side } from "./measure.js"
import { BenchFailed, spawnReceiver } from "./receiver.js"
import { BULK_BYTES, SMALL_TEXT } from "./shared.js"

const only = (process.env["BENCH_ONLY"] ?? "small,single,bulk,handshake,secure,broadcast,file,bootstrap").split(",")
const options: Options = {
  seconds: Number(process.env["BENCH_SECONDS"] ?? "1"),
  rounds: Number(process.env["BENCH_ROUNDS"] ?? "5")
}
const HANDSHAKES = 200
const HANDSHAKE_WARMUP = 20
const TARGET = { small: 0.3, bulk: 0.5 }
/** Issue 7: Noise / plain text, for throughput at least; the Noise handshake median below, in ms. */
const SECURE_TARGET = { small: 0.6, bulk: 0.5, handshakeMillis: 5 }

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
  target: number | undefined,
  names: { readonly library: string; readonly baseline: string } = { library: "library", baseline: "baseline" }
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
  const { baseline: b, library: l } = names
  const notes = [
    `${metric}: ${r.library.count} ${l} / ${r.baseline.count} ${b} messages per timed run; at the receiver ` +
      `alone ${show(r.library.receiverRate)} / ${show(r.baseline.receiverRate)} ${unit}`,
    `${metric}: CPU per message, sender + receiver: ${l} ${r.library.senderCpu.toFixed(1)} + ` +
      `${r.library.receiverCpu.toFixed(1)} us, ${b} ${r.baseline.senderCpu.toFixed(1)} + ` +
      `${r.baseline.receiverCpu.toFixed(1)} us`
  ]
  const json = {
    unit,
    [l]: rounded(r.library.rate * scale, 1),
    [b]: rounded(r.baseline.rate * scale, 1),
    ratio: rounded(ratio, 3),
    ...(target === undefined ? {} : { target, pass: ratio >= target }),
    receiverOnly: {
      [l]: rounded(r.library.receiverRate * scale, 1),
      [b]: rounded(r.baseline.receiverRate * scale, 1)
    },
    cpuMicrosPerMessage: {
      [l]: { sender: rounded(r.library.senderCpu, 2), receiver: rounded(r.library.receiverCpu, 2) },
      [b]: { sender: rounded(r.baseline.senderCpu, 2), receiver: rounded(r.baseline.receiverCpu, 2) }
    },
    messagesPerRun: { [l]: r.library.count, [b]: r.baseline.count }
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
  // the plain-text twin: dials the receiver's `session: "plain"` node (both sides must choose plain)
  const plainContext = yield* Layer.build(
    networkLayerWith({ host: "127.0.0.1", port: 0, listen: false, session: "plain" })
  )
  const plainNode = Context.get(plainContext, PeerNetwork)
  // first contact every time: a Noise node that never resumes (XX on every dial), for the handshake rows
  const firstContactContext = yield* Layer.build(
    networkLayerWith(
      { host: "127.0.0.1", port: 0, listen: false },
      { secure: noiseSessionLayer({ resumption: false }) }
    )
  )
  const firstContactNode = Context.get(firstContactContext, PeerNetwork)
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
      session: defaults.session,
      maxFramesPerSecond: defaults.maxFramesPerSecond,
      outboxCapacity: defaults.outboxCapacity,
      inboxCapacity: defaults.inboxCapacity
    }
  }
  const origin = node.id
  const smallPacket = () => PureMessage.make({ message: SMALL_TEXT, origin, sentAt: DateTime.unsafeNow() })
  const plainSmallPacket = () =>
    PureMessage.make({ message: SMALL_TEXT, origin: plainNode.id, sentAt: DateTime.unsafeNow() })
  const bulkData = new Uint8Array(BULK_BYTES).map((_, i) => i & 255)
  const bulkPacket = () =>
    DataTransmission.make({ format: "MiscData", data: bulkData, origin, sentAt: DateTime.unsafeNow() })
  const plainBulkPacket = () =>
    DataTransmission.make({ format: "MiscData", data: bulkData, origin: plainNode.id, sentAt: DateTime.unsafeNow() })
  /** The library's rate in the library-vs-node:net comparisons, for the plain-vs-baseline figures of the JSON. */
  const baselineRates: { small?: number; bulk?: number } = {}

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
        if (run.metric === "small") baselineRates.small = r.baseline.rate
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
      const r = yield* compare(
        receiver,
        options,
        200,
        100_000,
        baselineSender((count) => sendBulk(socket, count, bulkData)),
        librarySender(channel, bulkPacket, "single")
      )
      const report = throughputReport(r, "64 KiB DataTransmission", "MB/s", BULK_BYTES / 1e6, TARGET.bulk)
      rows.push(report.row)
      notes.push(...report.notes)
      json["bulk"] = report.json
      baselineRates.bulk = r.baseline.rate
    }
    yield* channel.close("benchmark throughput done")
    yield* channel.awaitClosed
  }

  const secure: Record<string, unknown> = {}
  if (only.includes("secure")) {
    // issue 7: the same senders on a Noise channel ("library" side of compare) and on a plain-text channel
    // ("baseline" side), timed runs alternating in this process
    const noiseChannel = yield* node.dial("127.0.0.1", receiver.ready.libraryPort)
    const plainChannel = yield* plainNode.dial("127.0.0.1", receiver.ready.plainPort)
    yield* noiseChannel.awaitTrusted
    yield* plainChannel.awaitTrusted
    const names = { library: "noise", baseline: "plain" }
    // plain library / node:net, from two separate comparisons of this run (not interleaved with each other)
    const plainVsBaseline = (plain: number, baseline: number | undefined) =>
      baseline === undefined ? {} : { plainVsBaseline: rounded(plain / baseline, 3) }
    const runs = [
      {
        key: "small",
        metric: "Noise vs plain: 100-byte PureMessage, sendAll of 256",
        unit: "msg/s",
        scale: 1,
        bounds: [20_000, 5_000_000],
        plain: librarySender(plainChannel, plainSmallPacket, "batched"),
        noise: librarySender(noiseChannel, smallPacket, "batched"),
        baselineRate: baselineRates.small
      },
      {
        key: "bulk",
        metric: "Noise vs plain: 64 KiB DataTransmission",
        unit: "MB/s",
        scale: BULK_BYTES / 1e6,
        bounds: [200, 100_000],
        plain: librarySender(plainChannel, plainBulkPacket, "single"),
        noise: librarySender(noiseChannel, bulkPacket, "single"),
        baselineRate: baselineRates.bulk
      }
    ] as const
    for (const run of runs) {
      const r = yield* compare(receiver, options, run.bounds[0], run.bounds[1], run.plain, run.noise)
      const report = throughputReport(r, run.metric, run.unit, run.scale, SECURE_TARGET[run.key], names)
      rows.push(report.row)
      notes.push(...report.notes)
      secure[run.key] = { ...report.json, ...plainVsBaseline(r.baseline.rate, run.baselineRate) }
    }
    yield* noiseChannel.close("benchmark secure throughput done")
    yield* plainChannel.close("benchmark secure throughput done")
    yield* noiseChannel.awaitClosed
    yield* plainChannel.awaitClosed
  }

  if (only.includes("handshake") || only.includes("secure")) {
    // one interleaved run serves both: node:net, the default (Noise) node and the plain node take turns
    const h = yield* handshakes(
      receiver,
      {
        noise: { node, port: receiver.ready.libraryPort },
        plain: { node: plainNode, port: receiver.ready.plainPort },
        firstContact: { node: firstContactNode, port: receiver.ready.libraryPort }
      },
      HANDSHAKES,
      HANDSHAKE_WARMUP
    )
    const { noise, plain, firstContact } = h.library
    const phases = (p: Phases) => ({
      dialed: rounded(p.dialed, 3),
      trusted: rounded(p.trusted, 3),
      written: rounded(p.written, 3),
      echoed: rounded(p.echoed, 3)
    })
    const describe = (p: Phases) =>
      `dial returned ${p.dialed.toFixed(2)} ms, trusted ${p.trusted.toFixed(2)} ms, first PureMessage written ` +
      `${p.written.toFixed(2)} ms, echoed back ${p.echoed.toFixed(2)} ms`
    if (only.includes("handshake")) {
      rows.push({
        metric: `handshake latency, median of ${HANDSHAKES} (ms)`,
        library: noise.echoed.toFixed(2),
        baseline: h.baseline.toFixed(2),
        ratio: (noise.echoed / h.baseline).toFixed(2),
        target: "-",
        pass: "-"
      })
      notes.push(
        `handshake: library (default session, Noise) medians from dial start: ${describe(noise)}; baseline: TCP ` +
          `connect and one small message echoed; plain-text library: echoed back ${plain.echoed.toFixed(2)} ms`
      )
      json["handshake"] = {
        unit: "ms",
        library: rounded(noise.echoed, 3),
        baseline: rounded(h.baseline, 3),
        ratio: rounded(noise.echoed / h.baseline, 2),
        samples: HANDSHAKES,
        session: "noise",
        libraryPhases: phases(noise),
        plain: { echoed: rounded(plain.echoed, 3), plainVsBaseline: rounded(plain.echoed / h.baseline, 2) }
      }
    }
    if (only.includes("secure")) {
      const pass = noise.written < SECURE_TARGET.handshakeMillis
      rows.push(
        {
          metric: `Noise vs plain: handshake, dial to first byte written, median of ${HANDSHAKES} (ms)`,
          library: noise.written.toFixed(2),
          baseline: plain.written.toFixed(2),
          ratio: (noise.written / plain.written).toFixed(2),
          target: `< ${SECURE_TARGET.handshakeMillis} ms`,
          pass: pass ? "PASS" : "FAIL"
        },
        {
          metric: `Noise, first contact (XX, no resumption) vs plain: dial to first byte written (ms)`,
          library: firstContact.written.toFixed(2),
          baseline: plain.written.toFixed(2),
          ratio: (firstContact.written / plain.written).toFixed(2),
          target: "-",
          pass: "-"
        },
        {
          metric: `Noise vs plain: handshake, dial to first byte echoed back, median of ${HANDSHAKES} (ms)`,
          library: noise.echoed.toFixed(2),
          baseline: plain.echoed.toFixed(2),
          ratio: (noise.echoed / plain.echoed).toFixed(2),
          target: "-",
          pass: "-"
        }
      )
      notes.push(
        `Noise vs plain handshake: medians from dial start; Noise: ${describe(noise)}; plain: ${describe(plain)}; ` +
          `Noise first contact: ${describe(firstContact)}`,
        `Noise vs plain handshake: the default node dials the same receiver node every time, so after its first ` +
          `dial it resumes: Noise IK with the receiver's static key learnt before, one round trip, its Hello inside ` +
          `message 1 (docs/protocol.md §17); "first contact" is a Noise node with resumption off, a full XX opening ` +
          `(two round trips) every time, what a dial to a node never met before costs`,
        `Noise vs plain handshake: the target is judged on "first byte written": dial start until the channel is ` +
          `trusted and the first application message (a PureMessage) has been encrypted and handed to the socket ` +
          `(sendAndAwait), which is what a dialling application waits for before it can go on; "echoed back" adds ` +
          `the receiver's answer, one more loopback round trip`,
        `Noise vs plain handshake: ${HANDSHAKES} connections per side after ${HANDSHAKE_WARMUP} unrecorded rounds, ` +
          `node:net, Noise and plain in turn (order rotated every round), each closed before the next; all Noise ` +
          `handshakes are between the same two nodes, so the identity-binding check (Ed25519) hits the session's ` +
          `cache after the first; the X25519 work and the handshake messages are fresh every time`
      )
      secure["handshake"] = {
        unit: "ms",
        judgedOn: "written",
        noise: phases(noise),
        plain: phases(plain),
        firstContact: phases(firstContact),
        baselineEchoed: rounded(h.baseline, 3),
        ratio: { written: rounded(noise.written / plain.written, 2), echoed: rounded(noise.echoed / plain.echoed, 2) },
        target: SECURE_TARGET.handshakeMillis,
        pass,
        samples: HANDSHAKES
      }
    }
  }
  if (only.includes("secure")) json["secure"] = secure

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
    `settings: library defaults on both nodes (session ${defaults.session}, maxFramesPerSecond ` +
      `${defaults.maxFramesPerSecond}, outboxCapacity ${defaults.outboxCapacity}, inboxCapacity ` +
      `${defaults.inboxCapacity}); no limit was changed; the library-vs-node:net rows are measured on the default ` +
      `session, so they include Noise encryption`,
    `ratio is library / baseline (for the handshake, a latency, lower is better); ${options.rounds} timed runs of ` +
      `about ${options.seconds} s per side and metric, medians`
  )
  if (only.includes("secure")) {
    notes.push(
      `"Noise vs plain" rows: the library column is the default (Noise) channel, the baseline column a channel with ` +
        `session "plain" on both nodes (its own node in each process), otherwise the same settings and senders`
    )
  }
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
