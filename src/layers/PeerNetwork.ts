/**
 * PeerNetwork, the entry point: listens, dials, runs every channel as a fiber in one FiberSet, and applies the
 * incoming-peer policy (blocked peers, self-connections, queue- or event-based placement, the trust handshake).
 * Everything it opens belongs to the layer's scope.
 */
import { Cause, Context, Deferred, Effect, Exit, Fiber, FiberSet, Layer, Queue, Ref, Schedule } from "effect"
import type { Scope } from "effect"
import type * as net from "node:net"
import type { ByteStream, Connecting } from "../actors/Connection.js"
import { afterPendingIo, connectTcp, makeDeadlines, sharedAttempts, socketStream } from "../actors/Connection.js"
import type { Link } from "../actors/Link.js"
import { establish, helloMaker, LinkEnd, makeCounters } from "../actors/Link.js"
import type { ChannelCounters } from "../actors/Link.js"
import { listenTcp } from "../actors/Listener.js"
import type { ChannelDeps, ChannelParts, ChannelRuntime, ChannelState, PeerChannel } from "../actors/PeerChannel.js"
import { makeChannelParts, makePeerChannel } from "../actors/PeerChannel.js"
import type {
  ChannelClosed,
  CloseReason,
  ConnectionLost,
  DialFailed,
  FrameTooLarge,
  ListenFailed,
  NotTrusted,
  PeerNotFound
} from "../schema/errors.js"
import {
  HandshakeFailed,
  HandshakeTimeout,
  LocalClose,
  PeerBlocked,
  PeerIdentityMismatch,
  ProtocolMismatch
} from "../schema/errors.js"
import { Reject } from "../schema/handshake.js"
import type { HandshakeMessage } from "../schema/handshake.js"
import type { NodeId } from "../schema/ids.js"
import type { Packet } from "../schema/packets.js"
import { encodeFrame } from "../schema/wire.js"
import { IncomingTrust } from "./IncomingTrust.js"
import { annotateFiber, Category, timedSpan } from "./Logging.js"
import { NodeIdentity } from "./NodeIdentity.js"
import { PacketInbox } from "./PacketInbox.js"
import { NetworkEvent, PeerRegistry } from "./PeerRegistry.js"
import { SecureSession } from "./SecureSession.js"
import { NetworkConfig } from "./Settings.js"
import { TrustHandshake } from "./TrustHandshake.js"
import type { Verdict } from "./TrustHandshake.js"

/** An inbound peer held by queue-based placement until the application decides. */
export interface PendingPeer {
  readonly address: string
  readonly port: number
  readonly id: NodeId
  readonly accept: Effect.Effect<void>
  readonly reject: (reason: string) => Effect.Effect<void>
}

export type DialError = DialFailed | PeerBlocked | CloseReason

export interface DialOptions {
  /**
   * The node expected at that address. With an authenticating session (Noise, the default) a peer that proves another
   * identity is refused during the handshake with PeerIdentityMismatch.
   */
  readonly id?: NodeId
}

/** A link a protocol profile opened, with what the channel needs to run it (see PeerNetwork.runProfileLink). */
export interface ProfileLink {
  readonly link: Link
  readonly counters: ChannelCounters
  readonly direction: "inbound" | "outbound"
  readonly address: string
  readonly port: number
  /** Decides trust on each link of the channel, instead of the TrustHandshake service. */
  readonly trustPhase: ChannelDeps["trustPhase"]
  /** Outbound: a new link to the same peer, for re-dials. */
  readonly redial: ChannelDeps["redial"]
  /** Called with the channel once it exists, before it runs. */
  readonly started: (runtime: ChannelRuntime) => Effect.Effect<void>
}

/** Chooses another dialler for an endpoint, or undefined for the native one. */
export type DialRoute = (address: string, port: number) => Effect.Effect<PeerChannel, DialError> | undefined

