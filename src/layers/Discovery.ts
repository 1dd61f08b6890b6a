/**
 * LAN discovery: UDP listeners on the designated ports and the multicast group, and a broadcaster announcing this
 * node (a signed DiscoveryDatagram) to each interface's broadcast address, to loopback and to the group. A valid
 * announcement makes the node offer `<datagram source address>:<advertised port>` to the PeerConnector (policy,
 * dedup, dial rate); anything else is dropped and counted. Built on top of a network (`discoveryLayer()`), it also
 * takes over the RotateBroadcastPort routine. Fixes of the original: B9 (rotation moves the broadcaster), B10 (stop
 * closes every socket), B11 (multicast on a fixed group and port), B12 (bad datagrams never stop a listener), B13
 * (never dial an address from the payload).
 */
import type { ConfigError } from "effect"
import {
  Clock,
  Config,
  ConfigError as ConfigErrors,
  Context,
  Data,
  Effect,
  Either,
  Exit,
  ExecutionStrategy,
  Layer,
  Option,
  PubSub,
  Queue,
  Random,
  Ref,
  Schema,
  Scope,
  Stream,
  SynchronizedRef
} from "effect"
import type * as dgram from "node:dgram"
import { checkDatagram, encodeAnnouncement } from "../actors/DiscoveryCodec.js"
import { sendDatagram, trySocket, udpSocket } from "../actors/DiscoverySockets.js"
import { baseIntervalMillis, broadcastTargets, jitterMillis, multicastInterfaces } from "../actors/DiscoveryTargets.js"
import { ROTATE_BROADCAST_PORT } from "./DefaultRoutines.js"
import { dropReasons, DiscoverySettings } from "../schema/discovery.js"
import type { DropReason } from "../schema/discovery.js"
import { DiscoveryUnavailable } from "../schema/errors.js"
import type { NoUsableInterface } from "../schema/errors.js"
import { IpAddress, PeerAddress, Port } from "../schema/ids.js"
import type { NodeId } from "../schema/ids.js"
import { isLoopbackIpv4, NetworkInterfaces } from "./Interfaces.js"
import { Category, scopedWarn } from "./Logging.js"
import { NodeIdentity } from "./NodeIdentity.js"
import { PeerConnector } from "./PeerConnector.js"
import { PeerNetwork } from "./PeerNetwork.js"
import { PeerRegistry } from "./PeerRegistry.js"
import { RoutineScheduler } from "./RoutineScheduler.js"
import { NetworkConfig } from "./Settings.js"

export type DiscoverySettingsInput = Partial<ConstructorParameters<typeof DiscoverySettings>[0]>

/** The discovery settings every part of discovery reads. */
export class DiscoveryConfig extends Context.Tag("effect-p2pnet/DiscoveryConfig")<
  DiscoveryConfig,
  DiscoverySettings
>() {
  static readonly layer = (settings: DiscoverySettingsInput = {}) =>
    Layer.succeed(this, DiscoverySettings.make(settings))
  static readonly layerConfig: Layer.Layer<DiscoveryConfig, ConfigError.ConfigError> = Layer.effect(
    this,
    Effect.suspend(() => discoverySettingsFromEnv)
  )
}

export type DiscoveryEvent = Data.TaggedEnum<{
  /** A valid announcement of another node; `offered` is false when it was heard at another address just before. */
  Discovered: { readonly peer: PeerAddress; readonly via: "broadcast" | "multicast"; readonly offered: boolean }
  Dropped: { readonly reason: DropReason; readonly source: string; readonly detail: string }
}>
export const DiscoveryEvent = Data.taggedEnum<DiscoveryEvent>()

export interface DiscoveryStats {
  readonly running: boolean
  readonly broadcasterPort: number
  /** UDP ports listened on now (designated ports, then the multicast port). */
  readonly listening: ReadonlyArray<number>
  /** Datagrams sent (one per destination and round). */
  readonly sent: number
  readonly sendFailures: number
  readonly received: number
  /** Valid announcements of other nodes. */
  readonly accepted: number
  /** Announcements passed to the PeerConnector (which applies its own policy and dedup). */
  readonly offered: number
  readonly dropped: Readonly<Record<DropReason, number>>
}

