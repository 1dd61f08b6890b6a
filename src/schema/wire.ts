/**
 * Wire protocol v1: an 8-byte preamble, then length-prefixed frames (see docs/protocol.md for the byte layout).
 * Pure functions and a small incremental frame reader; no Effects here. The reader enforces the maximum frame size
 * before allocating and never throws on any input.
 */
import { DateTime, Either, ParseResult, Schema } from "effect"
import { FrameNotJson, FrameTooLarge, FrameTruncated, InvalidPacket, UnknownPacketKind } from "./errors.js"
import type { FrameError } from "./errors.js"
import { HandshakeData, HandshakeProof, HandshakeVerdict, Hello, Reject } from "./handshake.js"
import { DataTransmission, Disconnect, Identity, PeerGroup, PureMessage } from "./packets.js"
import type { Packet } from "./packets.js"

export const PROTOCOL_VERSION = 1
/** "P2PNET", then the session the sender speaks (one byte, SESSION_CODES), then the protocol version (one byte). */
export const PREAMBLE_MAGIC = Buffer.from("P2PNET", "ascii")
export const PREAMBLE_LENGTH = 8
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

/** The preamble's session byte: how everything after the preamble is protected. */
export const SESSION_CODES = { plain: 0, noise: 1 } as const
export type SessionName = keyof typeof SESSION_CODES
const sessionNames: ReadonlyArray<SessionName> = ["plain", "noise"]

export const preamble = (version: number = PROTOCOL_VERSION, session: SessionName = "plain"): Buffer => {
  const b = Buffer.alloc(PREAMBLE_LENGTH)
  PREAMBLE_MAGIC.copy(b, 0)
  b.writeUInt8(SESSION_CODES[session], 6)
  b.writeUInt8(version & 0xff, 7)
  return b
}

export interface Preamble {
  readonly version: number
  /** The session the remote speaks, or `unknown (code)` for a code this node does not know. */
  readonly session: SessionName | `unknown (${number})`
}

/** Reads a preamble: the remote's version and session, or a reason it is not a P2PNET peer. */
export const parsePreamble = (bytes: Uint8Array): Either.Either<Preamble, string> => {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (b.length < PREAMBLE_LENGTH || !b.subarray(0, 6).equals(PREAMBLE_MAGIC)) {
    return Either.left('not a P2PNET peer (missing "P2PNET" preamble)')
  }
  const code = b.readUInt8(6)
  return Either.right({ version: b.readUInt8(7), session: sessionNames[code] ?? `unknown (${code})` })
}

/** Everything that can travel in a frame. */
export type FrameValue = Packet | Hello | HandshakeProof | HandshakeVerdict | HandshakeData | Reject

/** The Schema class of every frame kind, by `_tag`. */
export const frameClasses = {
  Identity,
  Disconnect,
  PeerGroup,
  DataTransmission,
  PureMessage,
  Hello,
  HandshakeProof,
  HandshakeVerdict,
  HandshakeData,
  Reject
} as const
type Kind = keyof typeof frameClasses

/** The wire shape of a class: its fields, with origin time as epoch milliseconds. */
const wireStruct = (c: { readonly fields: Schema.Struct.Fields }) =>
  Schema.Struct("sentAt" in c.fields ? { ...c.fields, sentAt: Schema.DateTimeUtcFromNumber } : c.fields)

const decoders = Object.fromEntries(
  Object.entries(frameClasses).map(([k, c]) => {
    const decode = Schema.decodeUnknownEither(wireStruct(c) as unknown as Schema.Schema<any, any>)
    const Class = c as unknown as new (props: unknown, disableValidation: boolean) => FrameValue
    // validated by the struct already: construct without validating again
    return [k, (u: unknown) => Either.map(decode(u), (props) => new Class(props, true))]
  })
) as Record<Kind, (u: unknown) => Either.Either<FrameValue, ParseResult.ParseError>>
const encoders = Object.fromEntries(
  Object.entries(frameClasses).map(([k, c]) => [
    k,
    Schema.encodeSync(wireStruct(c) as unknown as Schema.Schema<any, any>)
  ])
) as Record<Kind, (v: FrameValue) => Record<string, unknown>>

