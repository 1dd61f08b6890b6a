/** The opt-in Noise session: nodes that both use it talk through an encrypted, authenticated channel. */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Either, Layer, Stream } from "effect"
import * as net from "node:net"
import { socketStream } from "../src/actors/Connection.js"
import type { ByteStream } from "../src/actors/Connection.js"
import { NetworkSettings } from "../src/schema/settings.js"
import { preamble, PROTOCOL_VERSION } from "../src/schema/wire.js"
import type { SecureByteStream } from "../src/layers/NoiseSession.js"
import { ConnectionLost } from "../src/schema/errors.js"
import { noiseSession } from "../src/layers/NoiseSession.js"
import { generateKeys, NodeIdentity } from "../src/layers/NodeIdentity.js"
import { SecureSession } from "../src/layers/SecureSession.js"
import { message, startNode } from "./support/nodes.js"

/** A node with the default session, which is Noise. */
const secureNode = (settings: Parameters<typeof startNode>[0] = {}) => startNode(settings)

const settingsFor = NetworkSettings.make({ handshakeTimeoutMillis: 2_000 })

type Rewrite = (chunk: Buffer) => Buffer

/**
 * A man in the middle on 127.0.0.1: forwards every connection to `port`, records the bytes in both directions, and,
 * when `tamper.next` is set, rewrites the next chunk going client → server with it.
 */
const relay = (port: number) =>
  Effect.acquireRelease(
    Effect.async<{ port: number; recorded: Array<Buffer>; tamper: { next: Rewrite | undefined }; server: net.Server }>(
      (resume) => {
        const recorded: Array<Buffer> = []
        const tamper: { next: Rewrite | undefined } = { next: undefined }
        const server = net.createServer((client) => {
          const upstream = net.connect({ host: "127.0.0.1", port })
          client.on("data", (chunk: Buffer) => {
            recorded.push(Buffer.from(chunk))
            const rewrite = tamper.next
            tamper.next = undefined
            upstream.write(rewrite === undefined ? chunk : rewrite(chunk))
          })
          upstream.on("data", (chunk: Buffer) => {
            recorded.push(Buffer.from(chunk))
            client.write(chunk)
          })
          client.on("close", () => upstream.destroy())
          upstream.on("close", () => client.destroy())
          client.on("error", () => {})
          upstream.on("error", () => {})
        })
        server.listen(0, "127.0.0.1", () =>
          resume(Effect.succeed({ port: (server.address() as net.AddressInfo).port, recorded, tamper, server }))
        )
      }
    ),
    (r) => Effect.sync(() => r.server.close())
  )

const flipLastBit: Rewrite = (chunk) => {
  const copy = Buffer.from(chunk)
  copy[copy.length - 1] = copy[copy.length - 1]! ^ 0x01
  return copy
}

/** Two secure nodes dialling through a relay, trusted on both sides; `b` sees the inbound channel. */
const tamperedPair = Effect.gen(function* () {
  const a = yield* secureNode({ reconnectRetries: 0 })
  const b = yield* secureNode({ reconnectRetries: 0 })
  const mitm = yield* relay(b.port)
  const channel = yield* a.dial("127.0.0.1", mitm.port)
  yield* channel.awaitTrusted
  const inbound = yield* b.awaitChannel(a.id)
  yield* inbound.awaitTrusted
  return { a, b, mitm, channel, inbound }
})

/** Two connected sockets on 127.0.0.1, closed with the scope. */
const socketPair = Effect.acquireRelease(
  Effect.async<{ client: net.Socket; server: net.Socket; listener: net.Server }>((resume) => {
    const listener = net.createServer((server) => resume(Effect.succeed({ client, server, listener })))
    let client: net.Socket
    listener.listen(0, "127.0.0.1", () => {
      client = net.connect({ host: "127.0.0.1", port: (listener.address() as net.AddressInfo).port })
    })
  }),
  (p) =>
    Effect.sync(() => {
      p.client.destroy()
      p.server.destroy()
      p.listener.close()
    })
)

const sessionFor = (keys: ReturnType<typeof generateKeys>) => Effect.succeed(noiseSession(keys, settingsFor))

/** What Link.establish gives a session: the preamble and the check of the remote's. */
const opening = (stream: ByteStream) => ({
  preamble: preamble(PROTOCOL_VERSION, "noise"),
  remotePreamble: Effect.asVoid(
    Effect.async<void>((resume) => {
      let got = Buffer.alloc(0)
      stream.receive({
        onData: (chunk) => {
          got = Buffer.concat([got, chunk])
          if (got.length < 8) return
          stream.receive(undefined, got.subarray(8))
          resume(Effect.void)
        },
        onEnd: () => resume(Effect.void)
      })
    })
  )
})