export class Discovery extends Context.Tag("effect-p2pnet/Discovery")<
  Discovery,
  {
    /** Binds the listeners and starts the broadcaster; does nothing when already running. */
    readonly start: Effect.Effect<void, DiscoveryUnavailable | NoUsableInterface>
    /** Stops the broadcaster and closes every socket (the ports are free when it returns); idempotent. */
    readonly stop: Effect.Effect<void>
    readonly isRunning: Effect.Effect<boolean>
    /** Sends one announcement round now (when running), besides the scheduled ones. */
    readonly announce: Effect.Effect<void>
    /**
     * Moves the broadcaster to another designated port (at random among the others) and returns it; with a single
     * distinct port it stays and says so (the original looped forever: B9). Undefined when broadcast is off.
     */
    readonly rotate: Effect.Effect<number | undefined>
    readonly broadcasterPort: Effect.Effect<number>
    /** The wait before the next round as the broadcaster computes it now (clock, trusted peers, jitter). */
    readonly nextInterval: Effect.Effect<number>
    readonly stats: Effect.Effect<DiscoveryStats>
    readonly events: Stream.Stream<DiscoveryEvent>
    /** Subscribes now, for the life of the scope (nothing published after this returns is missed). */
    readonly subscribe: Effect.Effect<Stream.Stream<DiscoveryEvent>, never, Scope.Scope>
  }
>() {
  static readonly layer: Layer.Layer<Discovery, never, DiscoveryRequirements> = Layer.scoped(
    this,
    Effect.suspend(() => make)
  )
}

/** What Discovery.layer needs: a network's services, the interface scan and the discovery settings. */
export type DiscoveryRequirements =
  | DiscoveryConfig
  | NetworkInterfaces
  | NetworkConfig
  | NodeIdentity
  | PeerNetwork
  | PeerRegistry
  | PeerConnector
  | RoutineScheduler

/** Received datagrams waiting for their checks; more are dropped ("overloaded"). */
export const DISCOVERY_INBOX_CAPACITY = 256
/** A node heard at one address is not offered at another one for this long (both copies of one round arrive). */
export const SAME_NODE_WINDOW_MILLIS = 60_000
const SEEN_LIMIT = 4096

interface Incoming {
  readonly bytes: Buffer | undefined
  readonly size: number
  readonly source: string
  readonly via: "broadcast" | "multicast"
}

interface Sender {
  readonly socket: dgram.Socket
  /** The multicast options could be set (loopback mode: TTL 0); without them nothing is sent to the group. */
  readonly multicastOk: boolean
}

interface Running {
  readonly scope: Scope.CloseableScope
  readonly sender: Sender
  readonly listening: ReadonlyArray<number>
}

