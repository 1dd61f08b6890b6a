/**
 * Noise transport messages after the handshake (Noise spec §5.1, §11.3): each message is a u16 big-endian length,
 * then ChaCha20-Poly1305 ciphertext and its 16-byte tag, encrypted with node:crypto under the key from the handshake's
 * Split(), nonce = 4 zero bytes + 64-bit little-endian counter, empty associated data. Every `rekeyInterval` messages
 * per direction both sides REKEY (key = first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros)).
 *
 * Writes pack the chunks given into messages of at most 65,519 plaintext bytes; a large payload is encrypted slice by
 * slice as it lies in memory (never concatenated as a whole), and many small frames share one message. Reads decrypt a
 * message only once it is complete and hand plaintext to the framing only after its tag verified: a flipped bit, a
 * replayed, reordered or truncated message ends the stream with ConnectionLost and destroys the socket.
 */
import { Effect } from "effect"
import * as crypto from "node:crypto"
import type { ByteStream, Receiver } from "../actors/Connection.js"
import { ConnectionLost } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"

/** Noise caps every message at 65535 bytes; 16 of them are the Poly1305 tag. */
export const MAX_MESSAGE = 65535
const TAG = 16
export const MAX_PLAINTEXT = MAX_MESSAGE - TAG
const ALGORITHM = "chacha20-poly1305"
const REKEY_NONCE = Buffer.concat([Buffer.alloc(4), Buffer.alloc(8, 0xff)])

/** One direction's Noise CipherState: key, counter, rekey. */
export class NoiseCipher {
  private key: Buffer
  private n = 0
  private readonly nonce = Buffer.alloc(12)
  constructor(
    key: Uint8Array,
    readonly rekeyInterval: number = 2 ** 20
  ) {
    this.key = Buffer.from(key)
  }
  /** Messages processed so far. */
  get count() {
    return this.n
  }
  /** How many times the key was replaced. */
  get rekeys() {
    return this.n === 0 ? 0 : Math.floor((this.n - 1) / this.rekeyInterval)
  }
  private nextNonce(): Buffer {
    if (this.n > 0 && this.n % this.rekeyInterval === 0) this.rekey()
    this.nonce.writeUInt32LE(this.n >>> 0, 4)
    this.nonce.writeUInt32LE(Math.floor(this.n / 2 ** 32), 8)
    this.n++
    return this.nonce
  }
  private rekey() {
    const c = crypto.createCipheriv(ALGORITHM, this.key, REKEY_NONCE, { authTagLength: TAG })
    this.key = c.update(Buffer.alloc(32))
    c.final()
  }
  /** Encrypts `pieces` as one message, appending the ciphertext pieces and the tag to `out`. */
  seal(pieces: ReadonlyArray<Uint8Array>, out: Array<Uint8Array>): void {
    // the nonce first: reaching a rekey boundary replaces this.key, which this message must already use
    const nonce = this.nextNonce()
    const c = crypto.createCipheriv(ALGORITHM, this.key, nonce, { authTagLength: TAG })
    for (const p of pieces) out.push(c.update(p))
    c.final()
    out.push(c.getAuthTag())
  }
  /** Decrypts one message given as pieces and its tag; undefined when it does not authenticate. */
  open(pieces: ReadonlyArray<Uint8Array>, tag: Uint8Array): Array<Buffer> | undefined {
    const nonce = this.nextNonce()
    const d = crypto.createDecipheriv(ALGORITHM, this.key, nonce, { authTagLength: TAG })
    d.setAuthTag(tag)
    const plain = pieces.map((p) => d.update(p))
    try {
      d.final()
    } catch {
      return undefined
    }
    return plain
  }
  encrypt(plaintext: Uint8Array): Buffer {
    const out: Array<Uint8Array> = []
    this.seal([plaintext], out)
    return Buffer.concat(out)
  }
  decrypt(ciphertext: Uint8Array): Buffer | undefined {
    if (ciphertext.length < TAG) return undefined
    const plain = this.open([ciphertext.subarray(0, ciphertext.length - TAG)], ciphertext.subarray(-TAG))
    return plain === undefined ? undefined : Buffer.concat(plain)
  }
}

/** What the handshake proved about the peer. */
export interface SessionPeer {
  readonly nodeId: NodeId
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array
  /** The network the peer proved it belongs to (checked against this node's, with the network key when set). */
  readonly network: string
}

