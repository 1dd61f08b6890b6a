/**
 * Byte streams over TCP: the layer under the framing. `socketStream` adapts a node:net socket; `dialTcp` opens one
 * with a timeout. A SecureSession (layers/SecureSession.ts) may wrap a ByteStream in an encrypting one before framing
 * starts; this is the seam where authenticated encryption is inserted.
 */
import { Deferred, Effect, FiberId } from "effect"
import type { Clock, Scope } from "effect"
import * as net from "node:net"
import { ConnectionLost, DialFailed } from "../schema/errors.js"
import type { SessionPeer } from "../layers/NoiseTransport.js"

/** The receiving end of a ByteStream. Called synchronously from socket events, in order. */
export interface Receiver {
  readonly onData: (chunk: Uint8Array) => void
  /** The stream ended (peer closed, reset, or destroyed locally). Called once. */
  readonly onEnd: (reason: ConnectionLost) => void
}

/** A frame an initiator sends first (its Hello), as made by the opening (see SecureSession's Opening.early). */
export interface EarlyFrame {
  readonly bytes: Uint8Array
}

export interface ByteStream {
  readonly remoteAddress: string
  readonly remotePort: number
  /** Set by a secure session that authenticated the peer's node key: the NodeId it proved. */
  readonly remoteNodeId?: string
  /** Set by a secure session: what the peer proved (node, Ed25519 key, network). */
  readonly peer?: SessionPeer
  /**
   * Set by a secure session that carried the initiator's first frame (its Hello) itself: the frame it sent, one made
   * by the opening's `early` (perhaps for an earlier connection to the same address, and kept ready since).
   */
  readonly earlySent?: EarlyFrame
  /**
   * Set by a secure session whose remote's handshake could have been replayed (a Noise IK responder): completes when
   * the remote's first transport message authenticated, which only the live initiator can send; fails if the stream
   * ends first. Nothing that affects other connections should depend on this one before.
   */
  readonly confirmed?: Effect.Effect<void, ConnectionLost>
  /**
   * Writes the chunks in order with one system call where possible; succeeds once the kernel has them (at once when
   * the kernel took them during the call, else when the socket reports the write done).
   */
  readonly write: (chunks: ReadonlyArray<Uint8Array>) => Effect.Effect<void, ConnectionLost>
  /**
   * Optional: as `write`, but the chunks are handed to the socket during this call, in order with every earlier
   * hand-over; the Effect returned waits until the kernel has them. Lets a caller write atomically with work of its
   * own (the Noise transport seals and hands over a message in one step, so no lock keeps nonces in order).
   * socketStream sets it as a non-enumerable property, so a stream made by spreading another and replacing `write`
   * does not have it.
   */
  readonly writeNow?: (chunks: ReadonlyArray<Uint8Array>) => Effect.Effect<void, ConnectionLost>
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

/**
 * Adapts a socket. A socket still connecting may be passed with the `address` and `port` it was dialled at (reported
 * until it connects; its writes wait in the socket until then).
 */
export const socketStream = (
  socket: net.Socket,
  dialled?: { readonly address: string; readonly port: number }
): ByteStream => {
  let receiver: Receiver | undefined
  // the peer's address as the socket reports it once connected (node forgets it after a close, so it is kept)
  let remoteAddress: string | undefined
  let remotePort: number | undefined
  const peerName = () => {
    if (remoteAddress === undefined && socket.remoteAddress !== undefined) {
      remoteAddress = normalizeAddress(socket.remoteAddress)
      remotePort = socket.remotePort ?? 0
    }
  }
  peerName()
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
  if (socket.connecting) socket.once("connect", peerName)
  socket.on("close", () => {
    ended = new ConnectionLost({ detail: lastError ? lastError.message : "closed by peer" })
    receiver?.onEnd(ended)
  })
  const writeNow = (chunks: ReadonlyArray<Uint8Array>): Effect.Effect<void, ConnectionLost> => {
    if (socket.destroyed || !socket.writable) return Effect.fail(new ConnectionLost({ detail: "socket is closed" }))
    if (chunks.length === 0) return Effect.void
    let outcome: Effect.Effect<void, ConnectionLost> | undefined
    let waiting: ((outcome: Effect.Effect<void, ConnectionLost>) => void) | undefined
    const done = (e?: Error | null) => {
      outcome = e ? Effect.fail(new ConnectionLost({ detail: e.message })) : Effect.void
      waiting?.(outcome)
    }
    if (chunks.length === 1) socket.write(chunks[0]!, done)
    else {
      socket.cork()
      for (let i = 0; i < chunks.length - 1; i++) socket.write(chunks[i]!)
      socket.write(chunks[chunks.length - 1]!, done)
      socket.uncork()
    }
    if (outcome !== undefined) return outcome
    // the kernel took every byte during the call (the usual case): done now, not on the callback's later tick
    if (socket.writableLength === 0 && !socket.destroyed) return Effect.void
    return Effect.async<void, ConnectionLost>((resume) => {
      if (outcome !== undefined) resume(outcome)
      else waiting = resume
    })
  }
  const stream: ByteStream = {
    get remoteAddress() {
      peerName()
      return remoteAddress ?? dialled?.address ?? "unknown"
    },
    get remotePort() {
      peerName()
      return remotePort ?? dialled?.port ?? 0
    },
    write: (chunks) => Effect.suspend(() => writeNow(chunks)),
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
  // not enumerable: a wrapper made by spreading this stream and replacing `write` does not inherit a hand-over that
  // would go around its own write
  Object.defineProperty(stream, "writeNow", { value: writeNow, enumerable: false })
  return stream
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
 * than Effect.timeoutFail, which runs the bounded effect in a fiber of its own; time comes from the Clock. A timer
 * fiber per use: for a caller that has no Deadlines (a Noise session's own optional timeout); PeerNetwork and the
 * compatibility profile keep their openings' deadlines in one (makeDeadlines).
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
  Effect.sync(() => {
    // the attempts in progress, by key: a plain Map of this instance (its owner's scope), read and changed only in
    // synchronous steps, so no Ref is needed to keep it consistent
    const inFlight = new Map<string, Deferred.Deferred<A, E>>()
    return (key: string, attempt: Effect.Effect<A, E>): Effect.Effect<A, E> =>
      // the entry is made and its removal installed in one uninterruptible step: an interruption cannot leave a key
      // taken for ever
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          const running = inFlight.get(key)
          if (running !== undefined) return restore(Deferred.await(running))
          const mine = Deferred.unsafeMake<A, E>(FiberId.none)
          inFlight.set(key, mine)
          return Effect.onExit(restore(attempt), (exit) => {
            inFlight.delete(key)
            return Deferred.done(mine, exit)
          })
        })
      )
  })

/**
 * Resumes after the event loop's pending I/O callbacks have run (in its next check phase, not on a timer): work that
 * can wait is put behind them, so a completed connect sends what waited for it first.
 */
export const afterPendingIo: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/** "::ffff:127.0.0.1" (IPv4-mapped) is reported as "127.0.0.1". */
export const normalizeAddress = (a: string): string => (a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a)

/**
 * Opens a TCP connection and waits until it is up; fails with DialFailed on refusal or after `timeoutMillis` (a
 * deadline of `deadlines` that destroys the socket, not a race: the connect itself runs in the caller's fiber).
 * Interrupting it closes the socket.
 */
export const dialTcp = (address: string, port: number, timeoutMillis: number, deadlines: Deadlines) =>
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
      deadlines.bound(
        { destroy: Effect.sync(() => socket.destroy()) },
        timeoutMillis,
        () => new DialFailed({ address, port, detail: `timed out after ${timeoutMillis} ms` })
      )
    )
  })