const make = Effect.gen(function* () {
  const settings = yield* DiscoveryConfig
  const networkSettings = yield* NetworkConfig
  const keys = yield* NodeIdentity
  const network = yield* PeerNetwork
  const registry = yield* PeerRegistry
  const connector = yield* PeerConnector
  const interfaces = yield* NetworkInterfaces
  const scheduler = yield* RoutineScheduler
  const layerScope = yield* Effect.scope
  const mode = settings.interfaces
  const ports = [...new Set(settings.designatedPorts)]
  const events = yield* Effect.acquireRelease(PubSub.sliding<DiscoveryEvent>(1024), PubSub.shutdown)
  const first =
    settings.broadcasterPort !== 0 ? settings.broadcasterPort : ports[yield* Random.nextIntBetween(0, ports.length)]!
  const port = yield* Ref.make(first)
  const running = yield* SynchronizedRef.make(Option.none<Running>())
  const rounds = yield* Effect.makeSemaphore(1)
  const counters = {
    sent: 0,
    sendFailures: 0,
    received: 0,
    accepted: 0,
    offered: 0,
    dropped: Object.fromEntries(dropReasons.map((r) => [r, 0])) as Record<DropReason, number>
  }
  // node id -> where and when it was last offered; insertion order is age order
  const seen = new Map<NodeId, { address: string; at: number }>()

  const drop = (reason: DropReason, source: string, detail: string) =>
    Effect.gen(function* () {
      counters.dropped[reason]++
      if (reason !== "self") yield* Effect.logDebug(`dropped discovery datagram from ${source} (${reason}): ${detail}`)
      yield* PubSub.publish(events, DiscoveryEvent.Dropped({ reason, source, detail }))
    })

  const handle = (item: Incoming) =>
    Effect.gen(function* () {
      if (mode === "loopback" && !isLoopbackIpv4(item.source)) {
        return yield* drop("source", item.source, "not a loopback address (interfaces mode loopback)")
      }
      if (item.bytes === undefined) {
        return yield* drop("oversized", item.source, `${item.size} bytes, limit ${settings.maxDatagramBytes}`)
      }
      const now = yield* Clock.currentTimeMillis
      const checked = checkDatagram(item.bytes, {
        network: networkSettings.network,
        networkKey: networkSettings.networkKey,
        self: keys.id,
        now,
        maxAgeMillis: settings.maxAgeMillis,
        maxDatagramBytes: settings.maxDatagramBytes
      })
      if (Either.isLeft(checked)) return yield* drop(checked.left.reason, item.source, checked.left.detail)
      const d = checked.right
      counters.accepted++
      // B13: the address is where the datagram came from, never one named in the payload
      const peer = PeerAddress.make({ address: IpAddress.make(item.source), port: Port.make(d.port), id: d.id })
      const before = seen.get(d.id)
      const offered =
        before === undefined || before.address === item.source || now - before.at > SAME_NODE_WINDOW_MILLIS
      if (before === undefined) yield* Effect.logInfo(`discovered ${d.id} at ${peer.label} (${item.via})`)
      if (offered) {
        seen.delete(d.id)
        seen.set(d.id, { address: item.source, at: now })
        if (seen.size > SEEN_LIMIT) seen.delete(seen.keys().next().value!)
        counters.offered++
        yield* connector.offer([peer])
      }
      yield* PubSub.publish(events, DiscoveryEvent.Discovered({ peer, via: item.via, offered }))
    }).pipe(Effect.annotateLogs({ category: Category.LAN, address: item.source }))

  const send = (sender: dgram.Socket, bytes: Uint8Array, to: number, address: string) =>
    sendDatagram(sender, bytes, to, address).pipe(
      Effect.matchEffect({
        onSuccess: () => Effect.sync(() => void counters.sent++),
        onFailure: (e) =>
          Effect.zipRight(
            Effect.sync(() => void counters.sendFailures++),
            Effect.logDebug(`discovery send to ${address}:${to} failed: ${e}`)
          )
      })
    )

  const refuse = (what: string) =>
    Effect.zipRight(
      Effect.sync(() => void counters.sendFailures++),
      Effect.logWarning(`refused to send discovery to ${what}: interfaces mode is loopback`)
    )

  /** One announcement to every broadcast target and out of every multicast interface. */
  const round = (sender: Sender) =>
    rounds.withPermits(1)(
      Effect.gen(function* () {
        if (network.port === 0) return
        const table = Option.getOrUndefined(yield* Effect.option(interfaces.current))
        const bytes = encodeAnnouncement(keys, {
          network: networkSettings.network,
          networkKey: networkSettings.networkKey,
          port: network.port,
          sentAt: yield* Clock.currentTimeMillis
        })
        if (settings.broadcast) {
          const to = yield* Ref.get(port)
          for (const target of broadcastTargets(table, mode)) {
            // the one place broadcasts leave: in loopback mode nothing outside 127.0.0.0/8
            if (mode === "loopback" && !isLoopbackIpv4(target)) yield* refuse(target)
            else yield* send(sender.socket, bytes, to, target)
          }
        }
        if (settings.multicast && sender.multicastOk) {
          for (const local of multicastInterfaces(table, mode)) {
            if (mode === "loopback" && !isLoopbackIpv4(local)) {
              yield* refuse(`the group out of ${local}`)
              continue
            }
            // sends are awaited one by one, so the interface set here is the one this datagram leaves by
            const failed = trySocket(() => sender.socket.setMulticastInterface(local))
            if (failed !== undefined) {
              counters.sendFailures++
              yield* Effect.logDebug(`cannot send multicast out of ${local}: ${failed}`)
              continue
            }
            yield* send(sender.socket, bytes, settings.multicastPort, settings.multicastGroup)
          }
        }
      })
    )

  /** The wait after a round that started at `now`: the sine (or the slow end when throttled) plus jitter. */
  const intervalAt = (now: number) =>
    Effect.gen(function* () {
      const trusted = settings.enoughPeers > 0 ? (yield* registry.trustedChannels).length : 0
      const base = baseIntervalMillis(now, settings, settings.enoughPeers > 0 && trusted >= settings.enoughPeers)
      return base + (yield* jitterMillis(settings))
    })
  const nextInterval = Effect.flatMap(Clock.currentTimeMillis, intervalAt)

  /** Everything one run owns, acquired in the run's scope. */
  const setup = Effect.gen(function* () {
    const table = yield* interfaces.scan
    const warn = yield* scopedWarn
    const inbox = yield* Effect.acquireRelease(Queue.dropping<Incoming>(DISCOVERY_INBOX_CAPACITY), Queue.shutdown)
    const onMessage = (via: Incoming["via"]) => (message: Buffer, remote: dgram.RemoteInfo) => {
      counters.received++
      const bytes = message.length > settings.maxDatagramBytes ? undefined : message
      if (!Queue.unsafeOffer(inbox, { bytes, size: message.length, source: remote.address, via })) {
        counters.dropped.overloaded++
      }
    }
    const onError = (e: Error) => warn(`discovery socket error: ${e.message}`)
    const listening: Array<number> = []
    const failures: Array<string> = []
    const listen = (p: number, via: Incoming["via"]) =>
      udpSocket({ port: p, address: "0.0.0.0", reuseAddr: true, onMessage: onMessage(via), onError }).pipe(
        Effect.tap(() => Effect.sync(() => listening.push(p))),
        Effect.tapError((e) =>
          Effect.zipRight(
            Effect.sync(() => failures.push(e.reason)),
            Effect.logWarning(e.message)
          )
        ),
        Effect.option
      )
    if (settings.broadcast) for (const p of ports) yield* listen(p, "broadcast")
    const group = settings.multicast
      ? Option.getOrUndefined(yield* listen(settings.multicastPort, "multicast"))
      : undefined
    if (group !== undefined) {
      trySocket(() => group.setMulticastLoopback(true))
      const joined = new Set<string>()
      const join = (t: typeof table) =>
        Effect.gen(function* () {
          const wanted = new Set(multicastInterfaces(t, mode))
          for (const local of joined) {
            if (!wanted.has(local)) {
              trySocket(() => group.dropMembership(settings.multicastGroup, local))
              joined.delete(local)
            }
          }
          for (const local of wanted) {
            if (joined.has(local)) continue
            const failed = trySocket(() => group.addMembership(settings.multicastGroup, local))
            if (failed === undefined) joined.add(local)
            else yield* Effect.logWarning(`cannot join ${settings.multicastGroup} on ${local}: ${failed}`)
          }
        })
      yield* join(table)
      // interfaces come and go (the RefreshInterfaces routine): join the group on the new ones
      yield* Effect.forkScoped(Stream.runForEach(interfaces.changes, join))
    }
    if ((settings.broadcast || settings.multicast) && listening.length === 0) {
      return yield* new DiscoveryUnavailable({ reason: `no discovery port could be bound (${failures.join("; ")})` })
    }
    const socket = yield* udpSocket({
      port: 0,
      address: mode === "loopback" ? "127.0.0.1" : "0.0.0.0",
      reuseAddr: false,
      onMessage: () => {},
      onError
    })
    const setupFailed =
      trySocket(() => socket.setBroadcast(true)) ??
      trySocket(() => socket.setMulticastLoopback(true)) ??
      trySocket(() => socket.setMulticastTTL(mode === "loopback" ? 0 : settings.multicastTtl))
    if (setupFailed !== undefined) yield* Effect.logWarning(`discovery sender: ${setupFailed}; multicast disabled`)
    const sender: Sender = { socket, multicastOk: setupFailed === undefined }
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(inbox), handle)))
    if (network.port === 0) yield* Effect.logWarning("not listening for TCP connections: nothing to announce")
    // rounds start one interval apart, however long a round's sends take
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function* () {
          const startedAt = yield* Clock.currentTimeMillis
          yield* round(sender)
          const due = startedAt + (yield* intervalAt(startedAt))
          yield* Effect.sleep(Math.max(0, due - (yield* Clock.currentTimeMillis)))
        })
      )
    )
    return { sender, listening }
  })

  const launch = Effect.gen(function* () {
    const scope = yield* Scope.fork(layerScope, ExecutionStrategy.sequential)
    const exit = yield* Effect.exit(Scope.extend(setup, scope))
    if (Exit.isFailure(exit)) {
      yield* Scope.close(scope, exit)
      return yield* Effect.failCause(exit.cause)
    }
    yield* Effect.logInfo(
      `LAN discovery started (listening on UDP ${exit.value.listening.join(", ")}, ` +
        `broadcaster port ${yield* Ref.get(port)}, interfaces ${mode})`
    )
    const r: Running = { ...exit.value, scope }
    return r
  })

  const start = SynchronizedRef.updateEffect(running, (current) =>
    Option.isSome(current) ? Effect.succeed(current) : Effect.map(launch, Option.some)
  ).pipe(Effect.annotateLogs({ category: Category.LAN }))

  const stop = SynchronizedRef.updateEffect(running, (current) =>
    Option.match(current, {
      onNone: () => Effect.succeed(current),
      onSome: (r) =>
        Scope.close(r.scope, Exit.void).pipe(
          Effect.zipRight(Effect.logInfo("LAN discovery stopped")),
          Effect.as(Option.none<Running>())
        )
    })
  ).pipe(Effect.annotateLogs({ category: Category.LAN }))

  const rotate = Effect.gen(function* () {
    if (!settings.broadcast) return undefined
    const current = yield* Ref.get(port)
    const others = ports.filter((p) => p !== current)
    if (others.length === 0) {
      yield* Effect.logInfo(`broadcaster stays on port ${current}: no other designated port`)
      return current
    }
    const next = others[yield* Random.nextIntBetween(0, others.length)]!
    yield* Ref.set(port, next)
    yield* Effect.logInfo(`broadcaster rotated to port ${next}`)
    return next
  }).pipe(Effect.annotateLogs({ category: Category.LAN }))

  // RotateBroadcastPort now moves this broadcaster (B9); the log-only routine comes back when discovery goes
  yield* Effect.acquireRelease(replaceRoutine(scheduler, ROTATE_BROADCAST_PORT, rotate), () =>
    replaceRoutine(scheduler, ROTATE_BROADCAST_PORT, Effect.logDebug("no LAN broadcaster to rotate"))
  )
  yield* Effect.addFinalizer(() => stop)

  return Discovery.of({
    start,
    stop,
    isRunning: Effect.map(SynchronizedRef.get(running), Option.isSome),
    announce: Effect.flatMap(
      SynchronizedRef.get(running),
      Option.match({ onNone: () => Effect.void, onSome: (r) => round(r.sender) })
    ),
    rotate,
    broadcasterPort: Ref.get(port),
    nextInterval,
    stats: Effect.gen(function* () {
      const r = yield* SynchronizedRef.get(running)
      return {
        running: Option.isSome(r),
        broadcasterPort: yield* Ref.get(port),
        listening: Option.match(r, { onNone: () => [], onSome: (r) => [...r.listening] }),
        sent: counters.sent,
        sendFailures: counters.sendFailures,
        received: counters.received,
        accepted: counters.accepted,
        offered: counters.offered,
        dropped: { ...counters.dropped }
      }
    }),
    events: Stream.fromPubSub(events),
    subscribe: Effect.map(PubSub.subscribe(events), Stream.fromQueue)
  })
})