export class PeerNetwork extends Context.Tag("effect-p2pnet/PeerNetwork")<
  PeerNetwork,
  {
    readonly id: NodeId
    /** The TCP port actually listened on (0 when not listening). */
    readonly port: number
    /**
     * Connects to a peer and returns its channel once the trust handshake has decided (the channel is then trusted,
     * or open but untrusted when the handshake or policy says so). If a channel to that node already exists, or one
     * opened by the peer at the same moment wins the tie-break, that channel is returned. Fails with the reason when
     * the peer refuses or the handshake fails.
     */
    readonly dial: (address: string, port: number, options?: DialOptions) => Effect.Effect<PeerChannel, DialError>
    readonly channels: Effect.Effect<ReadonlyArray<PeerChannel>>
    readonly trustedChannels: Effect.Effect<ReadonlyArray<PeerChannel>>
    readonly channel: (id: NodeId) => Effect.Effect<PeerChannel, PeerNotFound>
    /** Waits until a channel to `id` is open (dialled by either side) and returns it. */
    readonly awaitChannel: (id: NodeId) => Effect.Effect<PeerChannel>
    readonly send: (
      id: NodeId,
      packet: Packet
    ) => Effect.Effect<void, PeerNotFound | NotTrusted | ChannelClosed | FrameTooLarge>
    /** Queue-based placement: the next inbound peer waiting for a decision. */
    readonly incoming: Effect.Effect<PendingPeer>
    readonly registry: PeerRegistry["Type"]
    /**
     * Runs a link opened by a protocol profile (the compatibility profile's legacy links, layers/Compat.ts) the way a
     * native link is run: screened (itself, blocked, network), a channel registered after the profile's trust phase,
     * its packets to the same inbox, handlers and registry. `started` receives the channel before it runs. Returns
     * why the channel closed; fails when the screen refuses the link.
     */
    readonly runProfileLink: (link: ProfileLink) => Effect.Effect<CloseReason, CloseReason | PeerBlocked>
    /**
     * Sends the dials of some endpoints elsewhere for the life of the scope: `route` returns the dial to run instead
     * of the native one (the compatibility profile dials legacy peers this way, PeerConnector dials included), or
     * undefined.
     */
    readonly routeDials: (route: DialRoute) => Effect.Effect<void, never, Scope.Scope>
  }
>() {
  static readonly layer: Layer.Layer<
    PeerNetwork,
    ListenFailed,
    NetworkConfig | NodeIdentity | IncomingTrust | TrustHandshake | SecureSession | PeerRegistry | PacketInbox
  > = Layer.scoped(
    this,
    Effect.suspend(() => make)
  )
}

