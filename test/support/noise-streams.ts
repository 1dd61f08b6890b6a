/**
 * Byte streams for the Noise tests: an in-memory ByteStream whose test side feeds the receiver chunks cut wherever it
 * likes (to show the transport does not depend on how TCP cuts the ciphertext), and a wrapper that records every
 * write of a real stream (what a session put on the wire).
 */
import { Effect } from "effect"
import type { ByteStream, Receiver } from "../../src/actors/Connection.js"
import { ConnectionLost } from "../../src/schema/errors.js"

export interface MemoryStream {
  /** The stream a session or transport runs on. */
  readonly stream: ByteStream
  /** Every chunk the stream's owner wrote, in order (copies). */
  readonly written: Array<Buffer>
  /** Hands `chunk` to the receiver now, or holds it until one is installed (as a socket would). */
  readonly feed: (chunk: Uint8Array) => void
  /** The remote closed: the receiver's onEnd runs (once). */
  readonly end: (detail?: string) => void
  /** True once the owner called `destroy`. */
  readonly destroyed: () => boolean
}

/** A ByteStream with no socket under it: the test decides what arrives and sees what is written. */
export const memoryStream = (): MemoryStream => {
  let receiver: Receiver | undefined
  const held: Array<Uint8Array> = []
  const written: Array<Buffer> = []
  let ended: ConnectionLost | undefined
  let destroyed = false
  const finish = (reason: ConnectionLost) => {
    if (ended !== undefined) return
    ended = reason
    receiver?.onEnd(reason)
  }
  const stream: ByteStream = {
    remoteAddress: "memory",
    remotePort: 0,
    write: (chunks) =>
      Effect.suspend(() => {
        if (destroyed) return Effect.fail(new ConnectionLost({ detail: "socket is closed" }))
        for (const c of chunks) written.push(Buffer.from(c))
        return Effect.void
      }),
    receive: (r, unread) => {
      receiver = r
      if (r === undefined) {
        if (unread !== undefined && unread.length > 0) held.unshift(unread)
        return
      }
      while (held.length > 0 && receiver === r) r.onData(held.shift()!)
      if (receiver === r && ended !== undefined) r.onEnd(ended)
    },
    pause: () => {},
    resume: () => {},
    destroy: Effect.sync(() => {
      destroyed = true
      finish(new ConnectionLost({ detail: "destroyed locally" }))
    }),
    bytesWritten: () => written.reduce((n, c) => n + c.length, 0)
  }
  return {
    stream,
    written,
    feed: (chunk) => {
      if (ended !== undefined) return
      if (receiver !== undefined && held.length === 0) receiver.onData(chunk)
      else held.push(chunk)
    },
    end: (detail = "closed by peer") => finish(new ConnectionLost({ detail })),
    destroyed: () => destroyed
  }
}

/** `stream`, with a copy of every chunk written through it appended to `log`. */
export const recordingStream = (stream: ByteStream, log: Array<Buffer>): ByteStream => ({
  ...stream,
  write: (chunks) =>
    Effect.suspend(() => {
      for (const c of chunks) log.push(Buffer.from(c))
      return stream.write(chunks)
    })
})

/** Cuts `bytes` at the given offsets (any order, duplicates and out-of-range offsets ignored). */
export const cutAt = (bytes: Buffer, offsets: ReadonlyArray<number>): Array<Buffer> => {
  const points = [...new Set(offsets.filter((o) => o > 0 && o < bytes.length))].sort((x, y) => x - y)
  const out: Array<Buffer> = []
  let from = 0
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(from, p))
    from = p
  }
  return out
}
