/**
 * The baseline's sending side: plain node:net to the receiver's raw servers, 4-byte length framing, writes batched
 * (many frames per write call), waiting for 'drain' when the socket buffer is full. These are the figures the
 * library's are divided by.
 */
import { Effect } from "effect"
import * as net from "node:net"
import { FrameReader } from "../src/schema/wire.js"
import { BULK_BYTES, frameAll, lengthPrefix, PING, SMALL_TEXT } from "./shared.js"

/** Small messages per write call. */
const SMALL_BATCH = 256
/** Bulk frames per write call (corked). */
const BULK_BATCH = 16

const origin = "0123456789abcdef0123456789abcdef01234567"

export const connect = (port: number) =>
  Effect.acquireRelease(
    Effect.async<net.Socket, Error>((resume) => {
      const socket = net.connect({ host: "127.0.0.1", port, noDelay: true })
      socket.once("connect", () => resume(Effect.succeed(socket)))
      socket.once("error", (e) => resume(Effect.fail(e)))
      return Effect.sync(() => socket.destroy())
    }),
    (socket) => Effect.sync(() => socket.destroy())
  )

/** Writes `batches` batches made by `batch`, in order, respecting back-pressure; succeeds once all are queued. */
const pump = (socket: net.Socket, batches: number, batch: (i: number) => boolean) =>
  Effect.async<void, Error>((resume) => {
    let i = 0
    const onError = (e: Error) => resume(Effect.fail(e))
    socket.once("error", onError)
    const next = () => {
      while (i < batches) {
        if (!batch(i++)) {
          socket.once("drain", next)
          return
        }
      }
      socket.off("error", onError)
      resume(Effect.void)
    }
    next()
  })

/** `count` small JSON messages (the same fields as a PureMessage), built and stringified one by one. */
export const sendSmall = (socket: net.Socket, count: number) =>
  pump(socket, Math.ceil(count / SMALL_BATCH), (i) => {
    const n = Math.min(SMALL_BATCH, count - i * SMALL_BATCH)
    const bodies = new Array<Buffer>(n)
    for (let j = 0; j < n; j++) {
      bodies[j] = Buffer.from(JSON.stringify({ _tag: "PureMessage", message: SMALL_TEXT, origin, sentAt: Date.now() }))
    }
    return socket.write(frameAll(bodies))
  })

/** `count` frames of BULK_BYTES each, the same payload buffer every time. */
export const sendBulk = (socket: net.Socket, count: number, payload: Uint8Array) => {
  const prefix = lengthPrefix(BULK_BYTES)
  return pump(socket, Math.ceil(count / BULK_BATCH), (i) => {
    const n = Math.min(BULK_BATCH, count - i * BULK_BATCH)
    socket.cork()
    let ok = true
    for (let j = 0; j < n; j++) {
      socket.write(prefix)
      ok = socket.write(payload)
    }
    socket.uncork()
    return ok
  })
}

/** Connects to the echo server, sends one small message and waits for it to come back (the baseline handshake). */
export const connectAndEcho = (port: number) =>
  Effect.async<void, Error>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true })
    // the same 4-byte length splitting as the library, without the rest of its protocol
    const splitter = new FrameReader(Number.MAX_SAFE_INTEGER)
    socket.once("error", (e) => resume(Effect.fail(e)))
    socket.once("connect", () => {
      const body = Buffer.from(JSON.stringify({ _tag: "PureMessage", message: PING, origin, sentAt: Date.now() }))
      socket.write(frameAll([body]))
    })
    socket.on("data", (chunk: Buffer) =>
      splitter.pushRanges(chunk, (buffer, start, end) => {
        JSON.parse(buffer.toString("utf8", start, end))
        socket.destroy()
        resume(Effect.void)
      })
    )
    return Effect.sync(() => socket.destroy())
  })
