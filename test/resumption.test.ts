/**
 * Noise resumption: a dial to an address whose static key the session learnt from an earlier handshake opens with
 * Noise IK (one round trip), the initiator's Hello inside message 1. What must hold: the second handshake to an
 * address is IK and carries the early frame encrypted; a responder whose static key changed asks for XX and the
 * opening still succeeds on the same connection; a replayed IK message 1 gets an answer but never a confirmed
 * session, so a node neither registers it, displaces the live channel with it, nor announces it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Context, Deferred, Effect, Either, Exit, Layer, Option, Scope, Stream } from "effect"
import * as net from "node:net"
import { afterPendingIo, socketStream } from "../src/actors/Connection.js"
import type { ByteStream, EarlyFrame } from "../src/actors/Connection.js"
import { generateKeys, NodeIdentity } from "../src/layers/NodeIdentity.js"
import { generateStaticKeys, noiseSession, noiseSessionLayer } from "../src/layers/NoiseSession.js"
import type { SecureByteStream } from "../src/layers/NoiseTransport.js"
import { SecureSession } from "../src/layers/SecureSession.js"
import { NetworkConfig } from "../src/layers/Settings.js"
import type { ConnectionLost } from "../src/schema/errors.js"
import { IncomingPeerTrustPolicy, NetworkSettings } from "../src/schema/settings.js"
import { PREAMBLE_LENGTH } from "../src/schema/wire.js"
import { message, startNode, waitFor } from "./support/nodes.js"
import { relay, splitDirection } from "./support/noise-relay.js"
import { opening, rawClient } from "./support/noise-sessions.js"
import { recordingStream } from "./support/noise-streams.js"

const settings = NetworkSettings.make({ handshakeTimeoutMillis: 2_000 })

/** One listener on 127.0.0.1: every connection to it has the same address, which is what resumption keys on. */
const listener = Effect.acquireRelease(
  Effect.async<net.Server>((resume) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.sync(() => server.close())
)

/** A new connection to `server`, once both ends exist and the client is connected. */
const connectTo = (server: net.Server) =>
  Effect.acquireRelease(
    Effect.async<{ client: net.Socket; server: net.Socket }>((resume) => {
      let accepted: net.Socket | undefined
      let connected = false
      const done = () => {
        if (accepted !== undefined && connected) resume(Effect.succeed({ client, server: accepted }))
      }
      // matched by port, so that connections made at once each get their own
      const onConnection = (s: net.Socket) => {
        if (s.remotePort !== client.localPort) return
        server.off("connection", onConnection)
        accepted = s
        done()
      }
      server.on("connection", onConnection)
      const client = net.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port }, () => {
        connected = true
        done()
      })
    }),
    (p) =>
      Effect.sync(() => {
        p.client.destroy()
        p.server.destroy()
      })
  )

const EARLY = Buffer.from("the initiator's first frame, carried early")

/** A maker of early frames (EARLY each time), numbered in the order they were made. */
const earlyMaker = () => {
  let made = 0
  const make = (): NumberedFrame => ({ bytes: EARLY, seq: made++ })
  return { make, made: () => made }
}
interface NumberedFrame extends EarlyFrame {
  readonly seq: number
}
const defaultMaker = earlyMaker().make

/**
 * Both sides of one handshake on a new connection to `server`; the initiator's opening makes its early frames with
 * `early` (EARLY each). Records what each side writes.
 */
const handshakeAt = (
  server: net.Server,
  initiator: SecureSession["Type"],
  responder: SecureSession["Type"],
  early: () => EarlyFrame = defaultMaker
) =>
  Effect.gen(function* () {
    const pair = yield* connectTo(server)
    const client = socketStream(pair.client)
    const accepted = socketStream(pair.server)
    const sent = { byInitiator: [] as Array<Buffer>, byResponder: [] as Array<Buffer> }
    const [i, r] = yield* Effect.all(
      [
        initiator
          .upgrade(recordingStream(client, sent.byInitiator), "initiator", opening(client, { early }))
          // XX's message 3 leads the initiator's first write: an empty write sends it
          .pipe(Effect.tap((s) => s.write([]))),
        // as is IK's message 2 (it leads the responder's first write, usually its Hello)
        responder
          .upgrade(recordingStream(accepted, sent.byResponder), "responder", opening(accepted))
          .pipe(Effect.tap((s) => s.write([])))
      ],
      { concurrency: 2 }
    )
    return { initiator: i as SecureByteStream, responder: r as SecureByteStream, sent }
  })