const isKind = (k: string): k is Kind => Object.prototype.hasOwnProperty.call(frameClasses, k)

const EMPTY = new Uint8Array(0)

/** A frame before it is laid out: its JSON header (with its UTF-8 length) and its binary attachment. */
export interface FrameParts {
  readonly json: string
  readonly headerBytes: number
  readonly attachment: Uint8Array
  /** Bytes of the whole frame, length prefix included. */
  readonly size: number
}

/** The JSON header and attachment of a value; DataTransmission's data is the attachment, never copied here. */
export const frameParts = (value: FrameValue): FrameParts => {
  let json: string
  let attachment: Uint8Array = EMPTY
  // the two high-volume kinds and the Hello skip the Schema encoder (same output: the fields in declaration order)
  if (value._tag === "PureMessage") {
    json = JSON.stringify({
      _tag: "PureMessage",
      message: value.message,
      origin: value.origin,
      sentAt: value.sentAt.epochMillis
    })
  } else if (value._tag === "DataTransmission") {
    attachment = value.data
    json = JSON.stringify({
      _tag: "DataTransmission",
      format: value.format,
      origin: value.origin,
      sentAt: value.sentAt.epochMillis
    })
  } else if (value._tag === "Hello") {
    // once per connection and side, on the path that opens it
    json = JSON.stringify({
      _tag: "Hello",
      version: value.version,
      network: value.network,
      nodeId: value.nodeId,
      publicKey: value.publicKey,
      nonce: value.nonce,
      listenPort: value.listenPort
    })
  } else {
    json = JSON.stringify(encoders[value._tag](value))
  }
  const headerBytes = Buffer.byteLength(json, "utf8")
  return { json, headerBytes, attachment, size: 8 + headerBytes + attachment.length }
}

/** Writes the two length fields and the JSON header at `offset`; returns the offset after them. */
export const writeFrameHead = (buffer: Buffer, offset: number, parts: FrameParts): number => {
  buffer.writeUInt32BE(4 + parts.headerBytes + parts.attachment.length, offset)
  buffer.writeUInt32BE(parts.headerBytes, offset + 4)
  buffer.write(parts.json, offset + 8, parts.headerBytes, "utf8")
  return offset + 8 + parts.headerBytes
}

/**
 * Lays out frames for one socket write: heads (and small attachments) are copied into one buffer, attachments of
 * 16 KiB or more are passed through as they are.
 */
export const layoutFrames = (frames: ReadonlyArray<FrameParts>): Array<Uint8Array> => {
  let copied = 0
  for (const f of frames) copied += f.attachment.length >= PASS_THROUGH ? 8 + f.headerBytes : f.size
  const buffer = Buffer.allocUnsafe(copied)
  const out: Array<Uint8Array> = []
  let start = 0
  let offset = 0
  for (const f of frames) {
    offset = writeFrameHead(buffer, offset, f)
    if (f.attachment.length >= PASS_THROUGH) {
      out.push(buffer.subarray(start, offset), f.attachment)
      start = offset
    } else if (f.attachment.length > 0) {
      buffer.set(f.attachment, offset)
      offset += f.attachment.length
    }
  }
  if (offset > start) out.push(buffer.subarray(start, offset))
  return out
}
const PASS_THROUGH = 16 * 1024

/**
 * Encodes one value as a complete frame: u32 body length, u32 header length, UTF-8 JSON header, binary attachment.
 * Only DataTransmission has an attachment (its `data`, as raw bytes).
 */
export const encodeFrame = (value: FrameValue): Buffer => {
  const parts = frameParts(value)
  const frame = Buffer.allocUnsafe(parts.size)
  const offset = writeFrameHead(frame, 0, parts)
  if (parts.attachment.length > 0) frame.set(parts.attachment, offset)
  return frame
}

const NODE_ID = /^[0-9a-f]{40}$/
/** Own keys of a parsed JSON object, counted without building an array. */
const keyCount = (o: object): number => {
  let n = 0
  for (const _ in o) n++
  return n
}
const MIN_MILLIS = -8_640_000_000_000_000
const MAX_MILLIS = 8_640_000_000_000_000
/** Builds a class instance from checked fields, as `new Class(props, true)` would, without its per-call overhead. */
const instance = <A extends object>(Class: { readonly prototype: A }, props: object): A =>
  Object.assign(Object.create(Class.prototype) as A, props)

