/**
 * Session-level fixtures for the Noise tests: socket pairs and raw clients on 127.0.0.1, the opening a session gets
 * from Link.establish, both sides of a handshake run at once, and a sending/receiving secureTransport pair over
 * memory streams for the unit tests of the transport.
 */
import { Deferred, Effect, FiberId } from "effect"
import * as crypto from "node:crypto"
import * as net from "node:net"
import { socketStream } from "../../src/actors/Connection.js"
import type { ByteStream } from "../../src/actors/Connection.js"
import { generateKeys } from "../../src/layers/NodeIdentity.js"
import { NoiseCipher, secureTransport } from "../../src/layers/NoiseTransport.js"
import type { SessionPeer } from "../../src/layers/NoiseTransport.js"
import type { Opening, SecureSession } from "../../src/layers/SecureSession.js"
import type { ConnectionLost } from "../../src/schema/errors.js"
import type { NodeId } from "../../src/schema/ids.js"
import { decodeBody, preamble, PROTOCOL_VERSION } from "../../src/schema/wire.js"
import { memoryStream, recordingStream } from "./noise-streams.js"

/** Two connected sockets on 127.0.0.1, closed with the scope. */
export const socketPair = Effect.acquireRelease(
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

/** A raw TCP client of `port` that records what it receives and tells when the other side closes. */
export const rawClient = (port: number) =>
  Effect.acquireRelease(
    Effect.async<{ socket: net.Socket; received: Array<Buffer>; closed: Deferred.Deferred<void> }>((resume) => {
      const received: Array<Buffer> = []
      const closed = Deferred.unsafeMake<void>(FiberId.none)
      const socket = net.connect({ host: "127.0.0.1", port }, () =>
        resume(Effect.succeed({ socket, received, closed }))
      )
      socket.on("data", (chunk: Buffer) => received.push(Buffer.from(chunk)))
      socket.on("close", () => Deferred.unsafeDone(closed, Effect.void))
      socket.on("error", () => {})
    }),
    (c) => Effect.sync(() => c.socket.destroy())
  )

/** What Link.establish gives a session: the preamble and a read of the remote's (these tests do not check it). */
export const opening = (stream: ByteStream, extra: Partial<Opening> = {}): Opening => ({
  preamble: preamble(PROTOCOL_VERSION, "noise"),
  remotePreamble: () =>
    Effect.asVoid(
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
    ),
  ...extra
})

/** Runs both sides of a Noise handshake over a fresh socket pair; each result is the side's own outcome. */
export const upgradeBoth = (
  initiator: SecureSession["Type"],
  responder: SecureSession["Type"],
  options: { readonly expectedPeer?: NodeId; readonly record?: Array<Buffer> } = {}
) =>
  Effect.gen(function* () {
    const { client, server } = yield* socketPair
    const raw = socketStream(client)
    const ca = options.record === undefined ? raw : recordingStream(raw, options.record)
    const cb = socketStream(server)
    const extra = options.expectedPeer === undefined ? {} : { expectedPeer: options.expectedPeer }
    return yield* Effect.all(
      [
        // the initiator's message 3 leads its first write: an empty write sends it
        Effect.either(initiator.upgrade(ca, "initiator", opening(raw, extra)).pipe(Effect.tap((s) => s.write([])))),
        Effect.either(responder.upgrade(cb, "responder", opening(cb)))
      ],
      { concurrency: 2 }
    )
  })

/** Everything a stream delivers, and how it ended. */
export const collect = (stream: ByteStream) =>
  Effect.gen(function* () {
    const data: Array<Buffer> = []
    const ended = yield* Deferred.make<ConnectionLost>()
    const arrived = yield* Deferred.make<void>()
    stream.receive({
      onData: (chunk) => {
        data.push(Buffer.from(chunk))
        Deferred.unsafeDone(arrived, Effect.void)
      },
      onEnd: (reason) => Deferred.unsafeDone(ended, Effect.succeed(reason))
    })
    return { data, ended, arrived }
  })

/** The frames laid end to end in `bytes`, each decoded (Right) or why not (Left). */
export const frameValues = (bytes: Buffer) => {
  const values = []
  for (let at = 0; at + 4 <= bytes.length;) {
    const len = bytes.readUInt32BE(at)
    values.push(decodeBody(bytes.subarray(at + 4, at + 4 + len)))
    at += 4 + len
  }
  return values
}

export const somePeer: SessionPeer = { nodeId: generateKeys().id, publicKey: new Uint8Array(32), network: "p2pnet" }

/** A sending and a receiving secureTransport over memory streams, keyed alike. */
export const transportPair = (key: Buffer, rekeyInterval?: number) => {
  const out = memoryStream()
  const inn = memoryStream()
  const [tx, rx] = [new NoiseCipher(key, rekeyInterval), new NoiseCipher(key, rekeyInterval)]
  const sender = secureTransport(out.stream, somePeer, tx, new NoiseCipher(crypto.randomBytes(32)))
  const receiver = secureTransport(inn.stream, somePeer, new NoiseCipher(crypto.randomBytes(32)), rx)
  const delivered: Array<Buffer> = []
  let ended: ConnectionLost | undefined
  receiver.receive({
    onData: (c) => delivered.push(Buffer.from(c)),
    onEnd: (r) => {
      ended = r
    }
  })
  return {
    send: (chunks: ReadonlyArray<Uint8Array>) => Effect.runSync(sender.write(chunks)),
    wire: () => Buffer.concat(out.written),
    feed: inn.feed,
    end: inn.end,
    delivered: () => Buffer.concat(delivered),
    ended: () => ended,
    receiverDestroyed: inn.destroyed
  }
}
