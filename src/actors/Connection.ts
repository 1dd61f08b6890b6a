/**
 * Byte streams over TCP: the layer under the framing. `socketStream` adapts a node:net socket; `dialTcp` opens one
 * with a timeout. A SecureSession (layers/SecureSession.ts) may wrap a ByteStream in an encrypting one before framing
 * starts; this is the seam where authenticated encryption is inserted.
 */
import { Deferred, Effect, Ref } from "effect"
import * as net from "node:net"
import { ConnectionLost, DialFailed } from "../schema/errors.js"
import type { SessionPeer } from "../layers/NoiseTransport.js"

/** The receiving end of a ByteStream. Called synchronously from socket events, in order. */
export interface Receiver {
  readonly onData: (chunk: Uint8Array) => void
  /** The stream ended (peer closed, reset, or destroyed locally). Called once. */
  readonly onEnd: (reason: ConnectionLost) => void
}

export interface ByteStream {
  readonly remoteAddress: string
  readonly remotePort: number
  /** Set by a secure session that authenticated the peer's node key: the NodeId it proved. */
  readonly remoteNodeId?: string
  /** Set by a secure session: what the peer proved (node, Ed25519 key, network). */
  readonly peer?: SessionPeer
  /** Writes the chunks in order with one system call where possible; succeeds once the kernel has them. */
  readonly write: (chunks: ReadonlyArray<Uint8Array>) => Effect.Effect<void, ConnectionLost>
  /**
   * Installs the receiver. Bytes that arrived while no receiver was installed are delivered first. Passing
   * `undefined` detaches the current one; `unread` bytes are then held for the next receiver.
   */
  readonly receive: (receiver: Receiver | undefined, unread?: Uint8Array) => void
  /** Stops reading from the socket (TCP flow control pushes back on the sender). */
  readonly pause: () => void
  readonly resume: () => void
  /** Closes the socket at once. Synchronous (it never waits), so socket callbacks may run it with Effect.runSync. */
  readonly destroy: Effect.Effect<void>
  readonly bytesWritten: () => number
}

export const socketStream = (socket: net.Socket): ByteStream => {
  let receiver: Receiver | undefined
  const held: Array<Uint8Array> = []
  let ended: ConnectionLost | undefined
  let lastError: Error | undefined
  let paused = false
  socket.setNoDelay(true)
  socket.on("data", (chunk: Buffer) => {
    if (receiver !== undefined) receiver.onData(chunk)
    else {
      held.push(chunk)
      socket.pause()
    }
  })
  socket.on("error", (e) => {
    lastError = e
  })
  socket.on("close", () => {
    ended = new ConnectionLost({ detail: lastError ? lastError.message : "closed by peer" })
    receiver?.onEnd(ended)
  })
  return {
    remoteAddress: normalizeAddress(socket.remoteAddress ?? "unknown"),
    remotePort: socket.remotePort ?? 0,
    write: (chunks) =>
      Effect.async<void, ConnectionLost>((resume) => {
        if (socket.destroyed || !socket.writable) {
          resume(Effect.fail(new ConnectionLost({ detail: "socket is closed" })))
          return
        }
        const done = (e?: Error | null) =>
          resume(e ? Effect.fail(new ConnectionLost({ detail: e.message })) : Effect.void)
        if (chunks.length === 1) {
          socket.write(chunks[0]!, done)
          return
        }
        socket.cork()
        for (let i = 0; i < chunks.length - 1; i++) socket.write(chunks[i]!)
        socket.write(chunks[chunks.length - 1]!, done)
        socket.uncork()
      }),
    receive: (r, unread) => {
      receiver = r
      if (r === undefined) {
        if (unread !== undefined && unread.length > 0) held.unshift(unread)
        socket.pause()
        return
      }
      while (held.length > 0 && receiver === r) r.onData(held.shift()!)
      if (receiver !== r) return
      if (ended !== undefined) r.onEnd(ended)
      else if (!paused) socket.resume()
    },
    pause: () => {
      paused = true
      socket.pause()
    },
    resume: () => {
      paused = false
      if (receiver !== undefined) socket.resume()
    },
    destroy: Effect.sync(() => {
      socket.destroy()
    }),
    bytesWritten: () => socket.bytesWritten
  }
}

/**
 * Reads from `stream` until `length` can tell how many bytes the value at its start takes (undefined: not yet), then
 * hands those bytes to `parse` and leaves whatever came after them held in the stream for the next reader. Used for
 * the fixed-size preamble and the length-prefixed Noise handshake messages.
 */
