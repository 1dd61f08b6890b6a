/**
 * An opt-in SecureSession: a Noise XX handshake (X25519, ChaChaPoly, BLAKE2b, from `noise-handshake`) after the
 * plain preamble, then every byte goes in transport frames (u32 length + ciphertext). The handshake payload binds the
 * Noise static key to the node's Ed25519 identity, so the returned stream knows the peer's NodeId (`remoteNodeId`).
 * Not the default yet (issue 7): pass `secure: noiseSessionLayer(keys)` to networkLayer on both sides.
 */
import { Effect, Layer } from "effect"
// @ts-expect-error noise-handshake ships no type declarations
import NoiseState from "noise-handshake"
// @ts-expect-error noise-handshake ships no type declarations
import CipherState from "noise-handshake/cipher"
// @ts-expect-error noise-handshake ships no type declarations
import curve from "noise-handshake/dh"
import type { ByteStream, Receiver } from "../actors/Connection.js"
import { ConnectionLost, HandshakeFailed } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import type { NodeKeys } from "./NodeIdentity.js"
import { nodeIdFromPublicKey, verifySignature } from "./NodeIdentity.js"
import { SecureSession } from "./SecureSession.js"

/** Noise caps every message (handshake or transport) at 65535 bytes; 16 of them are the Poly1305 tag. */
const MAX_MESSAGE = 65535
const MAX_PLAINTEXT = MAX_MESSAGE - 16
/** What the Ed25519 key signs: a domain label then the Noise static public key. */
const BINDING_LABEL = Buffer.from("effect-p2pnet noise static key v1:")

interface Cipher {
  readonly encrypt: (plaintext: Uint8Array) => Buffer
  readonly decrypt: (ciphertext: Uint8Array) => Buffer
}
interface Handshake {
  readonly initialise: (prologue: Uint8Array) => void
  readonly send: (payload?: Uint8Array) => Buffer
  readonly recv: (message: Uint8Array) => Buffer
  readonly rs: Buffer | null
  readonly rx: Buffer
  readonly tx: Buffer
}
interface KeyPair {
  readonly publicKey: Buffer
  readonly secretKey: Buffer
}
const newHandshake = (initiator: boolean, staticKeys: KeyPair): Handshake => new NoiseState("XX", initiator, staticKeys)
const newCipher = (key: Buffer): Cipher => new CipherState(key)

/** A ByteStream after a Noise handshake: it also tells which node the peer proved to be. */
export interface SecureByteStream extends ByteStream {
  readonly remoteNodeId: NodeId
}

export interface NoiseOptions {
  /** A handshake that has not completed after this long fails with HandshakeFailed (default 10 s). */
  readonly handshakeTimeoutMillis?: number
}

const lengthPrefix = (n: number) => {
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE(n, 0)
  return b
}

/** Reads one length-prefixed handshake message; bytes after it are handed back to the stream for the next reader. */
const readMessage = (stream: ByteStream) =>
  Effect.async<Buffer, ConnectionLost | HandshakeFailed>((resume) => {
    let buf = Buffer.alloc(0)
    stream.receive({
      onData: (chunk) => {
        buf = buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([buf, chunk])
        if (buf.length < 4) return
        const len = buf.readUInt32BE(0)
        if (len > MAX_MESSAGE) {
          stream.receive(undefined)
          return resume(Effect.fail(new HandshakeFailed({ reason: `noise handshake message of ${len} bytes` })))
        }
        if (buf.length < 4 + len) return
        stream.receive(undefined, buf.subarray(4 + len))
        resume(Effect.succeed(buf.subarray(4, 4 + len)))
      },
      onEnd: (reason) => resume(Effect.fail(reason))
    })
    return Effect.sync(() => stream.receive(undefined))
  })

const identityPayload = (keys: NodeKeys, staticKey: Uint8Array) =>
  Buffer.concat([keys.publicKey, keys.sign(Buffer.concat([BINDING_LABEL, staticKey]))])

/** Checks the peer's payload: its Ed25519 key signed the Noise static key the handshake authenticated. */
const checkIdentity = (payload: Buffer, remoteStatic: Buffer | null): NodeId | undefined => {
  if (payload.length !== 96 || remoteStatic === null) return undefined
  const publicKey = payload.subarray(0, 32)
  const ok = verifySignature(publicKey, Buffer.concat([BINDING_LABEL, remoteStatic]), payload.subarray(32))
  return ok ? nodeIdFromPublicKey(publicKey) : undefined
}

const handshake = (stream: ByteStream, role: "initiator" | "responder", keys: NodeKeys, staticKeys: KeyPair) =>
  Effect.gen(function* () {
    const noise = newHandshake(role === "initiator", staticKeys)
    const step = <A>(f: () => A) =>
      Effect.try({
        try: f,
        catch: (e) => new HandshakeFailed({ reason: `noise: ${e instanceof Error ? e.message : String(e)}` })
      })
    const send = (payload?: Uint8Array) =>
      step(() => noise.send(payload)).pipe(Effect.flatMap((m) => stream.write([lengthPrefix(m.length), m])))
    const recv = readMessage(stream).pipe(Effect.flatMap((m) => step(() => noise.recv(m))))
    const verify = (payload: Buffer) => {
      const id = checkIdentity(payload, noise.rs)
      return id === undefined
        ? Effect.fail(new HandshakeFailed({ reason: "noise: peer's identity signature does not match its static key" }))
        : Effect.succeed(id)
    }
    yield* step(() => noise.initialise(Buffer.alloc(0)))
    const mine = identityPayload(keys, staticKeys.publicKey)
    if (role === "initiator") {
      yield* send()
      const remote = yield* recv.pipe(Effect.flatMap(verify))
      yield* send(mine)
      return { remote, tx: newCipher(noise.tx), rx: newCipher(noise.rx) }
    }
    yield* recv
    yield* send(mine)
    const remote = yield* recv.pipe(Effect.flatMap(verify))
    return { remote, tx: newCipher(noise.tx), rx: newCipher(noise.rx) }
  })

