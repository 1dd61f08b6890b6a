/**
 * Noise transport messages after the handshake (Noise spec §5.1, §11.3): each message is a u16 big-endian length,
 * then ChaCha20-Poly1305 (IETF) ciphertext and its 16-byte tag under the key from the handshake's Split(), nonce = 4
 * zero bytes + 64-bit little-endian counter, empty associated data. Every `rekeyInterval` messages per direction both
 * sides REKEY (key = first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros)). The AEAD is libsodium's (sodium-native, which
 * the handshake's noise-handshake uses too), except for large messages that arrive across socket reads, which
 * node:crypto (OpenSSL) decrypts piece by piece: the same algorithm, so the bytes on the wire do not depend on it.
 *
 * Writes pack small chunks into shared messages of at most SEND_PLAINTEXT (16 KiB) plaintext bytes (gathered and
 * encrypted in place); a large attachment is encrypted in messages of up to MAX_PLAINTEXT straight from its memory
 * (never concatenated as a whole); a batch is encrypted and written a round at a time (a round's messages sealed one
 * after another into one reused buffer, handed to the socket in one write). Reads decrypt a message once it is
 * complete, in place where it lies when it can, and hand plaintext to the framing only after its tag verified: a
 * flipped bit, a replayed, reordered or truncated message ends the stream with ConnectionLost and destroys the socket.
 */
import { Deferred, Effect, Exit, FiberId } from "effect"
import { createDecipheriv } from "node:crypto"
// @ts-expect-error sodium-native ships no type declarations
import sodium from "sodium-native"
import type { ByteStream, EarlyFrame, Receiver } from "../actors/Connection.js"
import { ConnectionLost } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"

/** Noise caps every message at 65535 bytes; 16 of them are the Poly1305 tag. */
export const MAX_MESSAGE = 65535
const TAG = 16
export const MAX_PLAINTEXT = MAX_MESSAGE - TAG
/**
 * Plaintext per message this side sends when small chunks share it (receivers accept up to MAX_PLAINTEXT). 16 KiB
 * messages mostly fall inside one 64 KiB socket read, so the receiver decrypts them where they lie.
 */
export const SEND_PLAINTEXT = 16 * 1024 - TAG
/**
 * Chunks at least this large (attachments) are sealed in messages of their own, up to MAX_PLAINTEXT bytes each,
 * straight from their memory: one libsodium call per 64 KiB instead of four.
 */
const DIRECT_BYTES = 16 * 1024
/**
 * A received message at least this large that spans socket reads is decrypted by node:crypto (OpenSSL) piece by piece
 * where it lies; any other is decrypted in place by libsodium, gathered first when it spans reads. Same algorithm,
 * same bytes: OpenSSL's vector code is faster per byte here and saves the gathering copy, but costs a cipher object
 * (a few microseconds) and a new buffer per piece, which only pays off on large messages.
 */
