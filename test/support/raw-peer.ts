/**
 * A hand-driven peer for protocol tests: a plain TCP socket to a node on 127.0.0.1 that writes whatever bytes a
 * test gives it and decodes what the node sends back. It can run the real opening (preamble, Hello, the default
 * trust handshake) so a test holds a trusted connection on which to misbehave.
 */
import { Data, Deferred, Effect, Either, Option, Queue, Stream } from "effect"
import type { Scope } from "effect"
import * as crypto from "node:crypto"
import * as net from "node:net"
import type { PeerChannel } from "../../src/actors/PeerChannel.js"
import type { NodeKeys } from "../../src/layers/NodeIdentity.js"
import { generateKeys } from "../../src/layers/NodeIdentity.js"
import type { PeerNetwork } from "../../src/layers/PeerNetwork.js"
import { transcript } from "../../src/layers/TrustHandshake.js"
import { HandshakeProof, HandshakeVerdict, Hello } from "../../src/schema/handshake.js"
import type { NodeId, Port } from "../../src/schema/ids.js"
import type { FrameValue } from "../../src/schema/wire.js"
import {
  decodeBody,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameReader,
  parsePreamble,
  preamble,
  PREAMBLE_LENGTH,
  PROTOCOL_VERSION
} from "../../src/schema/wire.js"

/** The node closed the connection (or it failed) before the expected bytes arrived. */
export class RawClosed extends Data.TaggedError("RawClosed")<{ readonly detail: string }> {}

/** How the connection ended, seen from the raw peer: `error` is set when it was reset rather than closed. */
export interface RawCloseInfo {
  readonly error: string | undefined
}

type Incoming =
  { readonly _tag: "Frame"; readonly value: FrameValue } | { readonly _tag: "Closed"; readonly detail: string }

export interface RawPeer {
  readonly keys: NodeKeys
  readonly socket: net.Socket
  /** Writes the chunks as one buffer; resumes once the kernel took them or the socket refused them (never fails). */
  readonly write: (...chunks: ReadonlyArray<Uint8Array>) => Effect.Effect<void>
  /** Writes one chunk, waiting for "drain" when the socket's buffer is full (sender-side back-pressure). */
  readonly writePaced: (chunk: Uint8Array) => Effect.Effect<void>
  /** Half-closes the connection (sends FIN). */
  readonly end: Effect.Effect<void>
  /** The protocol version in the node's preamble. */
  readonly remotePreamble: Effect.Effect<number, RawClosed>
  /** The next frame the node sent after its preamble. */
  readonly next: Effect.Effect<FrameValue, RawClosed>
  /** Skips frames until one of kind `tag`. */
  readonly nextOf: <T extends FrameValue["_tag"]>(tag: T) => Effect.Effect<Extract<FrameValue, { _tag: T }>, RawClosed>
  /** Resolves when the socket has closed. */
  readonly closed: Effect.Effect<RawCloseInfo>
  /** Bytes received from the node so far. */
  readonly bytesReceived: () => number
}

/** Connects to 127.0.0.1:`port`; the socket is destroyed when the scope closes. */
export const connectRaw = (port: number): Effect.Effect<RawPeer, never, Scope.Scope> =>
  Effect.gen(function* () {
    const incoming = yield* Queue.unbounded<Incoming>()
    const closed = yield* Deferred.make<RawCloseInfo>()
    const version = yield* Deferred.make<number, RawClosed>()
    const socket = yield* Effect.acquireRelease(
      Effect.async<net.Socket>((resume) => {
        const s = net.connect({ host: "127.0.0.1", port })
        s.once("connect", () => resume(Effect.succeed(s)))
        s.once("error", (e) => resume(Effect.dieMessage(`raw peer could not connect: ${e.message}`)))
      }),
      (s) => Effect.sync(() => s.destroy())
    )
    const keys = generateKeys()
    let head = Buffer.alloc(0)
    let received = 0
    let lastError: string | undefined
    const reader = new FrameReader(DEFAULT_MAX_FRAME_BYTES)
    const onBody = (body: Uint8Array) => {
      const decoded = decodeBody(body)
      if (Either.isLeft(decoded)) {
        incoming.unsafeOffer({ _tag: "Closed", detail: `node sent an undecodable frame: ${decoded.left.message}` })
        socket.destroy()
        return
      }
      incoming.unsafeOffer({ _tag: "Frame", value: decoded.right })
    }
    socket.on("data", (chunk: Buffer) => {
      received += chunk.length
      let rest: Uint8Array = chunk
      if (head.length < PREAMBLE_LENGTH) {
        head = Buffer.concat([head, chunk])
        if (head.length < PREAMBLE_LENGTH) return
        const parsed = parsePreamble(head.subarray(0, PREAMBLE_LENGTH))
        Deferred.unsafeDone(
          version,
          Either.isRight(parsed)
            ? Effect.succeed(parsed.right.version)
            : Effect.fail(new RawClosed({ detail: parsed.left }))
        )
        rest = head.subarray(PREAMBLE_LENGTH)
      }
      const tooLarge = reader.push(rest, onBody)
      if (tooLarge !== undefined) socket.destroy()
    })
    socket.on("error", (e) => {
      lastError = e.message
    })
    socket.once("close", () => {
      const detail = lastError ?? "closed by the node"
      Deferred.unsafeDone(version, Effect.fail(new RawClosed({ detail })))
      incoming.unsafeOffer({ _tag: "Closed", detail })
      Deferred.unsafeDone(closed, Effect.succeed({ error: lastError }))
    })

    const next: Effect.Effect<FrameValue, RawClosed> = Effect.flatMap(Queue.take(incoming), (item) => {
      if (item._tag === "Frame") return Effect.succeed(item.value)
      // keep the end marker for whoever asks next
      incoming.unsafeOffer(item)
      return Effect.fail(new RawClosed({ detail: item.detail }))
    })
    const nextOf = <T extends FrameValue["_tag"]>(tag: T) =>
      Effect.gen(function* () {
        // bounded by the connection: `next` fails once it has closed
        while (true) {
          const value = yield* next
          if (value._tag === tag) return value as Extract<FrameValue, { _tag: T }>
        }
      })

    return {
      keys,
      socket,
      write: (...chunks) =>
        Effect.async<void>((resume) => {
          socket.write(Buffer.concat(chunks), () => resume(Effect.void))
        }),
      writePaced: (chunk) =>
        Effect.async<void>((resume) => {
          if (socket.destroyed) return resume(Effect.void)
          if (socket.write(chunk)) return resume(Effect.void)
          const done = () => {
            socket.off("drain", done)
            socket.off("close", done)
            resume(Effect.void)
          }
          socket.on("drain", done)
          socket.on("close", done)
        }),
      end: Effect.async<void>((resume) => {
        socket.end(() => resume(Effect.void))
      }),
      remotePreamble: Deferred.await(version),
      next,
      nextOf,
      closed: Deferred.await(closed),
      bytesReceived: () => received
    } satisfies RawPeer
  })