/**
 * Wraps `stream` in transport frames. Any frame that fails to decrypt (a flipped bit, a replayed, reordered or
 * truncated frame: the nonce counter makes them all authentication failures) ends the stream with ConnectionLost and
 * destroys the socket.
 */
const transport = (stream: ByteStream, remoteNodeId: NodeId, tx: Cipher, rx: Cipher): SecureByteStream => {
  let receiver: Receiver | undefined
  const held: Array<Uint8Array> = []
  let ended: ConnectionLost | undefined
  let buf = Buffer.alloc(0)
  const end = (reason: ConnectionLost) => {
    if (ended !== undefined) return
    ended = reason
    stream.receive(undefined)
    Effect.runFork(stream.destroy)
    receiver?.onEnd(reason)
  }
  const deliver = (plain: Uint8Array) => {
    if (receiver !== undefined) receiver.onData(plain)
    else held.push(plain)
  }
  const inner: Receiver = {
    onData: (chunk) => {
      buf = buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([buf, chunk])
      while (ended === undefined && buf.length >= 4) {
        const len = buf.readUInt32BE(0)
        if (len > MAX_MESSAGE || len < 16) return end(new ConnectionLost({ detail: `noise: bad frame length ${len}` }))
        if (buf.length < 4 + len) return
        const frame = buf.subarray(4, 4 + len)
        buf = buf.subarray(4 + len)
        let plain: Buffer
        try {
          plain = rx.decrypt(frame)
        } catch {
          return end(
            new ConnectionLost({ detail: "noise: frame failed authentication (tampered, replayed or reordered)" })
          )
        }
        deliver(plain)
      }
    },
    onEnd: (reason) =>
      end(
        buf.length > 0 ? new ConnectionLost({ detail: `noise: stream truncated mid-frame (${reason.detail})` }) : reason
      )
  }
  const encryptAll = (chunks: ReadonlyArray<Uint8Array>): Array<Uint8Array> => {
    const out: Array<Uint8Array> = []
    for (const chunk of chunks) {
      for (let at = 0; at < chunk.length; at += MAX_PLAINTEXT) {
        const ct = tx.encrypt(chunk.subarray(at, Math.min(chunk.length, at + MAX_PLAINTEXT)))
        out.push(lengthPrefix(ct.length), ct)
      }
    }
    return out
  }
  const writeLock = Effect.unsafeMakeSemaphore(1)
  stream.receive(inner)
  return {
    remoteNodeId,
    remoteAddress: stream.remoteAddress,
    remotePort: stream.remotePort,
    // one writer at a time from encryption to the socket, so concurrent writers cannot send nonces out of order
    write: (chunks) =>
      writeLock.withPermits(1)(
        Effect.suspend(() => (ended !== undefined ? Effect.fail(ended) : stream.write(encryptAll(chunks))))
      ),
    receive: (r, unread) => {
      receiver = r
      if (r === undefined) {
        if (unread !== undefined && unread.length > 0) held.unshift(unread)
        // hold ciphertext in the socket until a receiver is back
        if (ended === undefined) stream.receive(undefined)
        return
      }
      while (held.length > 0 && receiver === r) r.onData(held.shift()!)
      if (receiver !== r) return
      if (ended !== undefined) r.onEnd(ended)
      else stream.receive(inner)
    },
    pause: stream.pause,
    resume: stream.resume,
    destroy: stream.destroy,
    bytesWritten: stream.bytesWritten
  }
}

/**
 * A SecureSession running Noise XX bound to `keys`. Both sides must use it; a plain peer fails the handshake.
 *
 * @example
 * const keys = generateKeys()
 * networkLayer({ identity: NodeIdentity.layerKeys(keys), secure: noiseSessionLayer(keys) })
 */
export const noiseSessionLayer = (keys: NodeKeys, options: NoiseOptions = {}): Layer.Layer<SecureSession> =>
  Layer.sync(SecureSession, () => {
    // one static Noise key per node run; forward secrecy comes from the per-handshake ephemeral keys
    const staticKeys: KeyPair = curve.generateKeyPair()
    const timeout = options.handshakeTimeoutMillis ?? 10_000
    return SecureSession.of({
      name: "noise",
      upgrade: (stream, role) =>
        handshake(stream, role, keys, staticKeys).pipe(
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => new HandshakeFailed({ reason: `noise handshake did not complete in ${timeout} ms` })
          }),
          Effect.map(({ remote, rx, tx }): ByteStream => transport(stream, remote, tx, rx)),
          Effect.withSpan("NoiseSession.handshake", { attributes: { role } })
        )
    })
  })