const STREAM_MIN = 8 * 1024
const REKEY_NONCE = Buffer.concat([Buffer.alloc(4), Buffer.alloc(8, 0xff)])
const EMPTY = Buffer.alloc(0)

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
    const out = Buffer.alloc(32 + TAG)
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(out, Buffer.alloc(32), null, null, REKEY_NONCE, this.key)
    this.key = out.subarray(0, 32)
  }
  /**
   * Encrypts `pieces` (at most MAX_PLAINTEXT bytes in all) as one transport message: a u16 length, the ciphertext and
   * its tag, in one buffer. A single piece is encrypted from where it lies; several are copied in and encrypted in
   * place.
   */
  seal(pieces: ReadonlyArray<Uint8Array>, size: number, alloc: (n: number) => Buffer = Buffer.allocUnsafe): Buffer {
    const nonce = this.nextNonce()
    const message = alloc(2 + size + TAG)
    message.writeUInt16BE(size + TAG, 0)
    // one piece is encrypted straight from where it lies; several are gathered first and encrypted in place
    let plaintext = pieces[0]!
    if (pieces.length > 1) {
      let at = 2
      for (const p of pieces) {
        message.set(p, at)
        at += p.length
      }
      plaintext = message.subarray(2, 2 + size)
    }
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(message.subarray(2), plaintext, null, null, nonce, this.key)
    return message
  }
  /**
   * Decrypts one message given as its ciphertext's pieces (where the socket's reads put them) and its tag, with
   * node:crypto (OpenSSL), nothing gathered first: the plaintext pieces, or undefined when the message does not
   * authenticate (then none of them is usable).
   */
  openStreamed(pieces: ReadonlyArray<Uint8Array>, tag: Uint8Array): Array<Buffer> | undefined {
    // the nonce first: at a rekey boundary taking it replaces the key
    const nonce = this.nextNonce()
    const decipher = createDecipheriv("chacha20-poly1305", this.key, nonce, { authTagLength: TAG })
    decipher.setAuthTag(tag)
    const out = pieces.map((p) => decipher.update(p))
    try {
      decipher.final()
    } catch {
      return undefined
    }
    return out
  }
  /**
   * Decrypts one message body (ciphertext and tag) in place; the plaintext is a view of `body`, or undefined when it
   * does not authenticate (then nothing of it is usable).
   */
  open(body: Buffer): Buffer | undefined {
    const nonce = this.nextNonce()
    if (body.length < TAG) return undefined
    const plain = body.subarray(0, body.length - TAG)
    try {
      sodium.crypto_aead_chacha20poly1305_ietf_decrypt(plain, null, body, null, nonce, this.key)
    } catch {
      return undefined
    }
    return plain
  }
  /** One message's ciphertext and tag (no length prefix). */
  encrypt(plaintext: Uint8Array): Buffer {
    return this.seal([plaintext], plaintext.length).subarray(2)
  }
  /** The plaintext of one message's ciphertext and tag, or undefined when it does not authenticate. */
  decrypt(ciphertext: Uint8Array): Buffer | undefined {
    return this.open(Buffer.from(ciphertext))
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
  /** The handshake that made it: XX, or IK (resumed with a static key known from an earlier connection). */
  readonly pattern: "XX" | "IK"
}

export interface TransportOptions {
  readonly pattern?: "XX" | "IK"
  /** Plaintext the handshake carried from the remote (an IK message 1's frames), read before any message. */
  readonly received?: Uint8Array
  /** The session carried this frame of the opening's `early` to the remote (sets ByteStream.earlySent). */
  readonly earlySent?: EarlyFrame
  /**
   * A resumed (IK) initiator: its first transport message is an empty one, the confirmation the responder waits for.
   * It leads the first write of this event-loop turn (usually a new channel's first frames, in the same socket write)
   * and goes alone at the end of the turn when nothing was written, on a stream with `writeNow` (handed over from
   * the event loop, outside any fiber). On a stream without, it goes with the first write: write `[]` to send it.
   */
  readonly sendConfirmation?: boolean
  /**
   * A resumed (IK) responder, whose remote's handshake could be a replay: `confirmed` completes once the remote's
   * first transport message authenticates, which only the live initiator can send.
   */
  readonly awaitConfirmation?: boolean
}

interface Planned {
  readonly pieces: ReadonlyArray<Uint8Array>
  readonly size: number
}
/** A round holds at most this many messages and this many plaintext bytes (always at least one message). */
const ROUND_MESSAGES = 16
const ROUND_BYTES = 256 * 1024
/** A round's buffer holds at least five full small-chunk messages (or a 64 KiB attachment's message and a head). */
const ROUND_MIN = 5 * (2 + SEND_PLAINTEXT + TAG)
/** Where the round that starts at `from` ends. */
const roundEnd = (planned: ReadonlyArray<Planned>, from: number) => {
  let to = from + 1
  let bytes = planned[from]?.size ?? 0
  while (to < planned.length && to - from < ROUND_MESSAGES && bytes + planned[to]!.size <= ROUND_BYTES) {
    bytes += planned[to++]!.size
  }
  return Math.min(to, planned.length)
}