/** A Hello as the Schema would decode it, or undefined for the Schema path to decide (and explain). */
const fastHello = (json: Record<string, unknown>): FrameValue | undefined => {
  const { version, network, nodeId, publicKey, nonce, listenPort } = json
  if (
    !Number.isInteger(version) ||
    typeof network !== "string" ||
    typeof nodeId !== "string" ||
    !NODE_ID.test(nodeId) ||
    typeof publicKey !== "string" ||
    typeof nonce !== "string" ||
    !Number.isInteger(listenPort) ||
    (listenPort as number) < 0 ||
    (listenPort as number) > 65535 ||
    keyCount(json) !== 7
  )
    return undefined
  return instance(Hello, { _tag: "Hello", version, network, nodeId, publicKey, nonce, listenPort })
}

/**
 * Hand-written decoders of the two high-volume kinds (and the Hello, on every connection's opening path); anything
 * they do not accept goes through the Schema path.
 */
const fastDecode = (tag: string, json: Record<string, unknown>, attachment: Uint8Array): FrameValue | undefined => {
  if (tag === "Hello") return fastHello(json)
  const origin = json["origin"]
  const sentAt = json["sentAt"]
  if (typeof origin !== "string" || !NODE_ID.test(origin)) return undefined
  if (typeof sentAt !== "number" || !Number.isFinite(sentAt) || sentAt < MIN_MILLIS || sentAt > MAX_MILLIS)
    return undefined
  if (tag === "PureMessage") {
    const message = json["message"]
    if (typeof message !== "string" || keyCount(json) !== 4) return undefined
    return instance(PureMessage, { _tag: "PureMessage", message, origin, sentAt: DateTime.unsafeMake(sentAt) })
  }
  if (tag === "DataTransmission") {
    const format = json["format"]
    if ((format !== "MiscData" && format !== "File" && format !== "Task") || keyCount(json) !== 4) return undefined
    return instance(DataTransmission, {
      _tag: "DataTransmission",
      format,
      data: attachment,
      origin,
      sentAt: DateTime.unsafeMake(sentAt)
    })
  }
  return undefined
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

/** Decodes a frame body (the bytes after the 4-byte length). Never throws. */
export const decodeBody = (body: Uint8Array): Either.Either<FrameValue, FrameError> =>
  decodeRange(asBuffer(body), 0, body.length)

const asBuffer = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength))

/** The header text, decoded strictly: invalid UTF-8 is an error, never replaced. */
const headerText = (buffer: Buffer, start: number, end: number): string => {
  const text = buffer.toString("utf8", start, end)
  // toString replaces invalid sequences with U+FFFD; only then is the strict (slower) decoder needed to tell
  return text.includes("\uFFFD") ? utf8.decode(buffer.subarray(start, end)) : text
}

/** Decodes the frame body held in `buffer` from `start` to `end`, without copying it. Never throws. */
export const decodeRange = (buffer: Buffer, start: number, end: number): Either.Either<FrameValue, FrameError> => {
  const length = end - start
  if (length < 4) return Either.left(new FrameNotJson({ detail: "frame shorter than its header length field" }))
  const headerLength = buffer.readUInt32BE(start)
  if (headerLength > length - 4) {
    return Either.left(new FrameNotJson({ detail: `header length ${headerLength} exceeds frame body` }))
  }
  const headerEnd = start + 4 + headerLength
  let json: unknown
  try {
    json = JSON.parse(headerText(buffer, start + 4, headerEnd))
  } catch (e) {
    return Either.left(new FrameNotJson({ detail: e instanceof Error ? e.message : String(e) }))
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return Either.left(new InvalidPacket({ kind: "frame", detail: "header is not a JSON object" }))
  }
  const tag = (json as Record<string, unknown>)["_tag"]
  if (typeof tag !== "string") return Either.left(new UnknownPacketKind({ kind: String(tag) }))
  if (!isKind(tag)) return Either.left(new UnknownPacketKind({ kind: tag }))
  const attachmentLength = end - headerEnd
  if (tag === "DataTransmission") {
    const attachment = buffer.subarray(headerEnd, end)
    const fast = fastDecode(tag, json as Record<string, unknown>, attachment)
    if (fast !== undefined) return Either.right(fast)
    ;(json as Record<string, unknown>)["data"] = attachment
  } else if (attachmentLength > 0) {
    return Either.left(new InvalidPacket({ kind: tag, detail: `unexpected ${attachmentLength}-byte attachment` }))
  } else if (tag === "PureMessage" || tag === "Hello") {
    const fast = fastDecode(tag, json as Record<string, unknown>, EMPTY)
    if (fast !== undefined) return Either.right(fast)
  }
  return Either.mapLeft(
    decoders[tag](json),
    (e) => new InvalidPacket({ kind: tag, detail: ParseResult.TreeFormatter.formatErrorSync(e) })
  )
}