/** A TCP connection started by `connectTcp`: its stream is usable at once, before the connect completes. */
export interface Connecting {
  /** Writes wait in the socket until it connects, then leave at once (a protocol's first message costs no turn). */
  readonly stream: ByteStream
  /**
   * Bounds an opening run on `stream` by a deadline of its Deadlines: DialFailed when the socket has not connected
   * within `connectMillis` or fails before it connects; `onTimeout()` when `openMillis` pass after it connected.
   */
  readonly bounded: <E2>(
    connectMillis: number,
    openMillis: number,
    onTimeout: () => E2
  ) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | E2 | DialFailed, R>
}

/**
 * The deadlines of one owner's connection openings (PeerNetwork's), kept by a single fiber instead of a timer fiber
 * per opening: adding one is a push onto a list, not a fork, on the path every connection waits on. The fiber wakes
 * by the earliest due time, at most `tickMillis` apart while any deadline is pending (so one added with an earlier
 * due time than the fiber is sleeping until is met within that), and waits without a timer when none is.
 */
export interface Deadlines {
  readonly clock: Clock.Clock
  /**
   * Runs `expire` once the Clock reaches `due()` (in ms; read again at every wake, so it may move), unless the
   * returned function was called first.
   */
  readonly add: (due: () => number, expire: Effect.Effect<void>) => () => void
  /**
   * Bounds `self`, which waits only on `stream`: if `millis` pass first, the stream is destroyed (ending whatever
   * `self` waits on) and the result is `onTimeout()` instead. The deadline a withDeadline would set, without its fiber.
   */
  readonly bound: <E2>(
    stream: Pick<ByteStream, "destroy">,
    millis: number,
    onTimeout: () => E2
  ) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | E2, R>
  /** As `bound`, with a deadline that may move: `due()` is the Clock time in ms, read again at every wake. */
  readonly boundUntil: <E2>(
    stream: Pick<ByteStream, "destroy">,
    due: () => number,
    onTimeout: () => E2
  ) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | E2, R>
}

interface Pending {
  readonly due: () => number
  readonly expire: Effect.Effect<void>
  done: boolean
}

