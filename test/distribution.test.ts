import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Exit, Layer, Scope, Stream } from "effect"
import { unwrapText } from "../src/layers/Distribution.js"
import { TrustHandshake, Verdict } from "../src/layers/TrustHandshake.js"
import type { NodeId } from "../src/schema/ids.js"
import { message, startServices } from "./support/nodes.js"

/** A handshake that trusts only the listed peers (and runs no exchange, so any peer can use it). */
const trustOnly = (allowed: Set<string>) =>
  Layer.succeed(
    TrustHandshake,
    TrustHandshake.of({
      run: (ctx) => Effect.succeed(allowed.has(ctx.remoteHello.nodeId) ? Verdict.Trusted() : Verdict.Untrusted())
    })
  )
const AlwaysTrust = Layer.succeed(TrustHandshake, TrustHandshake.of({ run: () => Effect.succeed(Verdict.Trusted()) }))

describe("DistributionHandler", () => {
  it.scoped("a broadcast reaches every trusted peer exactly once and no untrusted peer", () =>
    Effect.gen(function* () {
      const allowed = new Set<string>()
      const hub = yield* startServices({}, { handshake: trustOnly(allowed) })
      const peers = yield* Effect.all([1, 2, 3, 4].map(() => startServices({}, { handshake: AlwaysTrust })))
      const trusted = peers.slice(1)
      for (const p of trusted) allowed.add(p.network.id)
      const streams = yield* Effect.forEach(peers, (p) => p.network.registry.subscribePackets)
      for (const p of peers) yield* p.network.dial("127.0.0.1", hub.network.port)
      yield* Effect.forEach(peers, (p) => hub.network.awaitChannel(p.network.id))
      const result = yield* hub.distribution.broadcast("hello, peers")
      assert.strictEqual(result.accepted, 3)
      assert.deepStrictEqual(result.refused, [])
      // an end marker after the broadcast, to every peer (PureMessage passes the default gate even untrusted)
      yield* Effect.forEach(peers, (p) => hub.network.send(p.network.id, message(hub.network.id, "end")))
      const received = yield* Effect.forEach(streams, (s) =>
        s.pipe(
          Stream.takeUntil((r) => r.packet._tag === "PureMessage"),
          Stream.filter((r) => r.packet._tag === "DataTransmission"),
          Stream.map((r) => (r.packet._tag === "DataTransmission" ? unwrapText(r.packet) : "")),
          Stream.runCollect,
          Effect.map((c) => [...c])
        )
      )
      assert.deepStrictEqual(received[0], [], "the untrusted peer gets nothing")
      for (const r of received.slice(1)) assert.deepStrictEqual(r, ["hello, peers"])
    })
  )

  it.scoped("sendTo wraps bytes and text as DataTransmission with the requested format", () =>
    Effect.gen(function* () {
      const a = yield* startServices({}, { handshake: AlwaysTrust })
      const b = yield* startServices({}, { handshake: AlwaysTrust })
      const files = yield* b.distribution.subscribe("DataTransmission")
      yield* a.network.dial("127.0.0.1", b.network.port)
      yield* a.distribution.sendTo(b.network.id, new Uint8Array([1, 2, 3]), { format: "File" })
      yield* a.distribution.sendTo(b.network.id, "text")
      const got = yield* files.pipe(Stream.take(2), Stream.runCollect)
      const [bytes, text] = [...got].map((r) => r.packet)
      assert.strictEqual(bytes!.format, "File")
      assert.deepStrictEqual([...bytes!.data], [1, 2, 3])
      assert.strictEqual(text!.format, "MiscData")
      assert.strictEqual(unwrapText(text!), "text")
      assert.strictEqual(bytes!.origin, a.network.id)
      const missing = yield* Effect.flip(a.distribution.sendTo("0".repeat(40) as NodeId, "x"))
      assert.strictEqual(missing._tag, "PeerNotFound")
    })
  )

  it.scopedLive("a full outbox follows the overflow policy: fail, or drop the oldest", () =>
    Effect.gen(function* () {
      const a = yield* startServices(
        { outboxCapacity: 2, reconnectDelayMillis: 60_000, reconnectRetries: 1 },
        { handshake: AlwaysTrust }
      )
      const scope = yield* Scope.make()
      const b = yield* startServices({}, { handshake: AlwaysTrust }).pipe(Scope.extend(scope))
      const channel = yield* a.network.dial("127.0.0.1", b.network.port)
      yield* Scope.close(scope, Exit.void)
      // the peer is gone and the next re-dial is a minute away: nothing drains the outbox meanwhile
      yield* channel.stateChanges.pipe(
        Stream.filter((s) => s === "reconnecting"),
        Stream.runHead
      )
      const first = yield* Effect.fork(channel.sendAndAwait(message(a.network.id, "first")))
      // let the forked send queue its packet (bounded: it needs one scheduler turn)
      for (let i = 0; i < 100 && (yield* channel.stats).outboxSize < 1; i++) yield* Effect.yieldNow()
      yield* channel.send(message(a.network.id, "second"))
      const full = yield* Effect.either(channel.offer(message(a.network.id, "third"), "fail"))
      assert.isTrue(Either.isLeft(full) && full.left._tag === "OutboxFull")
      yield* channel.offer(message(a.network.id, "fourth"), "dropOldest")
      const dropped = yield* Effect.flip(first.await.pipe(Effect.flatten))
      assert.include(dropped.message, "dropOldest")
      assert.strictEqual((yield* channel.stats).outboxSize, 2)
      const broadcast = yield* a.distribution.broadcast("x", { whenFull: "fail" })
      assert.strictEqual(broadcast.accepted, 0, "a reconnecting channel is not trusted for broadcasts")
    })
  )
})
