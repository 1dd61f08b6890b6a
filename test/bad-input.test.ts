/**
 * Hostile and broken peers against a live node on 127.0.0.1. Each bad input closes the one connection it came on,
 * with a typed reason when a channel existed, and the node's other channel (a well-behaved peer dialled before)
 * keeps working. Oversize announcements and floods must not make the node allocate or buffer without bound.
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Option, Stream } from "effect"
import * as crypto from "node:crypto"
import type { PeerChannel } from "../src/actors/PeerChannel.js"
import type { CloseReason } from "../src/schema/errors.js"
import {
  FrameTooLarge,
  FrameTruncated,
  HandshakeTimeout,
  InvalidPacket,
  PeerFlooding,
  UnknownPacketKind
} from "../src/schema/errors.js"
import type { NodeId } from "../src/schema/ids.js"
import { HandshakeData, HandshakeProof } from "../src/schema/handshake.js"
import { DataTransmission, PureMessage } from "../src/schema/packets.js"
import { encodeFrame, preamble } from "../src/schema/wire.js"
import { transcript } from "../src/layers/TrustHandshake.js"
import { retainedBytes } from "./support/memory.js"
import { message, now, startNode, waitFor } from "./support/nodes.js"
import { consumeSlowly } from "./support/slow-consumer.js"
import type { RawPeer } from "./support/raw-peer.js"
import { connectRaw, lengthPrefix, rawFrame, rawFrameBytes, sayHello, trustedRawPeer } from "./support/raw-peer.js"

type Settings = Parameters<typeof startNode>[0]
type Overrides = Parameters<typeof startNode>[1]

/**
 * The node under test, with a well-behaved friend already connected and trusted, and subscriptions taken. Both use
 * plain-text sessions (an explicit setting), so the raw peer can write frames onto the wire as they are; the same
 * frames inside a Noise session reach the same framing after decryption (noise.test.ts covers the session itself).
 */
const nodeWithFriend = (settings: Settings = {}, overrides: Overrides = {}) =>
  Effect.gen(function* () {
    const node = yield* startNode({ session: "plain", ...settings }, overrides)
    const friend = yield* startNode({ session: "plain" })
    const events = yield* node.registry.subscribeEvents
    const packets = yield* node.registry.subscribePackets
    const friendPackets = yield* friend.registry.subscribePackets
    const toNode = yield* friend.dial("127.0.0.1", node.port).pipe(Effect.orDie)
    yield* toNode.awaitTrusted.pipe(Effect.orDie)
    yield* node.channel(friend.id).pipe(
      Effect.flatMap((c) => c.awaitTrusted),
      Effect.orDie
    )
    return { node, friend, events, packets, friendPackets, toNode }
  })
type Fixture = Effect.Effect.Success<ReturnType<typeof nodeWithFriend>>

/** The reason the node gives when it closes its channel to `id`. */
const closedReason = (fx: Fixture, id: NodeId) =>
  waitFor(fx.events, (e) =>
    e._tag === "ChannelStateChanged" && e.state === "closed" && e.channel.remoteId === id
      ? Option.some({ reason: e.reason, channel: e.channel })
      : Option.none()
  ).pipe(
    Effect.map(({ channel, reason }): { channel: PeerChannel; reason: CloseReason } => {
      assert.isDefined(reason, "a closed channel names its reason")
      return { channel, reason: reason! }
    })
  )

/** The friend's channel still carries packets both ways. */
const friendStillWorks = (fx: Fixture) =>
  Effect.gen(function* () {
    const toNode = message(fx.friend.id, "still here")
    yield* fx.toNode.send(toNode)
    const got = yield* fx.packets.pipe(
      Stream.filter((r) => r.channel.remoteId === fx.friend.id),
      Stream.runHead
    )
    assert.deepStrictEqual(Option.getOrThrow(got).packet, toNode)
    const toFriend = message(fx.node.id, "and so am I")
    yield* fx.node.send(fx.friend.id, toFriend)
    const back = yield* fx.friendPackets.pipe(
      Stream.filter((r) => r.channel.remoteId === fx.node.id),
      Stream.runHead
    )
    assert.deepStrictEqual(Option.getOrThrow(back).packet, toFriend)
    assert.isTrue((yield* fx.node.channel(fx.friend.id)).isTrusted())
  })

/** The bad peer left no channel behind: the friend's is the node's only one. */
const onlyFriendRemains = (fx: Fixture) =>
  Effect.map(fx.node.channels, (channels) =>
    assert.deepStrictEqual(
      channels.map((c) => c.remoteId),
      [fx.friend.id]
    )
  )