/** Installs a receiver on `stream`; the Effect returned completes with the first `n` bytes it delivers. */
const readUntil = (stream: ByteStream, n: number) =>
  Effect.gen(function* () {
    const got = yield* Deferred.make<Buffer, ConnectionLost>()
    const chunks: Array<Buffer> = []
    let size = 0
    stream.receive({
      onData: (chunk) => {
        chunks.push(Buffer.from(chunk))
        size += chunk.length
        if (size >= n) Deferred.unsafeDone(got, Effect.succeed(Buffer.concat(chunks)))
      },
      onEnd: (reason) => Deferred.unsafeDone(got, Effect.fail(reason))
    })
    return Deferred.await(got)
  })

describe("Noise resumption (IK)", () => {
  it.scopedLive("the second handshake to an address is IK: one round trip, the early frame inside message 1", () =>
    Effect.gen(function* () {
      const server = yield* listener
      const alice = noiseSession(generateKeys(), settings)
      const bob = noiseSession(generateKeys(), settings)

      const first = yield* handshakeAt(server, alice, bob)
      assert.strictEqual(first.initiator.pattern, "XX")
      assert.strictEqual(first.responder.pattern, "XX")
      assert.isDefined(first.initiator.earlySent, "XX carries the early frame too, right after message 3")
      const firstGot = yield* readUntil(first.responder, EARLY.length)
      assert.strictEqual((yield* firstGot).toString("utf8"), EARLY.toString("utf8"))

      const second = yield* handshakeAt(server, alice, bob)
      assert.strictEqual(second.initiator.pattern, "IK")
      assert.strictEqual(second.responder.pattern, "IK")
      assert.isDefined(second.initiator.earlySent)
      assert.strictEqual(second.responder.remoteNodeId, first.responder.remoteNodeId)
      // the responder reads the early frame first, then what the initiator writes after
      const got = yield* readUntil(second.responder, EARLY.length + 14)
      yield* second.initiator.write([Buffer.from(" and then more")])
      assert.strictEqual((yield* got).toString("utf8"), `${EARLY.toString("utf8")} and then more`)
      yield* second.responder.confirmed!
      const wire = splitDirection(Buffer.concat(second.sent.byInitiator), 1)
      assert.lengthOf(wire.handshake, 1, "one handshake message from the initiator")
      assert.strictEqual(wire.transport[0]!.length, 16, "then an empty transport message: the confirmation")
      assert.strictEqual(Buffer.concat(second.sent.byInitiator).indexOf(EARLY), -1, "the early frame is encrypted")
      // a third: IK again, now with the static-static DH each side keeps from the second
      const third = yield* handshakeAt(server, alice, bob)
      assert.strictEqual(third.initiator.pattern, "IK")
      const more = yield* readUntil(third.responder, EARLY.length)
      assert.strictEqual((yield* more).toString("utf8"), EARLY.toString("utf8"))
      const answer = splitDirection(Buffer.concat(second.sent.byResponder), 1)
      assert.lengthOf(answer.preamble, 1)
      assert.lengthOf(answer.handshake, 1, "one handshake message from the responder")
    })
  )

  it.scopedLive("a dial finds its IK message 1 prepared: made ahead, used once, a fresh ephemeral key each", () =>
    Effect.gen(function* () {
      const server = yield* listener
      const alice = noiseSession(generateKeys(), settings)
      const bob = noiseSession(generateKeys(), settings)
      const frames = earlyMaker()
      /** The initiator's ephemeral key in its first handshake message (after the preamble and the length). */
      const ephemeral = (h: { sent: { byInitiator: Array<Buffer> } }) =>
        Buffer.concat(h.sent.byInitiator)
          .subarray(PREAMBLE_LENGTH + 2, PREAMBLE_LENGTH + 34)
          .toString("hex")
      const seq = (h: { initiator: SecureByteStream }) => (h.initiator.earlySent as NumberedFrame).seq

      const first = yield* handshakeAt(server, alice, bob, frames.make)
      assert.strictEqual(first.initiator.pattern, "XX")
      // the opening for the next dial is made once the I/O due has run (setImmediate), as this waits for
      yield* afterPendingIo
      const madeBefore = frames.made()
      assert.strictEqual(madeBefore, 2, "the first dial's frame, and the one prepared for the next")

      const second = yield* handshakeAt(server, alice, bob, frames.make)
      assert.strictEqual(second.initiator.pattern, "IK")
      assert.strictEqual(seq(second), 1, "the frame sent was made before this dial began")
      const got = yield* readUntil(second.responder, EARLY.length)
      assert.strictEqual((yield* got).toString("utf8"), EARLY.toString("utf8"))
      yield* second.responder.confirmed!

      // two dials at once: one takes the prepared opening, the other makes its own; both resume
      yield* afterPendingIo
      const made = frames.made()
      const [a, b] = yield* Effect.all(
        [handshakeAt(server, alice, bob, frames.make), handshakeAt(server, alice, bob, frames.make)],
        { concurrency: 2 }
      )
      assert.deepStrictEqual([a.initiator.pattern, b.initiator.pattern], ["IK", "IK"])
      assert.deepStrictEqual(
        [seq(a), seq(b)].sort((x, y) => x - y).map((n) => n < made),
        [true, false],
        "exactly one of them used the opening made ahead"
      )
      const keys = new Set([second, a, b].map(ephemeral))
      assert.strictEqual(keys.size, 3, "every opening has its own ephemeral key")

      // a frame from another maker (another network sharing the session) is never sent for this one
      yield* afterPendingIo
      const other = earlyMaker()
      const foreign = yield* handshakeAt(server, alice, bob, other.make)
      assert.strictEqual(foreign.initiator.pattern, "IK")
      assert.strictEqual(seq(foreign), 0, "made by its own maker, during this dial")
    })
  )

  it.scopedLive("closing noiseSessionLayer's scope drops its prepared opening, and it prepares none after", () =>
    Effect.gen(function* () {
      const server = yield* listener
      const bob = noiseSession(generateKeys(), settings)
      const frames = earlyMaker()
      const scope = yield* Scope.make()
      const alice = yield* Layer.buildWithScope(noiseSessionLayer(), scope).pipe(
        Effect.map(Context.get(SecureSession)),
        Effect.provide(Layer.merge(NodeIdentity.layerKeys(generateKeys()), Layer.succeed(NetworkConfig, settings)))
      )
      const seq = (h: { initiator: SecureByteStream }) => (h.initiator.earlySent as NumberedFrame).seq

      yield* handshakeAt(server, alice, bob, frames.make)
      yield* afterPendingIo
      assert.strictEqual(frames.made(), 2, "one opening prepared while the layer is open")
      yield* Scope.close(scope, Exit.void)

      const after = yield* handshakeAt(server, alice, bob, frames.make)
      assert.strictEqual(after.initiator.pattern, "IK", "the static key learnt is still used")
      assert.strictEqual(seq(after), 2, "the prepared opening was dropped: this dial made its own")
      yield* afterPendingIo
      assert.strictEqual(frames.made(), 3, "and nothing was prepared after it")
    })
  )

  it.scopedLive("a responder whose static key changed asks for XX; the opening goes on in XX on that connection", () =>
    Effect.gen(function* () {
      const server = yield* listener
      const bobKeys = generateKeys()
      const alice = noiseSession(generateKeys(), settings)
      const before = noiseSession(bobKeys, settings, { staticKeys: generateStaticKeys() })
      const after = noiseSession(bobKeys, settings, { staticKeys: generateStaticKeys() })

      yield* handshakeAt(server, alice, before)
      const fallback = yield* handshakeAt(server, alice, after)
      assert.strictEqual(fallback.initiator.pattern, "XX")
      assert.strictEqual(fallback.responder.pattern, "XX")
      // the early frame message 1 carried was never read: XX sends it after message 3
      assert.isDefined(fallback.initiator.earlySent)
      // the responder's first write: its preamble and an empty handshake message (the request for XX)
      const answer = Buffer.concat(fallback.sent.byResponder)
      assert.deepStrictEqual([...answer.subarray(PREAMBLE_LENGTH, PREAMBLE_LENGTH + 2)], [0, 0])
      const got = yield* readUntil(fallback.responder, EARLY.length + 18)
      yield* fallback.initiator.write([Buffer.from("after the fallback")])
      assert.strictEqual((yield* got).toString("utf8"), `${EARLY.toString("utf8")}after the fallback`)

      // and the key it learnt in the fallback serves the next opening
      const resumed = yield* handshakeAt(server, alice, after)
      assert.strictEqual(resumed.initiator.pattern, "IK")
    })
  )

  it.scopedLive("resumption off: XX every time, and an IK message 1 is answered with the request for XX", () =>
    Effect.gen(function* () {
      const server = yield* listener
      const alice = noiseSession(generateKeys(), settings)
      const bob = noiseSession(generateKeys(), settings)
      const strictBob = noiseSession(generateKeys(), settings, { resumption: false })
      const strictAlice = noiseSession(generateKeys(), settings, { resumption: false })
      yield* handshakeAt(server, strictAlice, bob)
      assert.strictEqual((yield* handshakeAt(server, strictAlice, bob)).initiator.pattern, "XX")
      yield* handshakeAt(server, alice, strictBob)
      const refused = yield* handshakeAt(server, alice, strictBob)
      assert.strictEqual(refused.initiator.pattern, "XX")
      assert.deepStrictEqual([...Buffer.concat(refused.sent.byResponder).subarray(8, 10)], [0, 0])
    })
  )

  it.scopedLive("with a network key, IK's message 1 proves it: the same key resumes, another key is refused", () =>
    Effect.gen(function* () {
      const server = yield* listener
      const keyed = (networkKey: string) => NetworkSettings.make({ handshakeTimeoutMillis: 2_000, networkKey })
      const bobKeys = generateKeys()
      const bobStatic = generateStaticKeys()
      const alice = noiseSession(generateKeys(), keyed("the key"))
      const bob = noiseSession(bobKeys, keyed("the key"), { staticKeys: bobStatic })
      // the same node and static key, but another network key: message 1 is readable, its proof is not right
      const impostor = noiseSession(bobKeys, keyed("another key"), { staticKeys: bobStatic })
      yield* handshakeAt(server, alice, bob)
      assert.strictEqual((yield* handshakeAt(server, alice, bob)).initiator.pattern, "IK")
      const pair = yield* connectTo(server)
      const [client, accepted] = [socketStream(pair.client), socketStream(pair.server)]
      const [ours, theirs] = yield* Effect.all(
        [
          Effect.either(alice.upgrade(client, "initiator", opening(client, { early: defaultMaker }))),
          Effect.either(impostor.upgrade(accepted, "responder", opening(accepted)))
        ],
        { concurrency: 2 }
      )
      for (const side of [ours, theirs]) {
        assert.isTrue(Either.isLeft(side) && side.left._tag === "HandshakeFailed")
        if (Either.isLeft(side)) assert.include(side.left.message, "network key proof failed")
      }
    })
  )

  it.scopedLive("a replayed IK message 1 is answered, but the session is never confirmed", () =>
    Effect.gen(function* () {
      const server = yield* listener
      const alice = noiseSession(generateKeys(), settings)
      const bob = noiseSession(generateKeys(), settings)
      yield* handshakeAt(server, alice, bob)
      const recorded = yield* handshakeAt(server, alice, bob)
      assert.strictEqual(recorded.initiator.pattern, "IK")
      // the attacker replays everything the initiator sent: preamble, message 1 and its confirmation
      const flight = Buffer.concat(recorded.sent.byInitiator)
      const pair = yield* connectTo(server)
      pair.client.write(flight)
      const accepted = socketStream(pair.server)
      const replayed = (yield* bob.upgrade(accepted, "responder", opening(accepted))) as SecureByteStream
      assert.strictEqual(replayed.pattern, "IK")
      const confirmation = yield* Effect.either(replayed.confirmed!)
      assert.isTrue(Either.isLeft(confirmation))
      if (Either.isLeft(confirmation)) assert.include(confirmation.left.message, "failed authentication")
    })
  )
})