export const readPrefix = <A>(
  stream: ByteStream,
  length: (got: Buffer) => number | undefined,
  parse: (bytes: Buffer) => A
): Effect.Effect<A, ConnectionLost> =>
  Effect.async<A, ConnectionLost>((resume) => {
    let got = Buffer.alloc(0)
    stream.receive({
      onData: (chunk) => {
        got = got.length === 0 ? Buffer.from(chunk) : Buffer.concat([got, chunk])
        const n = length(got)
        if (n === undefined || got.length < n) return
        stream.receive(undefined, got.subarray(n))
        resume(Effect.succeed(parse(got.subarray(0, n))))
      },
      onEnd: (reason) => resume(Effect.fail(reason))
    })
    return Effect.sync(() => stream.receive(undefined))
  })

/**
 * Bounds `self`, which waits only on `stream`, by one timer: if `millis` pass first, the stream is destroyed (which
 * ends whatever `self` waits on) and the result is `onTimeout()` instead of the ConnectionLost that caused. Lighter
 * than Effect.timeoutFail, which runs the bounded effect in a fiber of its own; time comes from the Clock.
 */
export const withDeadline =
  <E2>(stream: Pick<ByteStream, "destroy">, millis: number, onTimeout: () => E2) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2, R> =>
    Effect.gen(function* () {
      let expired = false
      const timer = yield* Effect.fork(
        Effect.zipRight(
          Effect.sleep(millis),
          Effect.suspend(() => {
            expired = true
            return stream.destroy
          })
        )
      )
      return yield* self.pipe(
        Effect.matchEffect({
          onFailure: (e): Effect.Effect<A, E | E2> => Effect.fail(expired ? onTimeout() : e),
          onSuccess: (a): Effect.Effect<A, E | E2> => (expired ? Effect.fail(onTimeout()) : Effect.succeed(a))
        }),
        // the timer is told to stop without waiting for it to finish (it only has its sleep to cancel)
        Effect.ensuring(Effect.fiberIdWith((id) => Effect.sync(() => timer.unsafeInterruptAsFork(id))))
      )
    })

/**
 * One attempt per key at a time: while an attempt for a key runs, other callers for that key wait for its outcome
 * instead of starting their own (concurrent dials to one endpoint share one connection). An interrupted attempt
 * interrupts its waiters rather than leaving them waiting.
 */
export const sharedAttempts = <A, E>() =>
  Effect.map(
    Ref.make(new Map<string, Deferred.Deferred<A, E>>()),
    (inFlight) =>
      (key: string, attempt: Effect.Effect<A, E>): Effect.Effect<A, E> =>
        Effect.gen(function* () {
          const mine = yield* Deferred.make<A, E>()
          const running = yield* Ref.modify(inFlight, (m) => {
            const d = m.get(key)
            return d !== undefined ? ([d, m] as const) : ([undefined, new Map(m).set(key, mine)] as const)
          })
          if (running !== undefined) return yield* Deferred.await(running)
          return yield* attempt.pipe(
            Effect.onExit((exit) =>
              Ref.update(inFlight, (m) => {
                const n = new Map(m)
                n.delete(key)
                return n
              }).pipe(Effect.zipRight(Deferred.done(mine, exit)))
            )
          )
        })
  )

/** "::ffff:127.0.0.1" (IPv4-mapped) is reported as "127.0.0.1". */
export const normalizeAddress = (a: string): string => (a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a)

/**
 * Opens a TCP connection; fails with DialFailed on refusal or after `timeoutMillis` (a Clock timer that destroys the
 * socket, not a race: the connect itself runs in the caller's fiber). Interrupting it closes the socket.
 */
export const dialTcp = (address: string, port: number, timeoutMillis: number) =>
  Effect.suspend(() => {
    const socket = net.connect({ host: address, port })
    const connected = Effect.async<net.Socket, DialFailed>((resume) => {
      let settled = false
      const fail = (detail: string) => {
        if (settled) return
        settled = true
        socket.destroy()
        resume(Effect.fail(new DialFailed({ address, port, detail })))
      }
      // stays installed: an error between connect and socketStream() must not become an uncaught 'error' event
      socket.on("error", (e) => fail(e.message))
      // destroyed by the deadline below (which then reports the timeout) or by interruption
      socket.once("close", () => fail("closed before connecting"))
      socket.once("connect", () => {
        if (settled) return
        settled = true
        resume(Effect.succeed(socket))
      })
      return Effect.sync(() => socket.destroy())
    })
    return connected.pipe(
      withDeadline(
        { destroy: Effect.sync(() => socket.destroy()) },
        timeoutMillis,
        () => new DialFailed({ address, port, detail: `timed out after ${timeoutMillis} ms` })
      )
    )
  })
