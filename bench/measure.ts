/**
 * How the benchmark measures: timed runs of a fixed message count (sender's first write to the receiver's report of
 * its last message), sized from warm-up runs, alternated between the library and the baseline; and interleaved
 * handshakes of both. Every wait is bounded.
 */
import { DateTime, Effect, Queue, Stream } from "effect"
import type { PeerChannel } from "../src/actors/PeerChannel.js"
import type { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { PureMessage } from "../src/schema/packets.js"
import type { Packet } from "../src/schema/packets.js"
import { connectAndEcho } from "./baseline.js"
import { BenchFailed } from "./receiver.js"
import type { Receiver } from "./receiver.js"
import { median, PING, PONG } from "./shared.js"

export interface Options {
  /** Target length of one timed run. */
  readonly seconds: number
  /** Timed runs per side. */
  readonly rounds: number
}

/** One side of a comparison: sends `count` messages; `guard` fails a run early when that side cannot finish. */
export interface Sender {
  readonly send: (count: number) => Effect.Effect<void, BenchFailed>
  readonly guard: <A>(self: Effect.Effect<A, BenchFailed>) => Effect.Effect<A, BenchFailed>
}

interface Run {
  readonly count: number
  readonly millis: number
  readonly receiverMillis: number
  /** CPU time (user + system) of each process over the run. */
  readonly senderCpuMicros: number
  readonly receiverCpuMicros: number
}

export interface Side {
  /** Messages per second, median of the timed runs (sender's first write to the receiver's last message). */
  readonly rate: number
  /** The same runs timed at the receiver alone, from its first message to its last. */
  readonly receiverRate: number
  /** CPU microseconds per message in each process (medians). */
  readonly senderCpu: number
  readonly receiverCpu: number
  /** Messages per timed run. */
  readonly count: number
}

const now = Effect.sync(() => performance.now())

const timedRun = (receiver: Receiver, count: number, sender: Sender, options: Options) =>
  Effect.gen(function* () {
    yield* receiver.tell({ _tag: "Arm", count })
    yield* receiver.expect("Armed")
    const cpu = process.cpuUsage()
    const start = yield* now
    yield* sender.send(count)
    const done = yield* receiver.expect("Done", Math.max(60_000, options.seconds * 10_000))
    const used = process.cpuUsage(cpu)
    return {
      count,
      millis: done.at - start,
      receiverMillis: done.firstToLastMillis,
      senderCpuMicros: used.user + used.system,
      receiverCpuMicros: done.cpuMicros
    } satisfies Run
  }).pipe(sender.guard)

const side = (runs: ReadonlyArray<Run>): Side => ({
  rate: median(runs.map((r) => (r.count * 1000) / r.millis)),
  receiverRate: median(runs.map((r) => (r.count * 1000) / r.receiverMillis)),
  senderCpu: median(runs.map((r) => r.senderCpuMicros / r.count)),
  receiverCpu: median(runs.map((r) => r.receiverCpuMicros / r.count)),
  count: runs[0]!.count
})

/**
 * Two warm-up runs per side (`warm` messages, then a count sized from it) size the timed runs to about
 * `options.seconds` each, at most `max` messages; then `options.rounds` timed runs per side, alternating which side
 * goes first.
 */
export const compare = (
  receiver: Receiver,
  options: Options,
  warm: number,
  max: number,
  baseline: Sender,
  library: Sender
) =>
  Effect.gen(function* () {
    const size = (r: Run, seconds: number) =>
      Math.max(warm, Math.min(max, Math.round((r.count / r.millis) * 1000 * seconds)))
    const calibrate = (sender: Sender) =>
      Effect.gen(function* () {
        const first = yield* timedRun(receiver, warm, sender, options)
        const second = yield* timedRun(receiver, size(first, options.seconds / 4), sender, options)
        return size(second, options.seconds)
      })
    const baselineCount = yield* calibrate(baseline)
    const libraryCount = yield* calibrate(library)
    const b: Array<Run> = []
    const l: Array<Run> = []
    for (let round = 0; round < options.rounds; round++) {
      const runBaseline = Effect.map(timedRun(receiver, baselineCount, baseline, options), (r) => b.push(r))
      const runLibrary = Effect.map(timedRun(receiver, libraryCount, library, options), (r) => l.push(r))
      yield* round % 2 === 0 ? Effect.zip(runBaseline, runLibrary) : Effect.zip(runLibrary, runBaseline)
    }
    return { baseline: side(b), library: side(l) }
  })

/** Fails as soon as the channel closes (a flood limit, a decode error) instead of waiting for a timeout. */
const untilClosed =
  (channel: PeerChannel) =>
  <A>(self: Effect.Effect<A, BenchFailed>) =>
    Effect.raceFirst(
      self,
      Effect.flatMap(
        channel.awaitClosed,
        (reason) => new BenchFailed({ detail: `library channel closed: ${reason._tag}: ${reason.message}` })
      )
    )

/** How the library sender hands packets to the channel. */
export type SendMode = "batched" | "single" | "prebuilt"

/** Packets per `sendAll` call in "batched" mode: the baseline also writes 256 small messages per socket write. */
export const SEND_BATCH = 256

/**
 * The library side: `count` packets on the channel, each made by `make` (as an application builds them).
 * "batched" hands them over with `sendAll` in groups of SEND_BATCH, "single" with one `send` each, and "prebuilt"
 * sends one packet made once `count` times (which leaves packet construction out).
 */
export const librarySender = (channel: PeerChannel, make: () => Packet, mode: SendMode): Sender => ({
  send: (count) =>
    Effect.gen(function* () {
      if (mode === "prebuilt") {
        const packet = make()
        for (let i = 0; i < count; i++) yield* channel.send(packet)
      } else if (mode === "single") {
        for (let i = 0; i < count; i++) yield* channel.send(make())
      } else {
        for (let sent = 0; sent < count; sent += SEND_BATCH) {
          const n = Math.min(SEND_BATCH, count - sent)
          const batch: Array<Packet> = new Array(n)
          for (let i = 0; i < n; i++) batch[i] = make()
          yield* channel.sendAll(batch)
        }
      }
    }).pipe(Effect.mapError((e) => new BenchFailed({ detail: `library send failed: ${e._tag}: ${e.message}` }))),
  guard: untilClosed(channel)
})

/** A library endpoint for the handshake measurement: a node of this process and the receiver's port it dials. */
export interface DialTarget {
  readonly node: PeerNetwork["Type"]
  readonly port: number
}

/** Medians from dial start (ms). */
export interface Phases {
  /** `dial` returned. */
  readonly dialed: number
  /** The channel is trusted: the application may send. */
  readonly trusted: number
  /** The first PureMessage, sent once trusted, was handed to the socket (`sendAndAwait` returned). */
  readonly written: number
  /** That PureMessage came back from the receiver (one more round trip). */
  readonly echoed: number
}

export interface Handshakes<K extends string> {
  /** Baseline: TCP connect until one small message came back (ms). */
  readonly baseline: number
  readonly library: Record<K, Phases>
}

/**
 * `count` fresh connections per side (the node:net baseline and each of `targets`), interleaved with the order
 * rotated every round so machine noise hits all sides alike, after `warmup` unrecorded rounds; medians. Library: dial
 * until a PureMessage sent once trusted comes back from the receiver; each channel is closed (and awaited) before the
 * next connection.
 */
export const handshakes = <K extends string>(
  receiver: Receiver,
  targets: Record<K, DialTarget>,
  count: number,
  warmup: number
) =>
  Effect.gen(function* () {
    const keys = Object.keys(targets) as Array<K>
    const pongs = yield* Queue.unbounded<PeerChannel>()
    for (const node of new Set(keys.map((k) => targets[k].node))) {
      const packets = yield* node.registry.subscribePackets
      yield* packets.pipe(
        Stream.runForEach(({ channel, packet }) =>
          packet._tag === "PureMessage" && packet.message === PONG ? Queue.offer(pongs, channel) : Effect.void
        ),
        Effect.forkScoped
      )
    }
    /** A step's failure, named. */
    const failed = <A, E>(what: string, self: Effect.Effect<A, E>) =>
      Effect.mapError(self, (e) => new BenchFailed({ detail: `${what}: ${String(e)}` }))
    /** A named step with a time bound (one per round: the timer is not inside what is measured). */
    const bounded = <A, E>(what: string, self: Effect.Effect<A, E>) =>
      Effect.timeoutFail(failed(what, self), {
        duration: "10 seconds",
        onTimeout: () => new BenchFailed({ detail: `${what} timed out` })
      })
    const baseline: Array<number> = []
    const samples = new Map(
      keys.map((k) => [
        k,
        {
          dialed: [] as Array<number>,
          trusted: [] as Array<number>,
          written: [] as Array<number>,
          echoed: [] as Array<number>
        }
      ])
    )
    const baselineOnce = (record: boolean) =>
      Effect.gen(function* () {
        const b0 = yield* now
        yield* failed("baseline connect", connectAndEcho(receiver.ready.echoPort))
        const b1 = yield* now
        if (record) baseline.push(b1 - b0)
      }).pipe((round) => bounded("baseline round", round))
    const libraryOnce = (key: K, record: boolean) =>
      Effect.gen(function* () {
        const { node, port } = targets[key]
        const ping = PureMessage.make({ message: PING, origin: node.id, sentAt: DateTime.unsafeNow() })
        // the timed steps share one time bound (below), so no per-step timer is measured as part of the handshake
        const t0 = yield* now
        const channel = yield* failed(`${key} dial`, node.dial("127.0.0.1", port))
        const t1 = yield* now
        yield* failed(`${key} trust`, channel.awaitTrusted)
        const t2 = yield* now
        yield* failed(`${key} ping`, channel.sendAndAwait(ping))
        const t3 = yield* now
        const from = yield* Queue.take(pongs)
        const t4 = yield* now
        if (from !== channel) return yield* new BenchFailed({ detail: `${key}: the echo arrived on another channel` })
        yield* channel.close("benchmark handshake done")
        yield* bounded(`${key} close`, channel.awaitClosed)
        if (record) {
          const s = samples.get(key)!
          s.dialed.push(t1 - t0)
          s.trusted.push(t2 - t0)
          s.written.push(t3 - t0)
          s.echoed.push(t4 - t0)
        }
      }).pipe((round) => bounded(`${key} handshake round`, round))
    const sides: Array<(record: boolean) => Effect.Effect<void, BenchFailed>> = [
      baselineOnce,
      ...keys.map((k) => (record: boolean) => libraryOnce(k, record))
    ]
    for (let i = 0; i < warmup + count; i++) {
      for (let j = 0; j < sides.length; j++) {
        // let both processes finish the previous connection's teardown, so it is not measured as part of this one
        yield* Effect.sleep("5 millis")
        yield* sides[(i + j) % sides.length]!(i >= warmup)
      }
    }
    const library = {} as Record<K, Phases>
    for (const k of keys) {
      const s = samples.get(k)!
      library[k] = {
        dialed: median(s.dialed),
        trusted: median(s.trusted),
        written: median(s.written),
        echoed: median(s.echoed)
      }
    }
    return { baseline: median(baseline), library } satisfies Handshakes<K>
  }).pipe(Effect.scoped)
