/**
 * A PeerChannel is the actor for one remote peer: an outbox Queue drained by a writer fiber (batched writes), a
 * processor fiber that gates and publishes what the Link's reader decoded, its state (a value; its changes go to a
 * PubSub made for the first subscriber), and counters. An outbound channel survives connection drops: it re-dials on a
 * retry Schedule and sends what was queued once the new connection is trusted; what cannot be delivered is failed
 * back to senders and reported, never dropped.
 */
import { Chunk, DateTime, Deferred, Effect, Either, Exit, Fiber, Option, PubSub, Queue, Schedule, Stream } from "effect"
import type { CloseReason, DialFailed } from "../schema/errors.js"
import {
  ChannelClosed,
  ConnectionLost,
  FrameTooLarge,
  HandshakeTimeout,
  LocalClose,
  NotTrusted,
  OutboxFull,
  ProtocolMismatch,
  RemoteDisconnected,
  RemoteRejected
} from "../schema/errors.js"
import type { HandshakeMessage } from "../schema/handshake.js"
import { Reject } from "../schema/handshake.js"
import type { NodeId } from "../schema/ids.js"
import { Disconnect } from "../schema/packets.js"
import type { Packet } from "../schema/packets.js"
import { encodeFrame, frameParts, layoutFrames } from "../schema/wire.js"
import type { FrameParts } from "../schema/wire.js"
import type { ChannelCounters, Link } from "./Link.js"
import { LinkEnd, TRUST_DECIDED } from "./Link.js"
import { annotateFiber } from "../layers/Logging.js"

export type ChannelState = "handshaking" | "untrusted" | "trusted" | "reconnecting" | "closed"

export interface ChannelStats {
  readonly framesIn: number
  readonly bytesIn: number
  readonly framesOut: number
  readonly bytesOut: number
  /** Socket writes: many queued packets go out in one. */
  readonly writesOut: number
  /** Packets dropped by the trust gate. */
  readonly droppedGated: number
  /** Epoch milliseconds of the last received bytes. */
  readonly lastIncomingAt: number
  readonly outboxSize: number
}

/** What a send does when the channel's outbox is full. */
export type OverflowPolicy = "wait" | "dropOldest" | "fail"

export interface OutboxItem {
  readonly frame: FrameParts
  readonly kind: Packet["_tag"]
  /** Set on a Disconnect: the channel closes with this reason once it is written. */
  readonly disconnect: string | undefined
  readonly written: Deferred.Deferred<void, ChannelClosed> | undefined
}

/** A packet and the channel it arrived on, after the trust gate. */
export interface PacketReceived {
  readonly channel: PeerChannel
  readonly packet: Packet
}

/** What a channel knows about its connection once the Hello exchange is done. */
export interface ChannelInfo {
  /** Local number of this channel, unique within one PeerNetwork. */
  readonly key: number
  readonly direction: "inbound" | "outbound"
  /** Remote IP address of the connection. */
  readonly address: string
  /** Remote port of the connection (for outbound channels, the port dialled). */
  readonly port: number
  readonly remoteId: NodeId
  /** The TCP port the remote says it listens on (from its Hello). */
  readonly remoteListenPort: number
  /** The node that opened the connection; used for the duplicate tie-break. */
  readonly initiatorId: NodeId
}