/** A queue of received chunks from which exact byte counts are taken as subarrays (no copying). */
class Chunks {
  private list: Array<Buffer> = []
  length = 0
  push(chunk: Uint8Array) {
    this.list.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    this.length += chunk.length
  }
  /** Whether the first chunk holds the next `n` bytes. */
  headHolds(n: number): boolean {
    return this.list.length > 0 && this.list[0]!.length >= n
  }
  /** The next `n` bytes as one buffer: a view of the first chunk when it holds them all, else gathered into a copy. */
  takeContiguous(n: number): Buffer {
    const head = this.list[0]!
    if (head.length < n) return contiguous(this.take(n), Buffer.allocUnsafe)
    this.length -= n
    if (head.length === n) this.list.shift()
    else this.list[0] = head.subarray(n)
    return head.length === n ? head : head.subarray(0, n)
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
const contiguous = (pieces: ReadonlyArray<Buffer>, alloc: (n: number) => Buffer): Buffer => {
  if (pieces.length === 1) return pieces[0]!
  let size = 0
  for (const p of pieces) size += p.length
  const out = alloc(size)
  let at = 0
  for (const p of pieces) at += p.copy(out, at)
  return out
}

/** Wraps `stream` in Noise transport messages with `tx` / `rx`. */
export const secureTransport = (
  stream: ByteStream,
  peer: SessionPeer,
  tx: NoiseCipher,
  rx: NoiseCipher,
  /** Bytes written in front of the first transport message, in the same write (the initiator's handshake message 3). */
  lead: ReadonlyArray<Uint8Array> = [],
  options: TransportOptions = {}
): SecureByteStream => {
  let leading = options.sendConfirmation === true ? [...lead, tx.seal([EMPTY], 0)] : lead
  let receiver: Receiver | undefined
  const held: Array<Uint8Array> = options.received === undefined ? [] : [options.received]
  let ended: ConnectionLost | undefined
  const input = new Chunks()
  let need = -1
  // replay protection for a resumed responder: done at the remote's first authenticated message (or the end)
  let unconfirmed =
    options.awaitConfirmation === true ? Deferred.unsafeMake<void, ConnectionLost>(FiberId.none) : undefined
  const confirmed = unconfirmed === undefined ? undefined : Deferred.await(unconfirmed)
  const end = (reason: ConnectionLost) => {
    if (ended !== undefined) return
    ended = reason
    stream.receive(undefined)
    Effect.runSync(stream.destroy)
    if (unconfirmed !== undefined) Deferred.unsafeDone(unconfirmed, Exit.fail(reason))
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
          need = input.takeContiguous(2).readUInt16BE(0)
          if (need < TAG) return end(new ConnectionLost({ detail: `noise: message of ${need} bytes is too short` }))
        }
        if (input.length < need) return
        // a message inside one socket read is decrypted where it lies; a large one across reads by node:crypto from
        // its pieces (no copy); a small one across reads is gathered once, then decrypted in place
        let plain: Buffer | Array<Buffer> | undefined
        if (need - TAG >= STREAM_MIN && !input.headHolds(need)) {
          const pieces = input.take(need - TAG)
          plain = rx.openStreamed(pieces, input.takeContiguous(TAG))
        } else plain = rx.open(input.takeContiguous(need))
        need = -1
        if (plain === undefined) {
          return end(
            new ConnectionLost({ detail: "noise: message failed authentication (tampered, replayed or reordered)" })
          )
        }
        if (unconfirmed !== undefined) {
          Deferred.unsafeDone(unconfirmed, Exit.void)
          unconfirmed = undefined
        }
        if (Buffer.isBuffer(plain)) deliver(plain)
        else for (const p of plain) deliver(p)
      }
    },
    onEnd: (reason) =>
      end(
        input.length > 0 || need >= 0
          ? new ConnectionLost({ detail: `noise: stream truncated inside a message (${reason.detail})` })
          : reason
      )
  }
  // a round's messages are sealed one after another into one buffer, written with one socket write; round buffers
  // whose write has completed are reused for the next rounds (sending allocates no new memory in steady state), a
  // failed write keeps its buffer out of the pool
  const free: Array<Buffer> = []
  const takeRound = (n: number): Buffer => {
    if (n < 4096) return Buffer.allocUnsafe(n)
    while (free.length > 0) {
      const b = free.pop()!
      if (b.length >= n) return b.subarray(0, n)
    }
    return Buffer.allocUnsafe(Math.max(n, ROUND_MIN)).subarray(0, n)
  }
  const recycle = (round: Buffer) => {
    if (round.byteLength >= 4096 && round.byteOffset === 0 && free.length < 2) {
      free.push(Buffer.from(round.buffer, 0, round.buffer.byteLength))
    }
  }
  /**
   * Cuts the chunks into messages' worth of pieces (views, nothing copied or encrypted yet): small chunks share
   * messages of up to SEND_PLAINTEXT bytes; a large chunk (an attachment) gets messages of its own of up to
   * MAX_PLAINTEXT, encrypted from its memory without a copy.
   */
  const plan = (chunks: ReadonlyArray<Uint8Array>): Array<Planned> => {
    const out: Array<Planned> = []
    let pieces: Array<Uint8Array> = []
    let size = 0
    const close = () => {
      if (size === 0) return
      out.push({ pieces, size })
      pieces = []
      size = 0
    }
    for (const chunk of chunks) {
      const large = chunk.length >= DIRECT_BYTES
      if (large) close()
      const cap = large ? MAX_PLAINTEXT : SEND_PLAINTEXT
      for (let at = 0; at < chunk.length;) {
        const n = Math.min(cap - size, chunk.length - at)
        pieces.push(n === chunk.length ? chunk : chunk.subarray(at, at + n))
        size += n
        at += n
        if (size === cap) close()
      }
      if (large) close()
    }
    close()
    return out
  }
  /**
   * Encrypts and writes the planned messages a round at a time (at most ROUND_MESSAGES or about ROUND_BYTES), each
   * round once the previous one is written: a large batch never holds its whole ciphertext in memory, and the buffer
   * of one round serves the next.
   */
  const writeRounds = (
    planned: ReadonlyArray<Planned>,
    from: number,
    // how a round reaches the socket: stream.write, or writeNow, which hands it over during this call (the round is
    // then sealed and handed over in one step)
    write: (chunks: ReadonlyArray<Uint8Array>) => Effect.Effect<void, ConnectionLost> = stream.write
  ): Effect.Effect<void, ConnectionLost> => {
    const to = roundEnd(planned, from)
    let bytes = 0
    for (let i = from; i < to; i++) bytes += 2 + planned[i]!.size + TAG
    const round = bytes === 0 ? EMPTY : takeRound(bytes)
    let at = 0
    const slot = (n: number) => round.subarray(at, (at += n))
    for (let i = from; i < to; i++) tx.seal(planned[i]!.pieces, planned[i]!.size, slot)
    const first = leading
    leading = []
    if (first.length === 0 && bytes === 0) return Effect.void
    return Effect.flatMap(write(bytes === 0 ? first : first.length === 0 ? [round] : [...first, round]), () => {
      recycle(round)
      return to < planned.length ? writeRounds(planned, to, write) : Effect.void
    })
  }
  // one writer at a time from encryption to the socket, so concurrent writers cannot send nonces out of order: a
  // plain lock (a flag and a line of waiters) costs an uncontended write far fewer steps than a Semaphore
  let writing = false
  const line: Array<{ readonly go: () => void }> = []
  const unlock = () => {
    const next = line.shift()
    if (next === undefined) writing = false
    else next.go()
  }
  /** Runs `body` holding the lock; the lock is taken and released outside interruption, so it is never lost. */
  const locked = (body: Effect.Effect<void, ConnectionLost>): Effect.Effect<void, ConnectionLost> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        if (!writing) {
          writing = true
          return Effect.ensuring(restore(body), Effect.sync(unlock))
        }
        let held = false
        const turn = Effect.async<void>((resume) => {
          const waiter = {
            go: () => {
              held = true
              resume(Effect.void)
            }
          }
          line.push(waiter)
          return Effect.sync(() => {
            const i = line.indexOf(waiter)
            if (i >= 0) line.splice(i, 1)
          })
        })
        // handed the lock but interrupted before writing: passed on all the same
        return Effect.ensuring(
          restore(Effect.zipRight(turn, body)),
          Effect.sync(() => held && unlock())
        )
      })
    )
  stream.receive(inner)
  const handOver = stream.writeNow
  if (options.sendConfirmation === true && handOver !== undefined) {
    setImmediate(() => {
      if (leading.length === 0 || ended !== undefined) return
      const first = leading
      leading = []
      // handed to the socket during this call; the Effect returned would only wait for the kernel (a failure ends
      // the socket, which the reader reports)
      handOver(first)
    })
  }
  return {
    remoteNodeId: peer.nodeId,
    peer,
    pattern: options.pattern ?? "XX",
    ...(options.earlySent === undefined ? {} : { earlySent: options.earlySent }),
    ...(confirmed === undefined ? {} : { confirmed }),
    remoteAddress: stream.remoteAddress,
    remotePort: stream.remotePort,
    write: (chunks) =>
      Effect.suspend(() => {
        if (ended !== undefined) return Effect.fail(ended)
        const planned = plan(chunks)
        // the usual case, one round while no other write is under way: sealed and handed to the socket in this one
        // step, which no other writer can come between, so no lock is needed to keep the nonces in order
        if (!writing && handOver !== undefined && roundEnd(planned, 0) === planned.length) {
          return writeRounds(planned, 0, handOver)
        }
        return locked(Effect.suspend(() => (ended !== undefined ? Effect.fail(ended) : writeRounds(planned, 0))))
      }),
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