describe("Noise resumption between nodes", () => {
  it.scopedLive("a second dial to the same address opens with IK and packets flow both ways", () =>
    Effect.gen(function* () {
      const a = yield* startNode({ reconnectRetries: 0 })
      const b = yield* startNode({ reconnectRetries: 0 })
      const path = yield* relay(b.port)
      const first = yield* a.dial("127.0.0.1", path.port)
      yield* first.close("again")
      yield* (yield* b.awaitChannel(a.id)).awaitClosed
      const from = Buffer.concat(path.toServer).length
      const packets = yield* b.registry.subscribePackets
      const events = yield* b.registry.subscribeEvents
      const second = yield* a.dial("127.0.0.1", path.port)
      // announced like any inbound peer (once its confirmation came)
      yield* waitFor(events, (e) => (e._tag === "IncomingPeer" && e.id === a.id ? Option.some(e) : Option.none()))
      yield* second.awaitTrusted
      yield* second.sendAndAwait(message(a.id, "over a resumed session"))
      const got = yield* packets.pipe(
        Stream.map((p) => p.packet),
        Stream.filter((p) => p._tag === "PureMessage"),
        Stream.take(1),
        Stream.runCollect
      )
      assert.deepStrictEqual(
        Chunk.toReadonlyArray(got).map((p) => (p._tag === "PureMessage" ? p.message : "")),
        ["over a resumed session"]
      )
      const wire = splitDirection(Buffer.concat(path.toServer).subarray(from), 1)
      assert.lengthOf(wire.handshake, 1)
      // message 1 of IK is longer than XX's 32 bytes (the static key, the identity payload and the Hello)
      assert.isAbove(wire.handshake[0]!.length, 32 + 48 + 97)
      const inbound = yield* b.awaitChannel(a.id)
      yield* inbound.sendAndAwait(message(b.id, "and back"))
    })
  )

  it.scopedLive(
    "a replayed IK opening is answered but never registered: the live channel stays, no IncomingPeer, closed at the timeout",
    () =>
      Effect.gen(function* () {
        const a = yield* startNode({ reconnectRetries: 0 })
        const b = yield* startNode({ reconnectRetries: 0, handshakeTimeoutMillis: 300 })
        const c = yield* startNode({ reconnectRetries: 0 })
        const path = yield* relay(b.port)
        yield* (yield* a.dial("127.0.0.1", path.port)).close("again")
        yield* (yield* b.awaitChannel(a.id)).awaitClosed
        const from = Buffer.concat(path.toServer).length
        const live = yield* a.dial("127.0.0.1", path.port)
        yield* live.awaitTrusted
        const inbound = yield* b.awaitChannel(a.id)
        yield* inbound.awaitTrusted
        const wire = Buffer.concat(path.toServer).subarray(from)
        const m1Length = wire.readUInt16BE(PREAMBLE_LENGTH)
        const flight = wire.subarray(0, PREAMBLE_LENGTH + 2 + m1Length)

        const events = yield* b.registry.subscribeEvents
        const seen = yield* Effect.fork(
          events.pipe(
            Stream.filterMap((e) => (e._tag === "IncomingPeer" ? Option.some(e.id) : Option.none())),
            Stream.takeUntil((id) => id === c.id),
            Stream.runCollect
          )
        )
        const attacker = yield* rawClient(b.port)
        attacker.socket.write(flight)
        yield* Deferred.await(attacker.closed)
        // b answered (preamble, message 2, its Hello) and then closed it, unconfirmed, at its timeout
        assert.isAbove(Buffer.concat(attacker.received).length, PREAMBLE_LENGTH + 2)
        const channels = yield* b.channels
        assert.strictEqual(channels.length, 1)
        assert.strictEqual(channels[0], inbound, "the live channel was not displaced")
        assert.strictEqual(yield* inbound.state, "trusted")
        yield* live.sendAndAwait(message(a.id, "still here"))
        // a later peer's IncomingPeer is the first one b announced since the replay began
        yield* c.dial("127.0.0.1", b.port)
        assert.deepStrictEqual(Chunk.toReadonlyArray(yield* seen), [c.id], "no IncomingPeer for the replay")
      })
  )

  it.scopedLive("a resumed opening to a node with queue-based placement waits for the application's decision", () =>
    Effect.gen(function* () {
      const gate = yield* startNode({
        trust: IncomingPeerTrustPolicy.make({ incomingPeerPlacement: "QueueBased", incomingQueueCapacity: 4 })
      })
      const a = yield* startNode({ reconnectRetries: 0 })
      const dialAndAccept = Effect.gen(function* () {
        const dialing = yield* Effect.fork(a.dial("127.0.0.1", gate.port))
        const pending = yield* gate.incoming
        assert.strictEqual(pending.id, a.id)
        yield* pending.accept
        return yield* dialing
      })
      const first = yield* dialAndAccept
      yield* first.close("again")
      yield* (yield* gate.awaitChannel(a.id)).awaitClosed
      const second = yield* dialAndAccept
      yield* second.awaitTrusted
      assert.strictEqual((yield* gate.awaitChannel(a.id)).remoteId, a.id)
    })
  )
})