/** A Deadlines whose fiber lives in the caller's scope. */
export const makeDeadlines = (tickMillis = 50): Effect.Effect<Deadlines, never, Scope.Scope> =>
  Effect.gen(function* () {
    const clock = yield* Effect.clock
    let pending: Array<Pending> = []
    let idle: ((wake: Effect.Effect<void>) => void) | undefined
    const round = Effect.suspend(() => {
      const now = clock.unsafeCurrentTimeMillis()
      const due: Array<Effect.Effect<void>> = []
      let next = Infinity
      const kept: Array<Pending> = []
      for (const p of pending) {
        if (p.done) continue
        const at = p.due()
        if (at <= now) {
          p.done = true
          due.push(p.expire)
        } else {
          next = Math.min(next, at)
          kept.push(p)
        }
      }
      pending = kept
      const wait =
        kept.length > 0
          ? Effect.sleep(Math.min(next - now, tickMillis))
          : Effect.async<void>((resume) => {
              idle = resume
              return Effect.sync(() => {
                idle = undefined
              })
            })
      return due.length === 0 ? wait : Effect.zipRight(Effect.all(due, { discard: true }), wait)
    })
    yield* Effect.forkScoped(Effect.forever(round))
    const add = (due: () => number, expire: Effect.Effect<void>) => {
      const p: Pending = { due, expire, done: false }
      pending.push(p)
      if (idle !== undefined) {
        const wake = idle
        idle = undefined
        wake(Effect.void)
      }
      return () => {
        p.done = true
      }
    }
    const boundUntil =
      <E2>(stream: Pick<ByteStream, "destroy">, due: () => number, onTimeout: () => E2) =>
      <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2, R> =>
        Effect.suspend(() => {
          let expired = false
          const cancel = add(
            due,
            Effect.suspend(() => {
              expired = true
              return stream.destroy
            })
          )
          // an interrupted opening leaves its entry to lapse at its due time (its stream is destroyed by then)
          return Effect.matchEffect(self, {
            onFailure: (e): Effect.Effect<A, E | E2> => {
              cancel()
              return Effect.fail(expired ? onTimeout() : e)
            },
            onSuccess: (a): Effect.Effect<A, E | E2> => {
              cancel()
              return expired ? Effect.fail(onTimeout()) : Effect.succeed(a)
            }
          })
        })
    const bound =
      <E2>(stream: Pick<ByteStream, "destroy">, millis: number, onTimeout: () => E2) =>
      <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2, R> =>
        Effect.suspend(() => {
          const at = clock.unsafeCurrentTimeMillis() + millis
          return boundUntil(stream, () => at, onTimeout)(self)
        })
    return { clock, add, bound, boundUntil } satisfies Deadlines
  })

/**
 * Starts a TCP connection without waiting for it to complete: it returns once the connect has been issued to the
 * kernel (node issues it on the next tick), so the remote can accept while this side prepares its opening. What the
 * caller writes then waits in the socket and leaves the moment the connection is up. Its opening's deadline is kept
 * by `deadlines` (and time comes from its Clock).
 */
export const connectTcp = (address: string, port: number, deadlines: Deadlines): Effect.Effect<Connecting> =>
  Effect.async<Connecting>((resume) => {
    const socket = net.connect({ host: address, port })
    const started = connecting(socket, address, port, deadlines)
    // queued after node's own tick, which issues the connect
    process.nextTick(() => resume(Effect.succeed(started)))
    return Effect.sync(() => socket.destroy())
  })

const connecting = (socket: net.Socket, address: string, port: number, deadlines: Deadlines): Connecting => {
  const clock = deadlines.clock
  let connectedAt: number | undefined
  // why the connect failed (ECONNREFUSED...), which names the failure better than the write it aborted
  let connectError: string | undefined
  socket.once("connect", () => {
    connectedAt = clock.unsafeCurrentTimeMillis()
  })
  socket.once("error", (e) => {
    if (connectedAt === undefined) connectError = e.message
  })
  const stream = socketStream(socket, { address: normalizeAddress(address), port })
  const bounded =
    <E2>(connectMillis: number, openMillis: number, onTimeout: () => E2) =>
    <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2 | DialFailed, R> =>
      Effect.suspend(() => {
        const start = clock.unsafeCurrentTimeMillis()
        return self.pipe(
          // the deadline moves once the socket connects
          deadlines.boundUntil(
            stream,
            () => (connectedAt === undefined ? start + connectMillis : connectedAt + openMillis),
            (): E2 | DialFailed =>
              connectedAt === undefined
                ? new DialFailed({ address, port, detail: `timed out after ${connectMillis} ms` })
                : onTimeout()
          ),
          // the connection failed before it was up: a failed dial, named by the socket's own error
          Effect.mapError((e) =>
            connectedAt === undefined && e instanceof ConnectionLost
              ? new DialFailed({ address, port, detail: connectError ?? e.detail })
              : e
          )
        )
      })
  return { stream, bounded }
}