/** A bad input from a trusted raw peer closes its channel with this reason; the friend keeps working. */
const closesTrustedChannel = (fx: Fixture, misbehave: (peer: RawPeer) => Effect.Effect<void>) =>
  Effect.gen(function* () {
    const { peer } = yield* trustedRawPeer(fx.node)
    yield* misbehave(peer)
    const { reason } = yield* closedReason(fx, peer.keys.id)
    yield* peer.closed
    yield* friendStillWorks(fx)
    yield* onlyFriendRemains(fx)
    return reason
  })

const origin = "ab".repeat(20) as NodeId
const KiB = 1024
const MiB = 1024 * KiB

describe("bad input on a live connection", () => {
  it.scoped("random bytes instead of a preamble: Reject, then the connection is closed", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend()
      const peer = yield* connectRaw(fx.node.port)
      const junk = crypto.randomBytes(64)
      junk[0] = 0x00 // never "P"
      yield* peer.write(junk)
      assert.strictEqual(yield* peer.remotePreamble, 1)
      const reject = yield* peer.nextOf("Reject")
      assert.include(reject.reason, "P2PNET")
      yield* peer.closed
      yield* friendStillWorks(fx)
      yield* onlyFriendRemains(fx)
    })
  )

  it.scoped("a preamble with another protocol version: Reject naming the versions, then closed", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend()
      const peer = yield* connectRaw(fx.node.port)
      yield* peer.write(preamble(2))
      const reject = yield* peer.nextOf("Reject")
      assert.include(reject.reason, "unsupported protocol version 2")
      assert.include(reject.reason, "speaks 1")
      yield* peer.closed
      yield* friendStillWorks(fx)
      yield* onlyFriendRemains(fx)
    })
  )

  it.scoped("a frame over maxFrameBytes closes the channel with FrameTooLarge", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend({ maxFrameBytes: 64 * KiB })
      const reason = yield* closesTrustedChannel(fx, (peer) =>
        // the announcement and the start of the body; the node must not wait for the rest
        peer.write(lengthPrefix(64 * KiB + 1), Buffer.alloc(1 * KiB, 1))
      )
      assert.deepStrictEqual(reason, new FrameTooLarge({ size: 64 * KiB + 1, max: 64 * KiB }))
    })
  )

  it.scoped("a 0xFFFFFFF0-byte announcement is refused without allocating it", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend({ maxFrameBytes: 64 * KiB })
      const { peer } = yield* trustedRawPeer(fx.node)
      const before = process.memoryUsage().arrayBuffers
      yield* peer.write(lengthPrefix(0xfffffff0))
      const { reason } = yield* closedReason(fx, peer.keys.id)
      const grown = process.memoryUsage().arrayBuffers - before
      assert.deepStrictEqual(reason, new FrameTooLarge({ size: 0xfffffff0, max: 64 * KiB }))
      assert.isBelow(grown, 4 * MiB, `arrayBuffers grew by ${grown} bytes`)
      yield* peer.closed
      yield* friendStillWorks(fx)
      yield* onlyFriendRemains(fx)
    })
  )

  it.scoped("a 0xFFFFFFF0-byte announcement instead of a Hello closes the connection without allocating it", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend({ maxFrameBytes: 64 * KiB })
      const peer = yield* connectRaw(fx.node.port)
      const before = process.memoryUsage().arrayBuffers
      yield* peer.write(preamble(), lengthPrefix(0xfffffff0))
      yield* peer.closed
      const grown = process.memoryUsage().arrayBuffers - before
      assert.isBelow(grown, 4 * MiB, `arrayBuffers grew by ${grown} bytes`)
      // the node never admitted it: its preamble was all it sent
      assert.strictEqual(peer.bytesReceived(), 8)
      yield* friendStillWorks(fx)
      yield* onlyFriendRemains(fx)
    })
  )

  it.scoped("a truncated frame, then close: FrameTruncated with the bytes expected and received", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend()
      const frame = encodeFrame(PureMessage.make({ message: "cut short", origin, sentAt: now }))
      const keep = Math.floor(frame.length / 2)
      const reason = yield* closesTrustedChannel(fx, (peer) =>
        peer.write(frame.subarray(0, keep)).pipe(Effect.zipRight(peer.end))
      )
      assert.deepStrictEqual(reason, new FrameTruncated({ expected: frame.length - 4, received: keep - 4 }))
    })
  )

  it.scoped("a valid frame with invalid fields closes the channel with InvalidPacket naming the field", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend()
      const reason = yield* closesTrustedChannel(fx, (peer) =>
        peer.write(rawFrame({ _tag: "PureMessage", message: 42, origin, sentAt: 0 }))
      )
      assert.instanceOf(reason, InvalidPacket)
      assert.strictEqual((reason as InvalidPacket).kind, "PureMessage")
      assert.include((reason as InvalidPacket).detail, '["message"]')
    })
  )

  it.scoped("an unknown packet kind closes the channel with UnknownPacketKind", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend()
      const reason = yield* closesTrustedChannel(fx, (peer) =>
        peer.write(rawFrame({ _tag: "Teleport", origin, sentAt: 0 }))
      )
      assert.deepStrictEqual(reason, new UnknownPacketKind({ kind: "Teleport" }))
    })
  )

  it.scoped("a header that is not JSON closes the channel with FrameNotJson", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend()
      const reason = yield* closesTrustedChannel(fx, (peer) => peer.write(rawFrameBytes(Buffer.from('{"_tag": nope'))))
      assert.strictEqual(reason._tag, "FrameNotJson")
    })
  )

  it.scoped("a bad frame during the trust handshake closes the new channel with that frame's reason", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend()
      const peer = yield* connectRaw(fx.node.port)
      yield* sayHello(peer)
      // in place of the HandshakeProof
      yield* peer.write(rawFrame({ _tag: "Teleport", origin, sentAt: 0 }))
      const { reason } = yield* closedReason(fx, peer.keys.id)
      assert.deepStrictEqual(reason, new UnknownPacketKind({ kind: "Teleport" }))
      yield* peer.closed
      yield* friendStillWorks(fx)
      yield* onlyFriendRemains(fx)
    })
  )

  it.scoped("a flood of small frames closes the channel with PeerFlooding after at most the limit", () =>
    Effect.gen(function* () {
      const limit = 200
      const fx = yield* nodeWithFriend({ maxFramesPerSecond: limit })
      const { peer } = yield* trustedRawPeer(fx.node)
      const flood = Buffer.concat(
        Array.from({ length: 5000 }, (_, i) => encodeFrame(PureMessage.make({ message: `${i}`, origin, sentAt: now })))
      )
      const before = process.memoryUsage().arrayBuffers
      yield* peer.write(flood)
      const { channel, reason } = yield* closedReason(fx, peer.keys.id)
      const grown = process.memoryUsage().arrayBuffers - before
      assert.deepStrictEqual(reason, new PeerFlooding({ frames: limit + 1, limit }))
      // it stopped decoding at the limit: no backlog of the other ~4800 frames
      assert.isAtMost((yield* channel.stats).framesIn, limit + 1)
      assert.isBelow(grown, 4 * MiB, `arrayBuffers grew by ${grown} bytes`)
      yield* peer.closed
      // what was delivered before the cut is a prefix of the flood, in order; then the friend's packet arrives
      yield* fx.toNode.send(message(fx.friend.id, "after the flood"))
      const delivered = yield* fx.packets.pipe(
        Stream.takeUntil((r) => r.channel.remoteId === fx.friend.id),
        Stream.runCollect,
        Effect.map((c) => [...c])
      )
      const fromFlood = delivered.filter((r) => r.channel.remoteId === peer.keys.id)
      assert.isAtMost(fromFlood.length, limit)
      assert.deepStrictEqual(
        fromFlood.map((r) => (r.packet as PureMessage).message),
        Array.from({ length: fromFlood.length }, (_, i) => `${i}`)
      )
      assert.strictEqual(delivered.at(-1)?.channel.remoteId, fx.friend.id)
      yield* friendStillWorks(fx)
      yield* onlyFriendRemains(fx)
    })
  )

  it.scoped(
    "handshake frames after the trust phase are discarded, not accumulated",
    () =>
      Effect.gen(function* () {
        const fx = yield* nodeWithFriend()
        const { channel, peer } = yield* trustedRawPeer(fx.node)
        const frame = encodeFrame(HandshakeData.make({ payload: "x".repeat(1 * MiB) }))
        const before = retainedBytes()
        for (let i = 0; i < 64; i++) yield* peer.writePaced(frame)
        // packets are processed in order: once this one is delivered, the node has handled the 64 MiB before it
        yield* peer.write(encodeFrame(message(peer.keys.id, "sync")))
        yield* fx.packets.pipe(
          Stream.filter((r) => r.channel.remoteId === peer.keys.id),
          Stream.runHead
        )
        const grown = retainedBytes() - before
        assert.isFalse(channel.isClosed())
        assert.isBelow(grown, 16 * MiB, `the node retains ${grown} bytes after 64 MiB of ignored HandshakeData`)
        yield* friendStillWorks(fx)
      }),
    { timeout: 60_000 }
  )

  it.scoped("a Hello claiming the friend's NodeId fails its handshake and leaves the friend's channel alone", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend()
      const friendChannel = yield* fx.node.channel(fx.friend.id)
      const impostor = yield* connectRaw(fx.node.port)
      const hellos = yield* sayHello(impostor, { claim: fx.friend.id })
      // it can only sign with its own key, which does not hash to the friend's NodeId
      const data = transcript("p2pnet", hellos.local, hellos.remote)
      yield* impostor.write(
        encodeFrame(
          HandshakeProof.make({
            signature: Buffer.from(impostor.keys.sign(data)).toString("base64"),
            networkMac: ""
          })
        )
      )
      const reject = yield* impostor.nextOf("Reject")
      assert.include(reject.reason, "node id does not match public key")
      const reason = yield* waitFor(fx.events, (e) =>
        e._tag === "ChannelStateChanged" && e.state === "closed" && e.channel !== friendChannel
          ? Option.fromNullable(e.reason)
          : Option.none()
      )
      assert.strictEqual(reason._tag, "HandshakeFailed")
      yield* impostor.closed
      assert.isFalse(friendChannel.isClosed(), "an unauthenticated Hello displaced the friend's trusted channel")
      yield* friendStillWorks(fx)
      yield* onlyFriendRemains(fx)
    })
  )

  it.scoped(
    "a slow application: the node stops reading the socket instead of buffering, and loses nothing",
    () =>
      Effect.gen(function* () {
        const inboxCapacity = 32
        const packetBuffer = 32
        const fx = yield* nodeWithFriend({ inboxCapacity }, { packetBuffer })
        const { channel, peer } = yield* trustedRawPeer(fx.node)
        const frames = 2000
        const payload = 32 * KiB
        const frameOf = (i: number) => {
          const data = Buffer.alloc(payload)
          data.writeUInt32BE(i, 0)
          return encodeFrame(DataTransmission.make({ format: "MiscData", data, origin, sentAt: now }))
        }
        const frameBytes = frameOf(0).length
        const baseline = (yield* channel.stats).bytesIn
        // the sender writes as fast as TCP lets it; the node's application reads one packet per event-loop turn
        yield* Effect.forEach(
          Array.from({ length: frames }, (_, i) => i),
          (i) => peer.writePaced(frameOf(i)),
          {
            discard: true
          }
        ).pipe(Effect.forkScoped)
        // held by the node at most: the subscriber's queue and the chunk it took, the processor's batch, the inbox
        // (which may overshoot by one socket chunk), one partial frame; with a margin of one inbox and a socket read
        const slack = packetBuffer * 2 + inboxCapacity * 3
        const { consumed, highest } = yield* consumeSlowly({
          packets: fx.packets,
          from: peer.keys.id,
          frames,
          stats: channel.stats,
          baseline,
          frameBytes,
          limitBytes: slack * frameBytes + 64 * KiB
        })
        assert.strictEqual(consumed, frames)
        assert.isFalse(channel.isClosed())
        // the node did fill its buffers (the bound was exercised, not just never approached)
        assert.isAbove(highest, inboxCapacity * frameBytes)
        yield* friendStillWorks(fx)
      }),
    { timeout: 60_000 }
  )
})