describe("NoiseSession (the default session)", () => {
  it.scopedLive("two noise nodes connect, trust and exchange a PureMessage; the wire shows no plaintext", () =>
    Effect.gen(function* () {
      const a = yield* secureNode()
      const b = yield* secureNode()
      const mitm = yield* relay(b.port)
      const packets = yield* b.registry.subscribePackets
      const channel = yield* a.dial("127.0.0.1", mitm.port)
      yield* channel.awaitTrusted
      assert.strictEqual(channel.remoteId, b.id)
      const secret = "the-known-plaintext-4f1c9e"
      yield* channel.send(message(a.id, secret))
      const got = yield* packets.pipe(Stream.runHead)
      assert.isTrue(got._tag === "Some" && got.value.packet._tag === "PureMessage")
      if (got._tag === "Some" && got.value.packet._tag === "PureMessage") {
        assert.strictEqual(got.value.packet.message, secret)
      }
      const wire = Buffer.concat(mitm.recorded)
      assert.isTrue(wire.length > 0)
      assert.strictEqual(wire.indexOf(secret), -1)
      // the identifiers in the Hello travel encrypted too
      assert.strictEqual(wire.indexOf(a.id), -1)
    })
  )

  it.scopedLive(
    "a flipped bit in a transport frame closes the channel with a typed error; the node keeps running",
    () =>
      Effect.gen(function* () {
        const { b, channel, inbound, mitm } = yield* tamperedPair
        mitm.tamper.next = flipLastBit
        yield* channel.send(message(b.id, "tampered"))
        const reason = yield* inbound.awaitClosed
        assert.strictEqual(reason._tag, "ConnectionLost")
        assert.include(reason.message, "failed authentication")
        // b still accepts and serves a new secure peer
        const c = yield* secureNode()
        const packets = yield* b.registry.subscribePackets
        const cb = yield* c.dial("127.0.0.1", b.port)
        yield* cb.awaitTrusted
        yield* cb.send(message(c.id, "after the attack"))
        const got = yield* packets.pipe(Stream.runHead)
        assert.isTrue(got._tag === "Some" && got.value.packet._tag === "PureMessage")
      })
  )

  it.scopedLive("a replayed transport frame closes the channel with a typed error", () =>
    Effect.gen(function* () {
      const { b, channel, inbound, mitm } = yield* tamperedPair
      mitm.tamper.next = (chunk) => Buffer.concat([chunk, chunk])
      yield* channel.send(message(b.id, "once"))
      const reason = yield* inbound.awaitClosed
      assert.strictEqual(reason._tag, "ConnectionLost")
      assert.include(reason.message, "failed authentication")
    })
  )

  it.scopedLive("a peer whose Hello names another node than the key it proved in the handshake is refused", () =>
    Effect.gen(function* () {
      const b = yield* secureNode({ reconnectRetries: 0 })
      // the Hello says one identity, the Noise session proves another key
      const liar = yield* startNode(
        { reconnectRetries: 0 },
        {
          identity: NodeIdentity.layerKeys(generateKeys()),
          secure: Layer.succeed(SecureSession, noiseSession(generateKeys(), NetworkSettings.make({})))
        }
      )
      const refused = yield* Effect.flip(liar.dial("127.0.0.1", b.port))
      assert.include(refused.message, "secure session authenticated")
      assert.isTrue(Either.isLeft(yield* Effect.either(b.channel(liar.id))))
    })
  )

  it.scopedLive("a noise node does not fall back to plain text with a plain peer", () =>
    Effect.gen(function* () {
      const a = yield* secureNode({ reconnectRetries: 0 })
      const plain = yield* startNode({ reconnectRetries: 0, session: "plain" })
      const trusted = yield* Effect.either(
        a.dial("127.0.0.1", plain.port).pipe(Effect.flatMap((channel) => channel.awaitTrusted))
      )
      assert.isTrue(Either.isLeft(trusted))
    })
  )

  it.scopedLive("a handshake that stalls fails with HandshakeFailed after the timeout", () =>
    Effect.gen(function* () {
      const silent = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const server = net.createServer(() => {})
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (s) => Effect.sync(() => s.close())
      )
      const socket = net.connect({ host: "127.0.0.1", port: (silent.address() as net.AddressInfo).port })
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
      const session = noiseSession(generateKeys(), settingsFor, { handshakeTimeoutMillis: 100 })
      const stream = socketStream(socket)
      const result = yield* Effect.either(session.upgrade(stream, "initiator", opening(stream)))
      assert.isTrue(Either.isLeft(result) && result.left._tag === "HandshakeFailed")
      if (Either.isLeft(result)) assert.include(result.left.message, "did not complete")
    })
  )

  it.scopedLive("each side learns the NodeId the peer proved in the handshake", () =>
    Effect.gen(function* () {
      const { client, server } = yield* socketPair
      const [ka, kb] = [generateKeys(), generateKeys()]
      const [sa, sb] = [yield* sessionFor(ka), yield* sessionFor(kb)]
      const [ca, cb] = [socketStream(client), socketStream(server)]
      const [ta, tb] = yield* Effect.all(
        [sa.upgrade(ca, "initiator", opening(ca)), sb.upgrade(cb, "responder", opening(cb))],
        { concurrency: 2 }
      )
      assert.strictEqual((ta as SecureByteStream).remoteNodeId, kb.id)
      assert.strictEqual((tb as SecureByteStream).remoteNodeId, ka.id)
    })
  )

  it.scopedLive("a stream cut in the middle of a transport frame ends with a typed error", () =>
    Effect.gen(function* () {
      const { client, server } = yield* socketPair
      const raw = socketStream(client)
      const [sa, sb] = [yield* sessionFor(generateKeys()), yield* sessionFor(generateKeys())]
      const other = socketStream(server)
      const [, tb] = yield* Effect.all(
        [sa.upgrade(raw, "initiator", opening(raw)), sb.upgrade(other, "responder", opening(other))],
        { concurrency: 2 }
      )
      const ended = yield* Deferred.make<ConnectionLost>()
      tb.receive({ onData: () => {}, onEnd: (reason) => Deferred.unsafeDone(ended, Effect.succeed(reason)) })
      const header = Buffer.alloc(2)
      header.writeUInt16BE(100, 0)
      yield* raw.write([header, Buffer.alloc(10)])
      yield* raw.destroy
      const reason = yield* Deferred.await(ended)
      assert.instanceOf(reason, ConnectionLost)
      assert.include(reason.message, "truncated")
    })
  )
})