/** The handle users hold. All effects here have no requirements. */
export interface PeerChannel extends ChannelInfo {
  readonly label: string
  readonly state: Effect.Effect<ChannelState>
  readonly stateChanges: Stream.Stream<ChannelState>
  readonly isTrusted: () => boolean
  readonly isClosed: () => boolean
  /**
   * Queues a packet. Waits while the outbox is full (back-pressure). Fails with NotTrusted when the trust gate forbids
   * the kind on this channel, FrameTooLarge when it cannot be framed, ChannelClosed once the channel has closed.
   */
  readonly send: (packet: Packet) => Effect.Effect<void, NotTrusted | ChannelClosed | FrameTooLarge>
  /**
   * Queues a packet with an explicit policy for a full outbox: "wait" (as `send`), "dropOldest" (the oldest queued
   * packet is dropped, and a `sendAndAwait` waiting on it fails), or "fail" (OutboxFull).
   */
  readonly offer: (
    packet: Packet,
    whenFull: OverflowPolicy
  ) => Effect.Effect<void, NotTrusted | ChannelClosed | FrameTooLarge | OutboxFull>
  /** Internal, for fan-out: as `offer`, with the packet already framed (one encoding shared by many channels). */
  readonly offerFramed: (
    packet: Packet,
    whenFull: OverflowPolicy,
    frame: FrameParts
  ) => Effect.Effect<void, NotTrusted | ChannelClosed | FrameTooLarge | OutboxFull>
  /** Internal, for fan-out: queues a framed packet if the outbox has room now (true), or not (false); never waits. */
  readonly tryOffer: (packet: Packet, frame: FrameParts) => boolean | NotTrusted | ChannelClosed | FrameTooLarge
  /**
   * Queues several packets in order, paying the per-call cost once. All are checked before any is queued: if one is
   * refused, none is sent.
   */
  readonly sendAll: (packets: Iterable<Packet>) => Effect.Effect<void, NotTrusted | ChannelClosed | FrameTooLarge>
  /** As send, then waits until the packet has been handed to the socket, or fails if it never will be. */
  readonly sendAndAwait: (packet: Packet) => Effect.Effect<void, NotTrusted | ChannelClosed | FrameTooLarge>
  /** Waits until the channel is trusted; fails with ChannelClosed if it closes first. */
  readonly awaitTrusted: Effect.Effect<void, ChannelClosed>
  /** Sends a Disconnect with the reason, then closes. Idempotent. */
  readonly close: (reason: string) => Effect.Effect<void>
  /** Waits for the channel to close and tells why. */
  readonly awaitClosed: Effect.Effect<CloseReason>
  readonly stats: Effect.Effect<ChannelStats>
  /** Internal: used by the registry to elevate or demote trust. */
  readonly setTrusted: (trusted: boolean) => Effect.Effect<void>
}

export interface ChannelDeps {
  readonly localId: NodeId
  readonly maxFrameBytes: number
  readonly outboxCapacity: number
  readonly handshakeTimeoutMillis: number
  readonly canSend: (kind: Packet["_tag"], trusted: boolean) => boolean
  readonly canReceive: (kind: Packet["_tag"], trusted: boolean) => boolean
  /** Runs the trust phase on a new link: true = trusted, false = stays untrusted; fails to reject. */
  readonly trustPhase: (
    link: Link,
    initiator: boolean,
    handshake: Queue.Queue<HandshakeMessage | LinkEnd>
  ) => Effect.Effect<boolean, CloseReason>
  readonly publishPackets: (batch: ReadonlyArray<PacketReceived>) => Effect.Effect<void>
  /** Registers the channel after its trust phase; returns the channel kept for that peer, or undefined if blocked. */
  readonly register: (channel: PeerChannel, trusted: boolean) => Effect.Effect<PeerChannel | undefined>
  readonly inboxCapacity: number
  readonly onState: (channel: PeerChannel, state: ChannelState, reason: CloseReason | undefined) => Effect.Effect<void>
  /** Outbound only: opens a new link to the same peer. */
  readonly redial: Effect.Effect<Link, CloseReason | DialFailed>
  readonly retrySchedule: Schedule.Schedule<unknown, unknown>
  readonly counters: ChannelCounters
}

export interface ChannelRuntime<E = never> {
  readonly channel: PeerChannel
  /** Runs the channel until it is closed for good; returns why. Never fails. */
  readonly run: (first: Link) => Effect.Effect<CloseReason>
  /**
   * Completes once the first trust phase has decided and the channel is registered: with this channel, or with the
   * channel that was kept instead of it (duplicate); fails with the reason if it closed before.
   */
  readonly opened: Effect.Effect<PeerChannel, CloseReason | E>
}

/**
 * What a channel is made of before its peer is known: its outbox and the signals of its opening and its close. An
 * outbound opening makes them while its handshake waits on the network (makeChannelParts), so that less is left to
 * do once the peer has answered. `E`: other errors the opener reports through `opened`.
 */
export interface ChannelParts<E = never> {
  readonly outbox: Queue.Queue<OutboxItem>
  readonly closed: Deferred.Deferred<CloseReason>
  /** The channel kept once the first trust phase decided, or why it closed first (see ChannelRuntime.opened). */
  readonly opened: Deferred.Deferred<PeerChannel, CloseReason | E>
}

