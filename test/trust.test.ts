import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Stream } from "effect"
import { IncomingTrust } from "../src/layers/IncomingTrust.js"
import { TrustHandshake, Verdict } from "../src/layers/TrustHandshake.js"
import type { PacketKind } from "../src/schema/packets.js"
import { message, packetsFrom, startNode, waitFor } from "./support/nodes.js"

/** A handshake that decides nothing: channels stay untrusted. */
const NeverTrust = Layer.succeed(TrustHandshake, TrustHandshake.of({ run: () => Effect.succeed(Verdict.Untrusted()) }))
const AlwaysTrust = Layer.succeed(TrustHandshake, TrustHandshake.of({ run: () => Effect.succeed(Verdict.Trusted()) }))
/** The sender may send anything on an untrusted channel, so only the receiver's gate is under test. */
const OpenGate = IncomingTrust.layerPolicy({ allowEnhancedPacketExchange: true, allowDefaultCommunication: true })

/** Sends every packet kind over an untrusted channel and returns which kinds the receiver delivered. */
const delivered = (receiverPolicy: Parameters<typeof IncomingTrust.layerPolicy>[0]) =>
  Effect.gen(function* () {
    const receiver = yield* startNode({}, { handshake: NeverTrust, trust: IncomingTrust.layerPolicy(receiverPolicy) })
    const sender = yield* startNode({}, { handshake: NeverTrust, trust: OpenGate })
    const packets = yield* receiver.registry.subscribePackets
    const channel = yield* sender.dial("127.0.0.1", receiver.port)
    const inbound = yield* receiver.awaitChannel(sender.id)
    assert.strictEqual(yield* inbound.state, "untrusted")
    assert.isFalse(channel.isTrusted())
    for (const p of packetsFrom(sender.id)) yield* channel.send(p)
    // the Disconnect (last) closes the channel on both sides; everything before it has been processed by then
    yield* inbound.awaitClosed
    const stats = yield* inbound.stats
    const kinds = yield* packets.pipe(
      Stream.takeUntil((r) => r.packet._tag === "Disconnect"),
      Stream.interruptWhen(inbound.awaitClosed),
      Stream.runCollect,
      Effect.map((c) => [...c].map((r) => r.packet._tag))
    )
    return { kinds, dropped: stats.droppedGated }
  })