/**
 * Incremental reader: feed it socket chunks, get whole frame bodies. Handles frames split across chunks and many
 * frames in one chunk; small frames inside one chunk are returned without copying. The length prefix is checked
 * against `maxFrameBytes` before any buffer is allocated.
 */
export class FrameReader {
  private head = Buffer.alloc(4)
  private headFill = 0
  private body: Buffer | undefined
  private bodyFill = 0
  constructor(readonly maxFrameBytes: number) {}

  /** Bytes of an incomplete frame currently held. */
  get buffered(): number {
    return this.headFill + this.bodyFill
  }

  /** Splits `chunk` into frame bodies, calling `onBody` for each; returns an error as soon as a frame is too large. */
  push(chunk: Uint8Array, onBody: (body: Uint8Array) => void): FrameTooLarge | undefined {
    return this.pushRanges(chunk, (buffer, start, end) => onBody(buffer.subarray(start, end)))
  }

  /**
   * As push, but gives each body as a range of a buffer (the chunk itself when the frame lies inside it), so that no
   * view is allocated per frame.
   */
  pushRanges(
    chunk: Uint8Array,
    onBody: (buffer: Buffer, start: number, end: number) => void
  ): FrameTooLarge | undefined {
    const whole = asBuffer(chunk)
    let offset = 0
    const n = chunk.length
    while (offset < n) {
      if (this.body === undefined) {
        // fast path: a whole length prefix available in this chunk
        if (this.headFill === 0 && n - offset >= 4) {
          const len =
            ((chunk[offset]! << 24) >>> 0) + (chunk[offset + 1]! << 16) + (chunk[offset + 2]! << 8) + chunk[offset + 3]!
          if (len > this.maxFrameBytes) return new FrameTooLarge({ size: len, max: this.maxFrameBytes })
          offset += 4
          if (n - offset >= len) {
            onBody(whole, offset, offset + len)
            offset += len
            continue
          }
          this.body = Buffer.allocUnsafe(len)
          this.bodyFill = 0
          continue
        }
        while (this.headFill < 4 && offset < n) this.head[this.headFill++] = chunk[offset++]!
        if (this.headFill < 4) return undefined
        const len = this.head.readUInt32BE(0)
        this.headFill = 0
        if (len > this.maxFrameBytes) return new FrameTooLarge({ size: len, max: this.maxFrameBytes })
        this.body = Buffer.allocUnsafe(len)
        this.bodyFill = 0
      }
      const take = Math.min(this.body.length - this.bodyFill, n - offset)
      this.body.set(chunk.subarray(offset, offset + take), this.bodyFill)
      this.bodyFill += take
      offset += take
      if (this.bodyFill === this.body.length) {
        const done = this.body
        this.body = undefined
        this.bodyFill = 0
        onBody(done, 0, done.length)
      }
    }
    return undefined
  }

  /** Called at end of stream: an incomplete frame is a truncation. */
  end(): FrameTruncated | undefined {
    if (this.body !== undefined) return new FrameTruncated({ expected: this.body.length, received: this.bodyFill })
    if (this.headFill > 0) return new FrameTruncated({ expected: 4, received: this.headFill })
    return undefined
  }
}