/** The two Hellos of a connection, as the raw peer sent and received them. */
export interface Hellos {
  readonly local: Hello
  readonly remote: Hello
}

/**
 * Sends the preamble and a Hello, and reads the node's: the connection-opening sequence of docs/protocol.md.
 * `claim` puts another NodeId in the Hello than the one the peer's key proves (an impostor).
 */
export const sayHello = (peer: RawPeer, options: { readonly network?: string; readonly claim?: NodeId } = {}) =>
  Effect.gen(function* () {
    const local = Hello.make({
      version: PROTOCOL_VERSION,
      network: options.network ?? "p2pnet",
      nodeId: options.claim ?? peer.keys.id,
      publicKey: Buffer.from(peer.keys.publicKey).toString("base64"),
      nonce: crypto.randomBytes(32).toString("base64"),
      listenPort: 0 as Port
    })
    yield* peer.write(preamble(), encodeFrame(local))
    yield* peer.remotePreamble
    const first = yield* peer.next
    if (first._tag !== "Hello") return yield* Effect.dieMessage(`expected the node's Hello, got ${first._tag}`)
    return { local, remote: first } satisfies Hellos
  })

/** Runs the default trust handshake (layers/TrustHandshake.ts) from the raw peer's side. */
export const proveTrust = (peer: RawPeer, hellos: Hellos, network = "p2pnet") =>
  Effect.gen(function* () {
    const data = transcript(network, hellos.local, hellos.remote)
    yield* peer.write(
      encodeFrame(
        HandshakeProof.make({
          signature: Buffer.from(peer.keys.sign(data)).toString("base64"),
          networkMac: ""
        })
      )
    )
    yield* peer.nextOf("HandshakeProof")
    const verdict = yield* peer.nextOf("HandshakeVerdict")
    if (!verdict.accepted) return yield* Effect.dieMessage(`the node refused the raw peer: ${verdict.reason}`)
    yield* peer.write(encodeFrame(HandshakeVerdict.make({ accepted: true, reason: "ok" })))
  })

/**
 * A raw peer with a trusted channel on `node`: returns the peer and the node's side of the channel, once the node
 * has announced that channel as trusted.
 */
export const trustedRawPeer = (node: PeerNetwork["Type"]) =>
  Effect.gen(function* () {
    const events = yield* node.registry.subscribeEvents
    const peer = yield* connectRaw(node.port)
    const hellos = yield* sayHello(peer)
    yield* proveTrust(peer, hellos)
    const trusted = yield* events.pipe(
      Stream.filterMap((e) =>
        e._tag === "ChannelStateChanged" && e.channel.remoteId === peer.keys.id && e.state === "trusted"
          ? Option.some(e.channel)
          : Option.none()
      ),
      Stream.runHead
    )
    const channel: PeerChannel = Option.getOrThrow(trusted)
    return { peer, channel }
  }).pipe(Effect.orDie)

/** A frame with any JSON header and attachment, valid or not: body length, header length, header, attachment. */
export const rawFrame = (header: unknown, attachment: Uint8Array = new Uint8Array(0)): Buffer =>
  rawFrameBytes(Buffer.from(JSON.stringify(header), "utf8"), attachment)

/** A frame whose header is the given bytes (which need not be JSON). */
export const rawFrameBytes = (header: Uint8Array, attachment: Uint8Array = new Uint8Array(0)): Buffer => {
  const frame = Buffer.alloc(8 + header.length + attachment.length)
  frame.writeUInt32BE(4 + header.length + attachment.length, 0)
  frame.writeUInt32BE(header.length, 4)
  frame.set(header, 8)
  frame.set(attachment, 8 + header.length)
  return frame
}

/** Just a 4-byte big-endian length prefix. */
export const lengthPrefix = (length: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(length, 0)
  return b
}