describe("incoming-peer trust gate (handshake and policy replaced with Layers)", () => {
  it.scoped("default policy: untrusted channels pass PureMessage and Disconnect, drop the enhanced kinds", () =>
    Effect.gen(function* () {
      const { dropped, kinds } = yield* delivered({})
      assert.deepStrictEqual(kinds, ["PureMessage", "Disconnect"] satisfies Array<PacketKind>)
      assert.strictEqual(dropped, 3)
    })
  )

  it.scoped("AllowEnhancedPacketExchange passes every kind from untrusted channels", () =>
    Effect.gen(function* () {
      const { dropped, kinds } = yield* delivered({ allowEnhancedPacketExchange: true })
      assert.deepStrictEqual(kinds, ["Identity", "PeerGroup", "DataTransmission", "PureMessage", "Disconnect"])
      assert.strictEqual(dropped, 0)
    })
  )

  it.scoped("without AllowDefaultCommunication an untrusted channel delivers nothing", () =>
    Effect.gen(function* () {
      const receiver = yield* startNode(
        {},
        {
          handshake: NeverTrust,
          trust: IncomingTrust.layerPolicy({ allowDefaultCommunication: false })
        }
      )
      const sender = yield* startNode({}, { handshake: NeverTrust, trust: OpenGate })
      const channel = yield* sender.dial("127.0.0.1", receiver.port)
      for (const p of packetsFrom(sender.id).slice(0, 4)) yield* channel.sendAndAwait(p)
      // a dropped Disconnect does not close the channel; the sender closes it, and the receiver has counted all five
      yield* channel.sendAndAwait(packetsFrom(sender.id)[4]!)
      const inbound = yield* receiver.awaitChannel(sender.id)
      const reason = yield* inbound.awaitClosed
      const stats = yield* inbound.stats
      assert.strictEqual(stats.droppedGated, 5)
      assert.strictEqual(reason._tag, "ConnectionLost")
    })
  )

  it.scoped("a trusted channel delivers every kind whatever the policy", () =>
    Effect.gen(function* () {
      const strict = IncomingTrust.layerPolicy({ allowDefaultCommunication: false })
      const a = yield* startNode({}, { handshake: AlwaysTrust, trust: strict })
      const b = yield* startNode({}, { handshake: AlwaysTrust, trust: strict })
      const packets = yield* b.registry.subscribePackets
      const channel = yield* a.dial("127.0.0.1", b.port)
      yield* channel.awaitTrusted
      for (const p of packetsFrom(a.id)) yield* channel.send(p)
      const kinds = yield* packets.pipe(Stream.take(5), Stream.runCollect)
      assert.deepStrictEqual(
        [...kinds].map((r) => r.packet._tag),
        ["Identity", "PeerGroup", "DataTransmission", "PureMessage", "Disconnect"]
      )
    })
  )

  it.scoped("sending a gated kind to an untrusted channel fails with NotTrusted", () =>
    Effect.gen(function* () {
      const a = yield* startNode({}, { handshake: NeverTrust })
      const b = yield* startNode({}, { handshake: NeverTrust })
      const channel = yield* a.dial("127.0.0.1", b.port)
      const [identity, group, data, pure] = packetsFrom(a.id)
      for (const p of [identity!, group!, data!]) {
        const result = yield* Effect.either(channel.send(p))
        assert.isTrue(Either.isLeft(result) && result.left._tag === "NotTrusted", p._tag)
      }
      assert.isTrue(Either.isRight(yield* Effect.either(channel.send(pure!))))
    })
  )

  it.scoped("a handshake that rejects closes the channel on both sides with the reason", () =>
    Effect.gen(function* () {
      const Refuse = Layer.succeed(
        TrustHandshake,
        TrustHandshake.of({ run: () => Effect.succeed(Verdict.Rejected({ reason: "not on the guest list" })) })
      )
      const a = yield* startNode({}, { handshake: Refuse })
      const b = yield* startNode()
      const events = yield* b.registry.subscribeEvents
      const reason = yield* Effect.flip(a.dial("127.0.0.1", b.port))
      assert.strictEqual(reason._tag, "HandshakeFailed")
      assert.include(reason.message, "not on the guest list")
      assert.strictEqual((yield* a.channels).length, 0)
      // b was told why
      const closed = yield* waitFor(events, (e) =>
        e._tag === "ChannelStateChanged" && e.state === "closed" ? Option.fromNullable(e.reason) : Option.none()
      )
      assert.strictEqual(closed._tag, "RemoteRejected")
      assert.include(closed.message, "not on the guest list")
    })
  )

  it.scoped("the default handshake refuses a peer of another network and one without the network key", () =>
    Effect.gen(function* () {
      const home = yield* startNode({ network: "home", networkKey: "s3cret" })
      const other = yield* startNode({ network: "elsewhere", networkKey: "s3cret" })
      const keyless = yield* startNode({ network: "home" })
      const friend = yield* startNode({ network: "home", networkKey: "s3cret" })
      const r1 = yield* Effect.flip(other.dial("127.0.0.1", home.port))
      assert.include(r1.message, "network mismatch")
      const r2 = yield* Effect.flip(keyless.dial("127.0.0.1", home.port))
      assert.include(r2.message, "network key")
      const ok = yield* friend.dial("127.0.0.1", home.port)
      yield* ok.awaitTrusted
      yield* ok.send(message(friend.id, "hi"))
      assert.strictEqual(ok.remoteId, home.id)
    })
  )
  it.scoped("elevate and demote change a channel's trust at run time, on the gate of both directions", () =>
    Effect.gen(function* () {
      const a = yield* startNode({}, { handshake: NeverTrust })
      const b = yield* startNode({}, { handshake: NeverTrust })
      const packets = yield* b.registry.subscribePackets
      const channel = yield* a.dial("127.0.0.1", b.port)
      const inbound = yield* b.awaitChannel(a.id)
      const data = packetsFrom(a.id)[2]!
      assert.isTrue(Either.isLeft(yield* Effect.either(channel.send(data))), "a may not send data yet")
      yield* a.registry.elevate(b.id)
      yield* b.registry.elevate(a.id)
      assert.isTrue(channel.isTrusted() && inbound.isTrusted())
      yield* channel.send(data)
      const got = yield* packets.pipe(Stream.take(1), Stream.runCollect)
      assert.strictEqual([...got][0]!.packet._tag, "DataTransmission")
      yield* b.registry.demote(a.id)
      assert.isFalse(inbound.isTrusted())
      const later = yield* b.registry.subscribePackets
      yield* channel.send(data)
      yield* channel.send(message(a.id, "after demotion"))
      // the PureMessage passes (default communication); the data sent before it was dropped and counted
      const next = yield* later.pipe(Stream.take(1), Stream.runCollect)
      assert.strictEqual([...next][0]!.packet._tag, "PureMessage")
      const stats = yield* inbound.stats
      assert.strictEqual(stats.droppedGated, 1)
    })
  )
})