/** Swaps a registered routine's body, keeping its interval and whether it runs. */
const replaceRoutine = (scheduler: RoutineScheduler["Type"], name: string, run: Effect.Effect<unknown>) =>
  Effect.gen(function* () {
    const info = (yield* scheduler.list).find((r) => r.name === name)
    if (info !== undefined) yield* scheduler.remove(name).pipe(Effect.ignore)
    yield* scheduler.add(name, Effect.asVoid(run), info?.intervalMillis ?? 30_000).pipe(Effect.ignore)
    if (info?.running === true) yield* scheduler.start(name).pipe(Effect.ignore)
  })

const startOnBuild = Layer.effectDiscard(
  Effect.gen(function* () {
    const settings = yield* DiscoveryConfig
    if (settings.enabled) yield* Effect.flatMap(Discovery, (d) => d.start)
  })
)

const compose = <E>(config: Layer.Layer<DiscoveryConfig, E>, interfaces: Layer.Layer<NetworkInterfaces>) =>
  startOnBuild.pipe(
    Layer.provideMerge(Discovery.layer),
    Layer.provideMerge(NetworkInterfaces.routine),
    Layer.provideMerge(Layer.merge(config, interfaces))
  )

export interface DiscoveryLayerOptions {
  /** Where interfaces come from (default: node:os). */
  readonly interfaces?: Layer.Layer<NetworkInterfaces>
}

