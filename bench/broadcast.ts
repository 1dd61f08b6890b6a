/**
 * The fan-out benchmark: one node broadcasting 100-byte PureMessages (DistributionHandler.broadcast, one call per
 * message) to FANOUT trusted peers, each a node in its own process (bench/peer.ts), against FANOUT times the rate
 * of one channel measured in the same run with one `send` per message. A plain node:net fan-out (the baseline's
 * framing, written to every socket) is measured the same way, to show how much of the loss is this machine's: all
 * the receivers share its CPUs.
 */
import { DateTime, Effect } from "effect"
import type { PeerChannel } from "../src/actors/PeerChannel.js"
import type { DistributionHandler } from "../src/layers/Distribution.js"
import type { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { PureMessage } from "../src/schema/packets.js"
import { connect, sendSmall } from "./baseline.js"
import type { Options } from "./measure.js"
import { BenchFailed, spawnReceiver } from "./receiver.js"
import type { Receiver } from "./receiver.js"
import { median, SMALL_TEXT } from "./shared.js"

export const FANOUT = 20

const now = Effect.sync(() => performance.now())

/** Arms `receivers` for `count` messages each, runs `send`, and returns the deliveries per second. */
const timed = (receivers: ReadonlyArray<Receiver>, count: number, send: Effect.Effect<void, BenchFailed>) =>
  Effect.gen(function* () {
    yield* Effect.forEach(receivers, (r) => r.tell({ _tag: "Arm", count }), { discard: true })
    yield* Effect.forEach(receivers, (r) => r.expect("Armed"), { discard: true })
    const start = yield* now
    yield* send
    const done = yield* Effect.forEach(receivers, (r) => r.expect("Done", 120_000))
    const end = Math.max(...done.map((d) => d.at))
    return (count * receivers.length * 1000) / (end - start)
  })

/** Messages per receiver for a run of about `seconds`, from a warm-up run. */
const sized = (rate: number, receivers: number, seconds: number) =>
  Math.max(1_000, Math.min(2_000_000, Math.round((rate * seconds) / receivers)))

export interface FanoutResult {
  readonly library: { readonly single: number; readonly fanout: number }
  readonly baseline: { readonly single: number; readonly fanout: number }
}

/**
 * Spawns FANOUT receivers, connects `node` to each (trusted), and measures single-channel and fan-out rates for
 * the library and the baseline, `options.rounds` timed runs each (medians), alternating.
 */
export const fanout = (
  node: PeerNetwork["Type"],
  distribution: DistributionHandler["Type"],
  options: Options
): Effect.Effect<FanoutResult, BenchFailed, import("effect").Scope.Scope> =>
  Effect.gen(function* () {
    const receivers = yield* Effect.all(
      Array.from({ length: FANOUT }, () => spawnReceiver),
      { concurrency: 4 }
    )
    const failed = (what: string) => (e: { readonly message: string }) =>
      new BenchFailed({ detail: `${what}: ${e.message}` })
    const channels: Array<PeerChannel> = yield* Effect.forEach(receivers, (r) =>
      node.dial("127.0.0.1", r.ready.libraryPort).pipe(
        Effect.tap((c) => c.awaitTrusted),
        Effect.mapError(failed("dial"))
      )
    )
    const sockets = yield* Effect.forEach(receivers, (r) =>
      connect(r.ready.smallPort).pipe(Effect.mapError(failed("baseline connect")))
    )
    const make = () => PureMessage.make({ message: SMALL_TEXT, origin: node.id, sentAt: DateTime.unsafeNow() })
    const librarySingle = (count: number) =>
      Effect.gen(function* () {
        for (let i = 0; i < count; i++) yield* channels[0]!.send(make())
      }).pipe(Effect.mapError(failed("send")))
    const libraryFanout = (count: number) =>
      Effect.gen(function* () {
        for (let i = 0; i < count; i++) {
          const r = yield* distribution.broadcast(make())
          if (r.accepted !== FANOUT) return yield* new BenchFailed({ detail: `broadcast reached ${r.accepted}` })
        }
      })
    const baselineSingle = (count: number) => sendSmall(sockets[0]!, count).pipe(Effect.mapError(failed("baseline")))
    const baselineFanout = (count: number) =>
      Effect.forEach(sockets, (s) => sendSmall(s, count), { concurrency: "unbounded", discard: true }).pipe(
        Effect.mapError(failed("baseline"))
      )
    const cases = [
      { key: "librarySingle", receivers: receivers.slice(0, 1), send: librarySingle },
      { key: "libraryFanout", receivers, send: libraryFanout },
      { key: "baselineSingle", receivers: receivers.slice(0, 1), send: baselineSingle },
      { key: "baselineFanout", receivers, send: baselineFanout }
    ] as const
    const counts = new Map<string, number>()
    for (const c of cases) {
      const warm = yield* timed(c.receivers, 2_000, c.send(2_000))
      counts.set(c.key, sized(warm, c.receivers.length, options.seconds))
    }
    const rates = new Map<string, Array<number>>(cases.map((c) => [c.key, []]))
    for (let round = 0; round < options.rounds; round++) {
      const order = round % 2 === 0 ? cases : [...cases].reverse()
      for (const c of order) {
        const count = counts.get(c.key)!
        rates.get(c.key)!.push(yield* timed(c.receivers, count, c.send(count)))
      }
    }
    const m = (key: string) => median(rates.get(key)!)
    yield* Effect.forEach(channels, (c) => c.close("benchmark fan-out done"), { discard: true })
    return {
      library: { single: m("librarySingle"), fanout: m("libraryFanout") },
      baseline: { single: m("baselineSingle"), fanout: m("baselineFanout") }
    }
  })