/** A ByteStream after a Noise handshake: it also tells which node the peer proved to be. */
export interface SecureByteStream extends ByteStream {
  readonly remoteNodeId: NodeId
  readonly peer: SessionPeer
}

/** A queue of received chunks from which exact byte counts are taken as subarrays (no copying). */
class Chunks {
  private list: Array<Buffer> = []
  length = 0
  push(chunk: Uint8Array) {
    this.list.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    this.length += chunk.length
  }
  take(n: number): Array<Buffer> {
    const out: Array<Buffer> = []
    this.length -= n
    while (n > 0) {
      const head = this.list[0]!
      if (head.length <= n) {
        out.push(head)
        this.list.shift()
        n -= head.length
      } else {
        out.push(head.subarray(0, n))
        this.list[0] = head.subarray(n)
        n = 0
      }
    }
    return out
  }
}
const contiguous = (pieces: ReadonlyArray<Buffer>): Buffer =>
  pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces as Array<Buffer>)

const u16 = (n: number) => {
  const b = Buffer.allocUnsafe(2)
  b.writeUInt16BE(n, 0)
  return b
}

/** Wraps `stream` in Noise transport messages with `tx` / `rx`. */
export const secureTransport = (
  stream: ByteStream,
  peer: SessionPeer,
  tx: NoiseCipher,
  rx: NoiseCipher
): SecureByteStream => {
  let receiver: Receiver | undefined
  const held: Array<Uint8Array> = []
  let ended: ConnectionLost | undefined
  const input = new Chunks()
  let need = -1
  const end = (reason: ConnectionLost) => {
    if (ended !== undefined) return
    ended = reason
    stream.receive(undefined)
    Effect.runFork(stream.destroy)
    receiver?.onEnd(reason)
  }
  const deliver = (plain: Uint8Array) => {
    if (plain.length === 0) return
    if (receiver !== undefined) receiver.onData(plain)
    else held.push(plain)
  }
  const inner: Receiver = {
    onData: (chunk) => {
      input.push(chunk)
      while (ended === undefined) {
        if (need < 0) {
          if (input.length < 2) return
          need = contiguous(input.take(2)).readUInt16BE(0)
          if (need < TAG) return end(new ConnectionLost({ detail: `noise: message of ${need} bytes is too short` }))
        }
        if (input.length < need) return
        const body = input.take(need - TAG)
        const tag = contiguous(input.take(TAG))
        need = -1
        const plain = rx.open(body, tag)
        if (plain === undefined) {
          return end(
            new ConnectionLost({ detail: "noise: message failed authentication (tampered, replayed or reordered)" })
          )
        }
        for (const p of plain) deliver(p)
      }
    },
    onEnd: (reason) =>
      end(
        input.length > 0 || need >= 0
          ? new ConnectionLost({ detail: `noise: stream truncated inside a message (${reason.detail})` })
          : reason
      )
  }
  const encrypt = (chunks: ReadonlyArray<Uint8Array>): Array<Uint8Array> => {
    const out: Array<Uint8Array> = []
    let pieces: Array<Uint8Array> = []
    let size = 0
    const seal = () => {
      if (size === 0) return
      out.push(u16(size + TAG))
      // many small frames are gathered into one buffer (at most one message, 64 KiB); large slices go as they are
      tx.seal(pieces.length > 3 ? [Buffer.concat(pieces, size)] : pieces, out)
      pieces = []
      size = 0
    }
    for (const chunk of chunks) {
      for (let at = 0; at < chunk.length;) {
        const n = Math.min(MAX_PLAINTEXT - size, chunk.length - at)
        pieces.push(n === chunk.length ? chunk : chunk.subarray(at, at + n))
        size += n
        at += n
        if (size === MAX_PLAINTEXT) seal()
      }
    }
    seal()
    return out
  }
  const writeLock = Effect.unsafeMakeSemaphore(1)
  stream.receive(inner)
  return {
    remoteNodeId: peer.nodeId,
    peer,
    remoteAddress: stream.remoteAddress,
    remotePort: stream.remotePort,
    // one writer at a time from encryption to the socket, so concurrent writers cannot send nonces out of order
    write: (chunks) =>
      writeLock.withPermits(1)(
        Effect.suspend(() => (ended !== undefined ? Effect.fail(ended) : stream.write(encrypt(chunks))))
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