/**
 * Adds LAN discovery to a network: Discovery, its settings and the interface scan (with the RefreshInterfaces
 * routine, stopped). Discovery starts when the layer is built (unless `enabled: false`) and stops when its scope closes.
 *
 * @example
 * const Node = discoveryLayer({ interfaces: "loopback" }).pipe(Layer.provideMerge(networkLayerWith({ port: 0 })))
 */
export const discoveryLayer = (settings: DiscoverySettingsInput = {}, options: DiscoveryLayerOptions = {}) =>
  compose(DiscoveryConfig.layer(settings), options.interfaces ?? NetworkInterfaces.layer)

/** The same, with the settings read from P2P_* environment variables (README, "LAN discovery"). */
export const discoveryLayerConfig = compose(DiscoveryConfig.layerConfig, NetworkInterfaces.layer)

const int = (name: string, def: number) => Config.integer(name).pipe(Config.withDefault(def))
const bool = (name: string, def: boolean) => Config.boolean(name).pipe(Config.withDefault(def))

/** Reads DiscoverySettings from P2P_* environment variables; every one is optional. */
export const discoverySettingsFromEnv = Effect.gen(function* () {
  const d = DiscoverySettings.make({})
  const raw = yield* Config.all({
    enabled: bool("P2P_DISCOVERY", d.enabled),
    designatedPorts: Config.array(Config.integer(), "P2P_DESIGNATED_PORTS").pipe(
      Config.withDefault<ReadonlyArray<number>>(d.designatedPorts)
    ),
    broadcasterPort: int("P2P_BROADCASTER_PORT", d.broadcasterPort),
    broadcast: bool("P2P_BROADCAST", d.broadcast),
    multicast: bool("P2P_MULTICAST", d.multicast),
    multicastGroup: Config.string("P2P_MULTICAST_GROUP").pipe(Config.withDefault(d.multicastGroup)),
    multicastPort: int("P2P_MULTICAST_PORT", d.multicastPort),
    multicastTtl: int("P2P_MULTICAST_TTL", d.multicastTtl),
    interfaces: Config.literal("all", "loopback")("P2P_DISCOVERY_INTERFACES").pipe(Config.withDefault(d.interfaces)),
    fastIntervalMillis: int("P2P_DISCOVERY_FAST_MS", d.fastIntervalMillis),
    slowIntervalMillis: int("P2P_DISCOVERY_SLOW_MS", d.slowIntervalMillis),
    wavePeriodMillis: int("P2P_DISCOVERY_PERIOD_MS", d.wavePeriodMillis),
    jitterMinMillis: int("P2P_DISCOVERY_JITTER_MIN_MS", d.jitterMinMillis),
    jitterMaxMillis: int("P2P_DISCOVERY_JITTER_MAX_MS", d.jitterMaxMillis),
    enoughPeers: int("P2P_DISCOVERY_ENOUGH_PEERS", d.enoughPeers),
    maxDatagramBytes: int("P2P_DISCOVERY_MAX_DATAGRAM_BYTES", d.maxDatagramBytes),
    maxAgeMillis: int("P2P_DISCOVERY_MAX_AGE_MS", d.maxAgeMillis)
  })
  return yield* Schema.decodeUnknown(DiscoverySettings)(raw).pipe(
    Effect.mapError((e) => ConfigErrors.InvalidData([], `invalid discovery settings: ${e.message}`))
  )
})