export const makeChannelParts = <E = never>(
  outboxCapacity: number,
  opened?: Deferred.Deferred<PeerChannel, CloseReason | E>
): Effect.Effect<ChannelParts<E>> =>
  Effect.gen(function* () {
    return {
      outbox: yield* Queue.bounded<OutboxItem>(outboxCapacity),
      closed: yield* Deferred.make<CloseReason>(),
      opened: opened ?? (yield* Deferred.make<PeerChannel, CloseReason | E>())
    }
  })

export const makePeerChannel = <E = never>(info: ChannelInfo, deps: ChannelDeps, parts?: ChannelParts<E>) =>
  Effect.gen(function* () {
    const { outbox, closed, opened } = parts ?? (yield* makeChannelParts<E>(deps.outboxCapacity))
    // the state is a plain value (trust is read from it); its changes go to a PubSub made on the first subscription
    // (most channels have none)
    let current: ChannelState = "handshaking"
    let changesHub: PubSub.PubSub<ChannelState> | undefined
    const trustedNow = () => current === "trusted"
    const counters = deps.counters
    // the trust a reconnecting channel had before the drop: what it accepts into its outbox meanwhile
    let trustedBeforeDrop = false
    let isClosed = false
    let link: Link | undefined
    let inFlight: Array<OutboxItem> = []
    const label = `${info.remoteId.slice(0, 8)}@${info.address.includes(":") ? `[${info.address}]` : info.address}:${info.port}`

    const closedError = (reason: string) => new ChannelClosed({ peer: label, reason })

    /** The current state, then every change, for as long as the stream is read (from a subscription taken first). */
    const stateChanges: Stream.Stream<ChannelState> = Stream.unwrapScoped(
      Effect.gen(function* () {
        if (changesHub === undefined) {
          const made = yield* PubSub.unbounded<ChannelState>()
          changesHub ??= made
        }
        const subscription = yield* PubSub.subscribe(changesHub)
        // read after subscribing, in the same step: a change after this read is in the subscription, none is lost
        return Stream.concat(Stream.succeed(current), Stream.fromQueue(subscription))
      })
    )

    const setState = (state: ChannelState, reason?: CloseReason) =>
      Effect.suspend(() => {
        const previous = current
        if (previous === state) return Effect.void
        // read, set and announced in one synchronous step, so concurrent changes cannot be announced out of order
        current = state
        changesHub?.unsafeOffer(state)
        if (state === "reconnecting") trustedBeforeDrop = previous === "trusted"
        else if (state !== "handshaking") trustedBeforeDrop = false
        return deps.onState(channel, state, reason)
      })

    /** Checks and frames one packet for the outbox. */
    const prepare = (
      packet: Packet,
      written: OutboxItem["written"],
      framed?: FrameParts
    ): OutboxItem | NotTrusted | ChannelClosed | FrameTooLarge => {
      if (isClosed) return closedError("closed")
      if (!deps.canSend(packet._tag, trustedNow() || trustedBeforeDrop))
        return new NotTrusted({ kind: packet._tag, peer: label })
      const frame = framed ?? frameParts(packet)
      if (frame.size - 4 > deps.maxFrameBytes)
        return new FrameTooLarge({ size: frame.size - 4, max: deps.maxFrameBytes })
      return {
        frame,
        kind: packet._tag,
        written,
        disconnect: packet._tag === "Disconnect" ? packet.reason : undefined
      }
    }

    /** Offers prepared items in order: synchronously while there is room, then waiting, unless the channel closes. */
    const offerAll = (items: ReadonlyArray<OutboxItem>): Effect.Effect<void, ChannelClosed> => {
      let i = 0
      while (i < items.length && outbox.unsafeOffer(items[i]!)) i++
      if (i === items.length) return Effect.void
      return Effect.raceFirst(
        Effect.forEach(items.slice(i), (item) => Queue.offer(outbox, item), { discard: true }),
        Effect.zipRight(Deferred.await(closed), Effect.fail(closedError("closed while waiting for outbox room")))
      )
    }

    const offerWith = (packet: Packet, whenFull: OverflowPolicy, framed?: FrameParts) =>
      Effect.suspend((): Effect.Effect<void, NotTrusted | ChannelClosed | FrameTooLarge | OutboxFull> => {
        const item = prepare(packet, undefined, framed)
        if (!("frame" in item)) return Effect.fail(item)
        if (whenFull === "wait") return offerAll([item])
        if (outbox.unsafeOffer(item)) return Effect.void
        if (whenFull === "fail") return Effect.fail(new OutboxFull({ peer: label, capacity: deps.outboxCapacity }))
        // dropOldest: make room by dropping the packet that has waited longest
        return Effect.flatMap(Queue.poll(outbox), (oldest) => {
          if (Option.isSome(oldest) && oldest.value.written !== undefined) {
            Deferred.unsafeDone(oldest.value.written, Exit.fail(closedError("dropped: outbox full (dropOldest)")))
          }
          return offerAll([item])
        })
      })

    const enqueue = (packet: Packet, written: OutboxItem["written"]) =>
      Effect.suspend((): Effect.Effect<void, NotTrusted | ChannelClosed | FrameTooLarge> => {
        const item = prepare(packet, written)
        return "frame" in item ? offerAll([item]) : Effect.fail(item)
      })

    const enqueueAll = (packets: Iterable<Packet>) =>
      Effect.suspend((): Effect.Effect<void, NotTrusted | ChannelClosed | FrameTooLarge> => {
        const items: Array<OutboxItem> = []
        for (const packet of packets) {
          const item = prepare(packet, undefined)
          if (!("frame" in item)) return Effect.fail(item)
          items.push(item)
        }
        return offerAll(items)
      })

    const channel: PeerChannel = {
      ...info,
      label,
      state: Effect.sync(() => current),
      stateChanges,
      isTrusted: trustedNow,
      isClosed: () => isClosed,
      send: (packet) => enqueue(packet, undefined),
      offer: (packet, whenFull) => offerWith(packet, whenFull),
      offerFramed: offerWith,
      tryOffer: (packet, frame) => {
        const item = prepare(packet, undefined, frame)
        return "frame" in item ? outbox.unsafeOffer(item) : item
      },
      sendAll: enqueueAll,
      sendAndAwait: (packet) =>
        Effect.flatMap(Deferred.make<void, ChannelClosed>(), (d) =>
          Effect.zipRight(enqueue(packet, d), Deferred.await(d))
        ),
      // trusted already: done at once (the usual case right after dial); else the current state, then its changes:
      // trusted (also after a re-dial), or closed
      awaitTrusted: Effect.suspend(() =>
        trustedNow()
          ? Effect.void
          : stateChanges.pipe(
              Stream.filter((s) => s === "trusted" || s === "closed"),
              Stream.runHead,
              Effect.flatMap((s) =>
                Option.contains(s, "trusted")
                  ? Effect.void
                  : Effect.flatMap(Deferred.await(closed), (reason) => Effect.fail(closedError(reason.message)))
              )
            )
      ),
      close: (reason) =>
        Effect.suspend(() => {
          if (isClosed) return Effect.void
          const current = link
          if (current === undefined) {
            // between links (reconnecting): nothing to tell the remote
            return Effect.sync(() => (closeRequested = new LocalClose({ reason })))
          }
          return Effect.gen(function* () {
            const bye = Disconnect.make({
              address: "",
              port: 0 as Disconnect["port"],
              reason,
              data: {},
              origin: deps.localId,
              sentAt: yield* DateTime.now
            })
            yield* current.write([encodeFrame(bye)]).pipe(Effect.ignore)
          }).pipe(Effect.ensuring(Effect.sync(() => current.end(new LocalClose({ reason })))))
        }),
      awaitClosed: Deferred.await(closed),
      stats: Effect.sync(() => ({
        framesIn: counters.framesIn,
        bytesIn: counters.bytesIn,
        framesOut: counters.framesOut,
        bytesOut: counters.bytesOut,
        writesOut: counters.writesOut,
        droppedGated: counters.droppedGated,
        lastIncomingAt: counters.lastIncomingAt,
        outboxSize: Math.max(
          0,
          Option.getOrElse(outbox.unsafeSize(), () => 0)
        )
      })),
      setTrusted: (t) => (isClosed ? Effect.void : setState(t ? "trusted" : "untrusted"))
    }
    let closeRequested: LocalClose | undefined

    /** What the outbox holds (up to 1024 items), waiting for one when it is empty. */
    const nextBatch: Effect.Effect<Array<OutboxItem>> = Effect.flatMap(Queue.takeUpTo(outbox, 1024), (ready) =>
      ready.length > 0
        ? Effect.succeed(Chunk.toArray(ready))
        : Effect.flatMap(Queue.take(outbox), (first) =>
            Effect.map(Queue.takeUpTo(outbox, 1023), (more) => [first, ...more])
          )
    )

    /**
     * Writes the next batch of what is in flight, in one socket write; false once a Disconnect in it ended the link
     * (what follows it is never sent and is reported as undelivered).
     */
    const writeBatch = (current: Link) =>
      Effect.suspend(() => {
        const cut = inFlight.findIndex((i) => i.disconnect !== undefined)
        const batch = cut < 0 ? inFlight : inFlight.slice(0, cut + 1)
        // heads laid out in one buffer, large attachments passed through uncopied
        let bytes = 0
        for (const i of batch) bytes += i.frame.size
        return Effect.map(current.write(layoutFrames(batch.map((i) => i.frame))), () => {
          counters.framesOut += batch.length
          counters.writesOut++
          counters.bytesOut += bytes
          for (const i of batch) if (i.written !== undefined) Deferred.unsafeDone(i.written, Exit.void)
          inFlight = cut < 0 ? [] : inFlight.slice(cut + 1)
          if (cut < 0) return true
          closeRequested = new LocalClose({ reason: batch[cut]!.disconnect! })
          current.end(closeRequested)
          return false
        })
      })

    const writer = (current: Link) =>
      Effect.gen(function* () {
        while (true) {
          if (inFlight.length === 0) inFlight = yield* nextBatch
          if (!(yield* writeBatch(current))) return
        }
      }).pipe(Effect.catchAll((e) => Effect.sync(() => current.end(e))))

    /**
     * Right after the channel opened: writes what is queued by then in this fiber, then starts the writer's. The
     * opener runs first (this fiber yields), so the packets it sends at once leave without waiting for a fiber to be
     * started, and their senders resume before that fiber is started. Returns the writer's fiber, or undefined when
     * the link ended meanwhile.
     */
    const startWriting = (current: Link) =>
      Effect.gen(function* () {
        yield* Effect.yieldNow()
        if (inFlight.length === 0) inFlight = Chunk.toArray(yield* Queue.takeUpTo(outbox, 1024))
        if (inFlight.length > 0) {
          const more = yield* writeBatch(current).pipe(
            Effect.catchAll((e) => Effect.sync(() => (current.end(e), false)))
          )
          if (!more) return undefined
          // the senders just resumed run before the writer's fiber is started
          yield* Effect.yieldNow()
        }
        return yield* Effect.fork(writer(current))
      })

    /**
     * Gates and publishes what the link decoded. Until the trust phase has decided, application packets are held
     * (a peer may send them right behind its verdict) and gated afterwards with the trust that was decided.
     */
    const processor = (
      current: Link,
      handshake: Queue.Queue<HandshakeMessage | LinkEnd>,
      phase: { decided: boolean; readonly held: Array<Packet> }
    ) =>
      Effect.gen(function* () {
        const held = phase.held
        while (true) {
          const items = Chunk.toReadonlyArray(yield* Queue.takeBetween(current.inbox, 1, 512))
          current.drained(items)
          const deliver: Array<PacketReceived> = []
          let end: CloseReason | undefined
          const gate = (packet: Packet) => {
            if (!deps.canReceive(packet._tag, trustedNow())) {
              counters.droppedGated++
              return false
            }
            deliver.push({ channel, packet })
            if (packet._tag === "Disconnect") end = new RemoteDisconnected({ reason: packet.reason })
            return true
          }
          for (const item of items) {
            if (item instanceof LinkEnd) {
              end = item.reason
              handshake.unsafeOffer(item)
              break
            }
            if (item._tag === TRUST_DECIDED._tag) {
              phase.decided = true
              for (const p of held.splice(0)) if (gate(p) && end !== undefined) break
              if (end !== undefined) break
              continue
            }
            if (item._tag === "HandshakeProof" || item._tag === "HandshakeVerdict" || item._tag === "HandshakeData") {
              if (!phase.decided) handshake.unsafeOffer(item)
              else yield* Effect.logDebug(`ignored ${item._tag} after the trust handshake`)
              continue
            }
            if (item._tag === "Hello") {
              end = new ProtocolMismatch({ reason: "unexpected second Hello" })
              break
            }
            if (item._tag === "Reject") {
              end = new RemoteRejected({ reason: item.reason })
              break
            }
            if (!phase.decided) {
              if (held.length >= deps.inboxCapacity) {
                end = new ProtocolMismatch({ reason: "too many packets before the trust handshake completed" })
                break
              }
              held.push(item)
              continue
            }
            gate(item)
            if (end !== undefined) break
          }
          if (deliver.length > 0) yield* deps.publishPackets(deliver)
          if (end !== undefined) {
            current.end(end)
            return end
          }
        }
      })

    /** Decides trust on a link with a trust phase that exchanges messages: raced against the link's end, in time. */
    const decideTrust = (
      verdict: Effect.Effect<boolean, CloseReason>,
      proc: Fiber.Fiber<CloseReason>
    ): Effect.Effect<Either.Either<boolean, CloseReason> | { readonly _tag: "Ended"; readonly reason: CloseReason }> =>
      Effect.raceFirst(
        verdict.pipe(
          Effect.timeoutFail({
            duration: deps.handshakeTimeoutMillis,
            onTimeout: () => new HandshakeTimeout({ millis: deps.handshakeTimeoutMillis })
          }),
          Effect.either
        ),
        Fiber.join(proc).pipe(Effect.map((reason) => ({ _tag: "Ended" as const, reason })))
      )

    /**
     * Runs one link until it ends; returns why, and whether it got past the trust phase. A trust phase that decides
     * without a message (it returns an Exit, as the default one over Noise does) is taken at once: no race, no timer,
     * and the processor then runs in this fiber instead of one of its own.
     */
    const runLink = (current: Link) =>
      Effect.gen(function* () {
        link = current
        const handshake = yield* Queue.unbounded<HandshakeMessage | LinkEnd>()
        const phase = { decided: false, held: [] as Array<Packet> }
        if (closeRequested !== undefined) current.end(closeRequested)
        const verdict = deps.trustPhase(current, info.direction === "outbound", handshake)
        const immediate = Exit.isExit(verdict) && Exit.isSuccess(verdict) ? (verdict.value as boolean) : undefined
        // the link's fibers are interrupted when it ends, however it ends (see the ensuring below)
        let proc: Fiber.RuntimeFiber<CloseReason> | undefined
        let writing: Fiber.RuntimeFiber<void> | undefined
        /** The processor until the link ends: joined if it was forked for the trust phase, else run here. */
        const processed = Effect.suspend(() =>
          proc !== undefined ? Fiber.join(proc) : processor(current, handshake, phase)
        )
        return yield* Effect.gen(function* () {
          let trusted: boolean
          if (immediate !== undefined) trusted = immediate
          else {
            const running = yield* Effect.fork(processor(current, handshake, phase))
            proc = running
            const outcome = yield* decideTrust(verdict, running)
            if (outcome._tag === "Ended") return { reason: outcome.reason, opened: false }
            if (outcome._tag === "Left") {
              // when the connection itself failed first, that is the reason, and there is no one to tell
              const ended = yield* Fiber.poll(running)
              if (Option.isSome(ended) && Exit.isSuccess(ended.value)) {
                return { reason: ended.value.value, opened: false }
              }
              const reason = outcome.left
              if (reason._tag === "HandshakeFailed" || reason._tag === "HandshakeTimeout") {
                yield* current.write([encodeFrame(Reject.make({ reason: reason.message }))]).pipe(Effect.ignore)
              }
              current.end(reason)
              return { reason: yield* processed, opened: false }
            }
            trusted = outcome.right
          }
          // register only now: a newcomer never displaces a channel before it has passed the trust phase
          const winner = yield* deps.register(channel, trusted)
          if (winner === undefined) {
            yield* current.write([encodeFrame(Reject.make({ reason: "blocked" }))]).pipe(Effect.ignore)
            current.end(new LocalClose({ reason: "peer was blocked during its handshake" }))
            return { reason: yield* processed, opened: false }
          }
          if (winner !== channel) {
            yield* Deferred.succeed(opened, winner)
            const reason = new LocalClose({
              reason: `duplicate channel: keeping the one initiated by ${winner.initiatorId}`
            })
            yield* current.write([encodeFrame(Reject.make({ reason: "duplicate channel" }))]).pipe(Effect.ignore)
            current.end(reason)
            return { reason: yield* processed, opened: false }
          }
          yield* setState(trusted ? "trusted" : "untrusted")
          // nothing held yet: the processor gates from now on, in arrival order (it only ever waits between whole
          // batches, so no batch is half done); else it switches when it reaches this marker, after what it holds
          if (phase.held.length === 0) phase.decided = true
          else current.inbox.unsafeOffer(TRUST_DECIDED)
          yield* Deferred.succeed(opened, channel)
          writing = yield* startWriting(current)
          return { reason: yield* processed, opened: true }
        }).pipe(
          Effect.ensuring(
            Effect.suspend(() => {
              link = undefined
              const fibers = [proc, writing].filter((f) => f !== undefined)
              return fibers.length === 0
                ? current.stream.destroy
                : Effect.zipRight(Fiber.interruptAll(fibers), current.stream.destroy)
            })
          )
        )
      })

    const finish = (reason: CloseReason) =>
      Effect.gen(function* () {
        isClosed = true
        const undelivered = [...inFlight, ...Chunk.toArray(yield* Queue.takeAll(outbox))]
        inFlight = []
        const failure = closedError(reason.message)
        for (const i of undelivered) if (i.written !== undefined) Deferred.unsafeDone(i.written, Exit.fail(failure))
        yield* Queue.shutdown(outbox)
        yield* Deferred.fail(opened, reason)
        if (undelivered.length > 0) {
          yield* Effect.logWarning(`${undelivered.length} queued packets not delivered: ${reason.message}`)
        }
        yield* setState("closed", reason)
        yield* Deferred.succeed(closed, reason)
      })

    const run = (first: Link): Effect.Effect<CloseReason> =>
      Effect.gen(function* () {
        let current = first
        let everOpened = false
        // one retry budget across re-dials; it is renewed only when a connection gets past its trust phase, so a
        // peer that accepts TCP but never completes a handshake cannot keep the channel re-dialling forever
        // made on the first re-dial (most channels never need one)
        let budget: Schedule.ScheduleDriver<unknown> | undefined
        yield* deps.onState(channel, "handshaking", undefined)
        while (true) {
          const { opened: linkOpened, reason } = yield* runLink(current)
          if (linkOpened) {
            everOpened = true
            if (budget !== undefined) yield* budget.reset
          }
          const retryable =
            reason._tag === "ConnectionLost" &&
            info.direction === "outbound" &&
            everOpened &&
            closeRequested === undefined
          if (!retryable) return reason
          yield* Effect.logWarning(`connection lost (${reason.detail}); re-dialling`)
          yield* setState("reconnecting", reason)
          let next: Link | undefined
          while (next === undefined) {
            budget ??= yield* Schedule.driver(deps.retrySchedule)
            const more = yield* Effect.either(budget.next(undefined))
            if (closeRequested !== undefined) return closeRequested
            if (more._tag === "Left") return new ConnectionLost({ detail: `${reason.detail}; re-dial gave up` })
            const attempt = yield* Effect.either(deps.redial)
            if (attempt._tag === "Right") next = attempt.right
            else yield* Effect.logInfo(`re-dial failed: ${attempt.left.message}`)
          }
          if (closeRequested !== undefined) {
            yield* next.stream.destroy
            return closeRequested
          }
          yield* setState("handshaking")
          current = next
        }
      }).pipe(
        Effect.onExit((exit) =>
          Exit.isSuccess(exit) ? finish(exit.value) : finish(new LocalClose({ reason: "network shut down" }))
        ),
        // the rest of the fiber's logs name the peer (run is the last thing its fiber does)
        (life) =>
          Effect.zipRight(
            annotateFiber({ peer: info.remoteId, address: `${info.address}:${info.port}`, direction: info.direction }),
            life
          )
      )

    return { channel, run, opened: Deferred.await(opened) } satisfies ChannelRuntime<E>
  })