const make = Effect.gen(function* () {
  const settings = yield* NetworkConfig
  const keys = yield* NodeIdentity
  const trust = yield* IncomingTrust
  const handshake = yield* TrustHandshake
  const secure = yield* SecureSession
  const registry = yield* PeerRegistry
  const inbox = yield* PacketInbox
  const clock = yield* Effect.clock
  // every connection and channel fiber lives here; closing the layer's scope interrupts them all
  const fibers = yield* FiberSet.make<unknown, never>()
  const run = yield* FiberSet.runtime(fibers)<never>()
  const keyCounter = yield* Ref.make(0)
  const pending = yield* Queue.bounded<PendingPeer>(trust.policy.incomingQueueCapacity)
  const dialing = yield* sharedAttempts<PeerChannel, DialError>()
  // every opening's deadline, kept by one fiber
  const deadlines = yield* makeDeadlines()
  const placement = trust.policy.incomingPeerPlacement

  const listening = settings.listen
    ? yield* listenTcp(settings.host, settings.port, (socket) => {
        run(accept(socket))
      })
    : { host: settings.host, port: 0 }
  const listenPort = listening.port

  const timeout = <A, E, R>(self: Effect.Effect<A, E, R>) =>
    Effect.timeoutFail(self, {
      duration: settings.handshakeTimeoutMillis,
      onTimeout: () => new HandshakeTimeout({ millis: settings.handshakeTimeoutMillis })
    })

  const makeHello = helloMaker(settings, keys, listenPort)
  const establishOn = (
    stream: ByteStream,
    role: "initiator" | "responder",
    counters: ChannelCounters,
    expectedPeer?: NodeId
  ) =>
    establish(stream, role, {
      settings,
      keys,
      secure,
      hello: makeHello,
      counters,
      ...(expectedPeer === undefined ? {} : { expectedPeer })
    })
  const handshakeTimeout = () => new HandshakeTimeout({ millis: settings.handshakeTimeoutMillis })

  /**
   * Opens an accepted connection, bounded by the handshake timeout. A failure destroys the socket; so does the layer's
   * close (the listener destroys every socket it accepted), the only thing that interrupts an accepted connection.
   */
  const openAccepted = (stream: ByteStream, counters: ChannelCounters) =>
    establishOn(stream, "responder", counters).pipe(boundOnAccepted(stream))
  /** One step of an accepted connection's opening, bounded by the handshake timeout; a failure destroys the socket. */
  const boundOnAccepted =
    (stream: ByteStream) =>
    <A, E>(step: Effect.Effect<A, E>) =>
      step.pipe(
        deadlines.bound(stream, settings.handshakeTimeoutMillis, handshakeTimeout),
        Effect.tapError(() => stream.destroy)
      )
  /** Announces an inbound peer (an IncomingPeer event). */
  const announce = (link: Link) =>
    registry.publish(
      NetworkEvent.IncomingPeer({
        address: link.stream.remoteAddress,
        port: link.stream.remotePort,
        id: link.remoteHello.nodeId
      })
    )

  /**
   * Opens a dialled connection. The opening starts before the TCP connect completes (its first bytes leave as soon
   * as it does); a failure before the connect is a DialFailed, as is a connect that takes longer than its timeout.
   */
  const openDialled = (connecting: Connecting, counters: ChannelCounters, expectedPeer?: NodeId) =>
    establishOn(connecting.stream, "initiator", counters, expectedPeer).pipe(
      connecting.bounded(settings.connectTimeoutMillis, settings.handshakeTimeoutMillis, handshakeTimeout),
      Effect.onError(() => connecting.stream.destroy)
    )
  const dialAndOpen = (address: string, port: number, counters: ChannelCounters, expectedPeer?: NodeId) =>
    Effect.flatMap(connectTcp(address, port, deadlines), (connecting) =>
      openDialled(connecting, counters, expectedPeer)
    )

  const refuse = (link: Link, reason: string) =>
    link.write([encodeFrame(Reject.make({ reason }))]).pipe(Effect.ignore, Effect.zipRight(link.stream.destroy))

  const verdictOf = (verdict: Verdict): Exit.Exit<boolean, HandshakeFailed> =>
    verdict._tag === "Rejected"
      ? Exit.fail(new HandshakeFailed({ reason: verdict.reason }))
      : Exit.succeed(verdict._tag === "Trusted")

  /**
   * Runs the trust handshake on a new link. A handshake that decides without a message returns an Exit, and so does
   * this: the channel then skips the race and the timer it needs for a real exchange.
   */
  const trustPhase = (
    link: Link,
    initiator: boolean,
    queue: Queue.Queue<HandshakeMessage | LinkEnd>
  ): Effect.Effect<boolean, HandshakeFailed | ConnectionLost> => {
    const decided = decideOn(link, initiator, queue)
    const confirmed = link.stream.confirmed
    if (initiator || confirmed === undefined || placement !== "EventBased") return decided
    // a resumed (IK) opening with event-based placement: its peer is announced, and its trust decided, only once the
    // initiator has shown it is live (see `admitted`)
    return confirmed.pipe(Effect.zipRight(announce(link)), Effect.zipRight(decided))
  }
  const decideOn = (
    link: Link,
    initiator: boolean,
    queue: Queue.Queue<HandshakeMessage | LinkEnd>
  ): Effect.Effect<boolean, HandshakeFailed | ConnectionLost> => {
    if (!trust.policy.runDefaultTrustProtocol) return Exit.succeed(trust.policy.allowEnhancedPacketExchange)
    const verdict = handshake.run({
      initiator,
      local: keys,
      localHello: link.localHello,
      remoteHello: link.remoteHello,
      ...(link.stream.peer === undefined ? {} : { session: link.stream.peer }),
      settings,
      send: (m) => link.write([encodeFrame(m)]),
      receive: Effect.flatMap(Queue.take(queue), (item) =>
        item instanceof LinkEnd
          ? Effect.fail(new HandshakeFailed({ reason: `connection ended: ${item.reason.message}` }))
          : Effect.succeed(item)
      )
    })
    return Exit.isExit(verdict)
      ? Exit.flatMap(verdict as Exit.Exit<Verdict, HandshakeFailed | ConnectionLost>, verdictOf)
      : Effect.flatMap(verdict, verdictOf)
  }

  const onState = (channel: PeerChannel, state: ChannelState, reason: CloseReason | undefined) =>
    Effect.gen(function* () {
      switch (state) {
        case "handshaking":
          yield* Effect.logInfo(`channel ${channel.direction} open, handshaking`)
          break
        case "trusted":
          yield* Effect.logInfo("channel trusted")
          break
        case "untrusted":
          yield* Effect.logInfo("channel open, not trusted")
          break
        case "reconnecting":
          yield* Effect.logWarning(`channel reconnecting: ${reason?.message ?? ""}`)
          break
        case "closed":
          yield* registry.unregister(channel)
          yield* Effect.logInfo(`channel closed: ${reason?._tag ?? "?"}: ${reason?.message ?? ""}`)
          break
      }
      yield* registry.publish(NetworkEvent.ChannelStateChanged({ channel, state, reason }))
    })

  const retrySchedule =
    settings.reconnectBackoff === "fixed"
      ? Schedule.spaced(settings.reconnectDelayMillis).pipe(
          Schedule.intersect(Schedule.recurs(settings.reconnectRetries))
        )
      : Schedule.exponential(settings.reconnectDelayMillis).pipe(
          Schedule.jittered,
          Schedule.intersect(Schedule.recurs(settings.reconnectRetries))
        )

  const makeChannel = <E = never>(
    link: Link,
    counters: ChannelCounters,
    direction: "inbound" | "outbound",
    address: string,
    port: number,
    profile?: Pick<ProfileLink, "trustPhase" | "redial">,
    parts?: ChannelParts<E>
  ) =>
    Effect.gen(function* () {
      const key = yield* Ref.updateAndGet(keyCounter, (n) => n + 1)
      const remoteId = link.remoteHello.nodeId
      return yield* makePeerChannel<E>(
        {
          key,
          direction,
          address,
          port,
          remoteId,
          remoteListenPort: link.remoteHello.listenPort,
          initiatorId: direction === "outbound" ? keys.id : remoteId
        },
        {
          localId: keys.id,
          maxFrameBytes: settings.maxFrameBytes,
          outboxCapacity: settings.outboxCapacity,
          handshakeTimeoutMillis: settings.handshakeTimeoutMillis,
          canSend: trust.canSend,
          canReceive: trust.canReceive,
          trustPhase: profile?.trustPhase ?? trustPhase,
          publishPackets: (batch) => Effect.zipRight(inbox.route(batch), registry.publishPackets(batch)),
          register: registry.register,
          inboxCapacity: settings.inboxCapacity,
          onState,
          redial:
            profile?.redial ??
            Effect.gen(function* () {
              const next = yield* dialAndOpen(address, port, counters, remoteId)
              yield* screen(next).pipe(
                Effect.catchTag("PeerBlocked", (e) => Effect.fail(new LocalClose({ reason: e.message })))
              )
              if (next.remoteHello.nodeId !== remoteId) {
                yield* refuse(next, "unexpected identity")
                return yield* new ProtocolMismatch({
                  reason: `peer at ${address}:${port} is now ${next.remoteHello.nodeId}, expected ${remoteId}`
                })
              }
              return next
            }),
          retrySchedule,
          counters
        },
        parts
      )
    })

  /** Checks common to both directions once the remote's Hello is known; fails after telling the remote why. */
  const screen = (link: Link) =>
    Effect.gen(function* () {
      const id = link.remoteHello.nodeId
      if (id === keys.id) {
        yield* refuse(link, "connected to itself")
        return yield* new LocalClose({ reason: "connected to itself" })
      }
      if (yield* registry.isBlockedId(id)) {
        yield* refuse(link, "blocked")
        return yield* new PeerBlocked({ target: id })
      }
      // checked for every connection, whatever trust handshake runs
      if (link.remoteHello.network !== settings.network) {
        const reason = `network mismatch: peer is in ${JSON.stringify(link.remoteHello.network)}, this node in ${JSON.stringify(
          settings.network
        )}`
        yield* refuse(link, reason)
        return yield* new HandshakeFailed({ reason })
      }
    })

  // dial routes of protocol profiles (routeDials); empty unless a profile is in use
  const routes = yield* Ref.make<ReadonlyArray<DialRoute>>([])
  const routeDials = (route: DialRoute) =>
    Effect.acquireRelease(
      Ref.update(routes, (rs) => [...rs, route]),
      () => Ref.update(routes, (rs) => rs.filter((r) => r !== route))
    )

  const runProfileLink = (p: ProfileLink) =>
    Effect.gen(function* () {
      yield* screen(p.link)
      const rt = yield* makeChannel(p.link, p.counters, p.direction, p.address, p.port, p)
      yield* p.started(rt)
      return yield* rt.run(p.link)
    }).pipe(Effect.annotateLogs({ category: Category.Peers, address: `${p.address}:${p.port}` }))

  /**
   * One dial. Its connection runs in a fiber of its own from the start, which becomes the channel's: the channel is
   * not handed to another fiber once the peer has answered. Its parts are made while the handshake waits on the
   * network. The caller waits for the channel to open; interrupting it before then ends the attempt.
   */
  const dialOnce = (address: string, port: number, expected: NodeId | undefined) =>
    // interruptible only while waiting: a socket made is always either handed to the connection's fiber or destroyed
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function* () {
        if (yield* registry.isBlockedAddress(address)) return yield* new PeerBlocked({ target: address })
        const counters = makeCounters(clock.unsafeCurrentTimeMillis())
        // interrupted while it waits, it destroys the socket it started
        const connecting = yield* restore(connectTcp(address, port, deadlines))
        const opened = yield* Deferred.make<PeerChannel, DialError>()
        // the channel's other parts are made once the connection's fiber waits for the peer (below)
        const later: { parts?: ChannelParts<DialError> } = {}
        const connection = Effect.gen(function* () {
          yield* annotateFiber({ category: Category.Peers })
          const link = yield* openDialled(connecting, counters, expected)
          yield* screen(link)
          if (expected !== undefined && link.remoteHello.nodeId !== expected) {
            // a plain session cannot prove identity, but a Hello naming another node is still refused
            yield* refuse(link, "not the node this connection was meant for")
            return yield* new PeerIdentityMismatch({ expected, actual: link.remoteHello.nodeId })
          }
          const parts = later.parts ?? (yield* makeChannelParts<DialError>(settings.outboxCapacity, opened))
          const rt = yield* makeChannel(link, counters, "outbound", link.stream.remoteAddress, port, undefined, parts)
          // from here the channel reports through `opened` itself
          yield* rt.run(link)
        }).pipe(Effect.catchAll((e) => Deferred.fail(opened, e)))
        const fiber = run(connection)
        // nor does a dial wait for ever on a connection that died or was interrupted (the network closing) before its
        // channel opened (completing `opened` again later changes nothing)
        fiber.addObserver((exit) => {
          if (Exit.isSuccess(exit)) return
          Deferred.unsafeDone(
            opened,
            Cause.isInterruptedOnly(exit.cause)
              ? Exit.fail(new LocalClose({ reason: "network shut down" }))
              : Exit.failCause(exit.cause)
          )
        })
        return yield* restore(
          Effect.gen(function* () {
            // the connection's fiber now waits for the peer; its first bytes leave when the connect completes, which
            // this lets happen before the rest is made
            yield* afterPendingIo
            later.parts = yield* makeChannelParts<DialError>(settings.outboxCapacity, opened)
            return yield* Deferred.await(opened)
          })
        ).pipe(
          // given up before the channel opened: the attempt ends (an opened channel lives on)
          Effect.onInterrupt(() =>
            Effect.flatMap(Deferred.isDone(opened), (done) => (done ? Effect.void : Fiber.interrupt(fiber)))
          )
        )
      })
    ).pipe(timedSpan("PeerNetwork.dial", { address, port }))

  const dial = (address: string, port: number, options: DialOptions = {}): Effect.Effect<PeerChannel, DialError> =>
    Effect.gen(function* () {
      for (const route of yield* Ref.get(routes)) {
        const routed = route(address, port)
        if (routed !== undefined) return yield* routed
      }
      const existing = (yield* registry.channels).find(
        (c) => c.address === address && (c.remoteListenPort === port || (c.direction === "outbound" && c.port === port))
      )
      // a dial already running to that endpoint (perhaps for another id) is joined, not repeated
      const channel = existing ?? (yield* dialing(`${address}:${port}`, dialOnce(address, port, options.id)))
      if (options.id !== undefined && channel.remoteId !== options.id) {
        return yield* new PeerIdentityMismatch({ expected: options.id, actual: channel.remoteId })
      }
      return channel
    })

  const accept = (socket: net.Socket) => {
    const stream = socketStream(socket)
    const where = `${stream.remoteAddress}:${stream.remotePort}`
    return Effect.gen(function* () {
      // this fiber runs only this connection: its log lines are annotated once, nothing to restore
      yield* annotateFiber({ category: Category.Peers, address: where })
      if (yield* registry.isBlockedAddress(stream.remoteAddress)) {
        yield* stream.destroy
        return yield* new PeerBlocked({ target: stream.remoteAddress })
      }
      const counters = makeCounters(clock.unsafeCurrentTimeMillis())
      const link = yield* admitted(stream, counters)
      const rt = yield* makeChannel(link, counters, "inbound", stream.remoteAddress, stream.remotePort)
      yield* rt.run(link)
    }).pipe(
      // interrupted (the layer closing): the listener destroys every socket it accepted
      Effect.catchAll((e) => Effect.logInfo(`inbound connection refused: ${e._tag}: ${e.message}`))
    )
  }

  /**
   * An accepted connection's opening through admission: the session's handshake, the screen, the placement decision,
   * and this node's Hello. One span covers it (the session sets none of its own).
   */
  const admitted = (stream: ByteStream, counters: ChannelCounters) =>
    Effect.gen(function* () {
      const link = yield* openAccepted(stream, counters)
      yield* screen(link)
      const id = link.remoteHello.nodeId
      const confirmed = link.stream.confirmed
      if (confirmed !== undefined) {
        // a resumed (IK) opening: its first message could be a replay, so nothing is announced, queued or registered
        // before the initiator has shown it is live (its first transport message). With event-based placement our
        // Hello goes out with message 2 at once and the trust phase waits for the proof (announcing the peer then);
        // an application deciding is only asked about a live initiator: message 2 goes alone, and the wait is here.
        if (placement === "EventBased") {
          yield* link.admit
          return link
        }
        yield* link.write([])
        yield* confirmed.pipe(boundOnAccepted(stream))
      }
      if (placement !== "QueueBased") yield* announce(link)
      if (placement !== "EventBased") {
        const decision = yield* Deferred.make<string | undefined>()
        const held: PendingPeer = {
          address: stream.remoteAddress,
          port: stream.remotePort,
          id,
          accept: Deferred.succeed(decision, undefined).pipe(Effect.asVoid),
          reject: (reason) => Deferred.succeed(decision, reason).pipe(Effect.asVoid)
        }
        if (!pending.unsafeOffer(held)) {
          yield* refuse(link, "inbound queue full")
          return yield* new LocalClose({ reason: "inbound queue full" })
        }
        const refused = yield* Deferred.await(decision).pipe(
          timeout,
          Effect.tapError(() => refuse(link, "not accepted in time"))
        )
        if (refused !== undefined) {
          yield* refuse(link, refused)
          return yield* new LocalClose({ reason: `rejected by the application: ${refused}` })
        }
      }
      yield* link.admit
      return link
    }).pipe(timedSpan("PeerNetwork.accept", { address: stream.remoteAddress, port: stream.remotePort }))

  yield* Effect.logInfo(`node ${keys.id} listening on ${listening.host}:${listenPort}`).pipe(
    Effect.annotateLogs({ category: Category.Peers })
  )

  return PeerNetwork.of({
    id: keys.id,
    port: listenPort,
    dial,
    channels: registry.channels,
    trustedChannels: registry.trustedChannels,
    channel: registry.channel,
    awaitChannel: registry.awaitChannel,
    send: (id, packet) => Effect.flatMap(registry.channel(id), (c) => c.send(packet)),
    incoming: Queue.take(pending),
    registry,
    runProfileLink,
    routeDials
  })
})
