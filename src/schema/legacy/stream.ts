/**
 * The tolerant reader of the legacy TCP stream (reference spec 1.4 [TS-SHOULD]). A legacy frame is `<Tag>json</Tag>`
 * with no length and no delimiter; the original's own reader loses coalesced frames and grows without bound (B8).
 * This one works on bytes, emits every complete frame in order however the stream is cut, and bounds its buffer.
 */
import { Either } from "effect"
import { LegacyBufferOverflow, LegacyTruncatedFrame } from "./errors.js"
import type { LegacyFrameKind } from "./packets.js"
import { indexOfBytes, legacyFrameKinds } from "./packets.js"

/** One frame of the stream: its kind and the JSON between its tags (decode it with `decodeLegacyPacket`). */
export interface LegacyFrame {
  readonly kind: LegacyFrameKind
  readonly json: string
}

/** The default bound of the parser's buffer (spec 1.4 suggests 16 MiB). */
export const DEFAULT_LEGACY_BUFFER_BYTES = 16 * 1024 * 1024

export interface LegacyStreamParserOptions {
  /** Most bytes kept while a frame is incomplete; more is a LegacyBufferOverflow. Default 16 MiB. */
  readonly maxBufferBytes?: number
}

const encoder = new TextEncoder()
const LT = 0x3c
const frameTags: ReadonlyArray<{
  readonly kind: LegacyFrameKind
  readonly open: Uint8Array
  readonly close: Uint8Array
}> = legacyFrameKinds.map((kind) => ({ kind, open: encoder.encode(`<${kind}>`), close: encoder.encode(`</${kind}>`) }))

type Tag = (typeof frameTags)[number]

/** How `bytes[at..end)` relates to an opening tag: a whole tag, the start of one cut by `end`, or neither. */
const matchOpening = (bytes: Uint8Array, at: number, end: number): Tag | "partial" | undefined => {
  let partial = false
  for (const tag of frameTags) {
    const n = Math.min(tag.open.length, end - at)
    let i = 1 // bytes[at] is "<"
    while (i < n && bytes[at + i] === tag.open[i]) i++
    if (i === tag.open.length) return tag
    if (i === n) partial = true
  }
  return partial ? "partial" : undefined
}

/**
 * Splits a legacy byte stream into frames: finds the earliest opening tag of any kind, then the first closing tag of
 * the same kind after it, emits the payload between them (UTF-8, decoded once complete, so characters cut across
 * chunks survive; invalid sequences become U+FFFD as in .NET) and goes on with the rest. Bytes before an opening tag
 * are junk and dropped, except a possible start of a tag at the very end. No Effects, never throws; one per
 * connection.
 *
 * @example
 * const parser = new LegacyStreamParser()
 * const frames = parser.push(chunk) // Either<ReadonlyArray<LegacyFrame>, LegacyBufferOverflow>
 */
export class LegacyStreamParser {
  readonly maxBufferBytes: number
  private buffer = new Uint8Array(4096)
  private head = 0
  private tail = 0
  /** The frame being read: its tag, where its opening tag starts and where the closing-tag search resumes. */
  private open: { readonly tag: Tag; at: number; searchFrom: number } | undefined = undefined
  private failed: LegacyBufferOverflow | undefined = undefined
  private readonly decoder = new TextDecoder("utf-8", { ignoreBOM: true })

  constructor(options: LegacyStreamParserOptions = {}) {
    this.maxBufferBytes = options.maxBufferBytes ?? DEFAULT_LEGACY_BUFFER_BYTES
  }

  /** Bytes held back: an incomplete frame, or the start of a tag. */
  get buffered(): number {
    return this.tail - this.head
  }

  /**
   * Feeds the next chunk; returns the frames it completes, in order. Past the bound the parser fails for good (the
   * frames of that chunk included): drop the connection.
   */
  push(chunk: Uint8Array): Either.Either<ReadonlyArray<LegacyFrame>, LegacyBufferOverflow> {
    if (this.failed !== undefined) return Either.left(this.failed)
    this.append(chunk)
    const frames: Array<LegacyFrame> = []
    while (this.step(frames)) {
      // one frame, or one junk run, per step
    }
    if (this.head === this.tail) this.head = this.tail = 0
    if (this.buffered > this.maxBufferBytes) {
      this.failed = new LegacyBufferOverflow({ size: this.buffered, max: this.maxBufferBytes })
      return Either.left(this.failed)
    }
    return Either.right(frames)
  }

  /** The stream ended: a frame whose opening tag was seen but not its closing tag is reported as truncated. */
  end(): Either.Either<void, LegacyTruncatedFrame> {
    return this.open === undefined
      ? Either.void
      : Either.left(new LegacyTruncatedFrame({ kind: this.open.tag.kind, bytes: this.tail - this.open.at }))
  }

  private append(chunk: Uint8Array) {
    const size = this.tail - this.head
    if (this.head > 0 && this.tail + chunk.length > this.buffer.length) {
      this.buffer.copyWithin(0, this.head, this.tail)
      if (this.open !== undefined) {
        this.open.at -= this.head
        this.open.searchFrom -= this.head
      }
      this.head = 0
      this.tail = size
    }
    if (this.tail + chunk.length > this.buffer.length) {
      let capacity = this.buffer.length
      while (capacity < this.tail + chunk.length) capacity *= 2
      const grown = new Uint8Array(capacity)
      grown.set(this.buffer.subarray(0, this.tail))
      this.buffer = grown
    }
    this.buffer.set(chunk, this.tail)
    this.tail += chunk.length
  }

  /** Makes one step of progress; false when more bytes are needed. */
  private step(frames: Array<LegacyFrame>): boolean {
    const bytes = this.buffer.subarray(0, this.tail)
    if (this.open === undefined) {
      let at = bytes.indexOf(LT, this.head)
      while (at !== -1) {
        const match = matchOpening(bytes, at, this.tail)
        if (match === "partial") {
          this.head = at // keep the start of a tag cut by the chunk boundary
          return false
        }
        if (match !== undefined) {
          this.head = at
          this.open = { tag: match, at, searchFrom: at + match.open.length }
          break
        }
        at = bytes.indexOf(LT, at + 1)
      }
      if (this.open === undefined) {
        this.head = this.tail // all junk
        return false
      }
    }
    const { at, searchFrom, tag } = this.open
    const closeAt = indexOfBytes(bytes, tag.close, searchFrom)
    if (closeAt === -1) {
      this.open.searchFrom = Math.max(at + tag.open.length, this.tail - tag.close.length + 1)
      return false
    }
    frames.push({ kind: tag.kind, json: this.decoder.decode(bytes.subarray(at + tag.open.length, closeAt)) })
    this.head = closeAt + tag.close.length
    this.open = undefined
    return true
  }
}