describe("bad input during the handshake (real time)", () => {
  const handshakeTimeoutMillis = 300

  it.scopedLive("a peer that connects and sends nothing is disconnected after handshakeTimeoutMillis", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend({ handshakeTimeoutMillis })
      const start = yield* Clock.currentTimeMillis
      const peer = yield* connectRaw(fx.node.port)
      const { error } = yield* peer.closed
      const elapsed = (yield* Clock.currentTimeMillis) - start
      assert.isUndefined(error)
      // the node sent its preamble and nothing else: there was never a channel to close with a reason
      assert.strictEqual(peer.bytesReceived(), 8)
      assert.isAtLeast(elapsed, handshakeTimeoutMillis - 5)
      yield* friendStillWorks(fx)
      yield* onlyFriendRemains(fx)
    })
  )

  it.scopedLive("a peer that says Hello and then nothing: Reject and HandshakeTimeout", () =>
    Effect.gen(function* () {
      const fx = yield* nodeWithFriend({ handshakeTimeoutMillis })
      const peer = yield* connectRaw(fx.node.port)
      yield* sayHello(peer)
      const reject = yield* peer.nextOf("Reject")
      assert.strictEqual(reject.reason, new HandshakeTimeout({ millis: handshakeTimeoutMillis }).message)
      const { reason } = yield* closedReason(fx, peer.keys.id)
      assert.deepStrictEqual(reason, new HandshakeTimeout({ millis: handshakeTimeoutMillis }))
      yield* peer.closed
      yield* friendStillWorks(fx)
      yield* onlyFriendRemains(fx)
    })
  )
})
