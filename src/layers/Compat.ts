/**
 * The compatibility profile: this node talks to unmodified P2PNet (.NET) peers on their own wire (reference spec
 * sections 1-4.1) beside its native peers. A TCP listener of its own in the original's port range, a legacy dialler
 * that PeerNetwork.dial (and so the PeerConnector) uses for endpoints known to be legacy, and the original's
 * "Ping from" trust protocol when asked for. Legacy connections become ordinary PeerChannels (actors/LegacyLink.ts),
 * so their packets reach the same handlers, inbox and registry, and Distribution.broadcast reaches legacy peers too.
 * `compatLayer` adds legacy LAN discovery (layers/LegacyDiscovery.ts) and legacy bootstrap (layers/CompatBootstrap.ts).
 */
import {
  Config,
  ConfigError as ConfigErrors,
  Context,
  Deferred,
  Effect,
  FiberSet,
  Layer,
  Option,
  Random,
  Schema,
  Scope,
  Stream
} from "effect"
import type { ConfigError } from "effect"
import type { LegacyLink } from "../actors/LegacyLink.js"
import { legacyNodeId, makeLegacyLink } from "../actors/LegacyLink.js"
import type * as net from "node:net"
import type { ByteStream } from "../actors/Connection.js"
import { dialTcp, makeDeadlines, sharedAttempts, socketStream } from "../actors/Connection.js"
import type { Link } from "../actors/Link.js"
import { makeCounters } from "../actors/Link.js"
import { listenTcp } from "../actors/Listener.js"
import type { ChannelRuntime, PeerChannel } from "../actors/PeerChannel.js"
import { CompatSettings, LegacyDiscoverySettings } from "../schema/compat.js"
import type { CompatSettingsInput } from "../schema/compat.js"
import type { CloseReason, DialFailed } from "../schema/errors.js"
import { LocalClose, PeerBlocked } from "../schema/errors.js"
import type { ListenFailed } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import type { InterfaceTable } from "../schema/interfaces.js"
import { encodeLegacyFrame, legacyOrigin, PureMessagePacket } from "../schema/legacy/packets.js"
import { NetworkInterfaces } from "./Interfaces.js"
import { Category } from "./Logging.js"
import { NodeIdentity } from "./NodeIdentity.js"
import type { DialError } from "./PeerNetwork.js"
import { PeerNetwork } from "./PeerNetwork.js"
import { NetworkEvent, PeerRegistry } from "./PeerRegistry.js"
import { NetworkConfig } from "./Settings.js"

export class CompatConfig extends Context.Tag("effect-p2pnet/CompatConfig")<CompatConfig, CompatSettings>() {
  static readonly layer = (settings: CompatSettingsInput = {}) =>
    Layer.succeed(
      this,
      CompatSettings.make({ ...settings, discovery: LegacyDiscoverySettings.make(settings.discovery ?? {}) })
    )
  static readonly layerConfig: Layer.Layer<CompatConfig, ConfigError.ConfigError> = Layer.effect(
    this,
    Effect.suspend(() => compatSettingsFromEnv)
  )
}

export class CompatProfile extends Context.Tag("effect-p2pnet/CompatProfile")<
  CompatProfile,
  {
    readonly settings: CompatSettings
    /** The legacy TCP listener's port (0 when not listening). */
    readonly port: number
    /** The address written in "Ping from <ip>" and in discovery datagrams. */
    readonly advertisedAddress: string
    /**
     * Connects to a legacy peer and returns its channel, open and (until the ping protocol trusts it) untrusted. A
     * channel already open to that endpoint, or from that address (the original keeps one connection per address),
     * is returned instead.
     */
    readonly dial: (address: string, port: number) => Effect.Effect<PeerChannel, DialError>
    /** Marks an endpoint as legacy: PeerNetwork.dial, and so the PeerConnector, reach it with the legacy protocol. */
    readonly markLegacy: (address: string, port: number) => Effect.Effect<void>
    readonly isLegacyEndpoint: (address: string, port: number) => boolean
    /** Whether a channel runs the legacy protocol. */
    readonly isLegacy: (channel: PeerChannel) => boolean
  }
>() {
  static readonly layer: Layer.Layer<
    CompatProfile,
    ListenFailed,
    CompatConfig | NetworkConfig | NodeIdentity | PeerNetwork | PeerRegistry | NetworkInterfaces
  > = Layer.scoped(
    this,
    Effect.suspend(() => make)
  )
}

/** The original's LocalIPV4Address: the last IPv4 address of the primary interface (spec 2.1), else 127.0.0.1. */
export const primaryIpv4 = (table: Option.Option<InterfaceTable>): string =>
  Option.flatMap(table, (t) => t.primary).pipe(
    Option.flatMapNullable((i) => i.ipv4[i.ipv4.length - 1]?.address),
    Option.getOrElse(() => "127.0.0.1")
  )

const localIpv4 = Effect.flatMap(NetworkInterfaces, (interfaces) =>
  Effect.map(Effect.option(interfaces.current), primaryIpv4)
)

/** Legacy endpoints remembered at most (a PeerGroup may name many). */
const ENDPOINT_LIMIT = 4096

const isLegacyLink = (link: Link): link is LegacyLink => "sendLegacy" in link

const make = Effect.gen(function* () {
  const compat = yield* CompatConfig
  const settings = yield* NetworkConfig
  const keys = yield* NodeIdentity
  const network = yield* PeerNetwork
  const registry = yield* PeerRegistry
  const clock = yield* Effect.clock
  const policy = settings.trust
  const fibers = yield* FiberSet.make<unknown, never>()
  const run = yield* FiberSet.runtime(fibers)<never>()
  // "address:port" of the endpoints known to be legacy; insertion order is age order, the oldest forgotten first
  const endpoints = new Set<string>()
  const remember = (k: string) => {
    endpoints.delete(k)
    endpoints.add(k)
    if (endpoints.size > ENDPOINT_LIMIT) endpoints.delete(endpoints.values().next().value!)
  }
  // channel key -> channel, for the legacy channels open now
  const legacy = new Map<number, PeerChannel>()
  const dialing = yield* sharedAttempts<PeerChannel, DialError>()
  // the connect deadlines of legacy dials, kept by one fiber
  const deadlines = yield* makeDeadlines()
  const advertisedAddress =
    compat.advertisedAddress !== ""
      ? compat.advertisedAddress
      : compat.discovery.interfaces === "loopback"
        ? "127.0.0.1"
        : yield* localIpv4
  const pingTrust = compat.pingTrust && policy.runDefaultTrustProtocol

  const key = (address: string, port: number) => `${address}:${port}`
  const markLegacy = (address: string, port: number) => Effect.sync(() => remember(key(address, port)))

  const host = compat.host ?? settings.host
  const onSocket = (socket: net.Socket) => run(accept(socketStream(socket)))
  const listening = compat.listen ? yield* listen(compat, host, onSocket) : { host, port: 0 }

  const ping = () =>
    encodeLegacyFrame(
      new PureMessagePacket(
        {
          Message: `Ping from ${advertisedAddress}`,
          ...legacyOrigin(compat.identifier, clock.unsafeCurrentTimeMillis())
        },
        true
      )
    )

  /**
   * The original's DefaultPingHandler on one link (spec 4.1): a ping now and every interval until the peer's pings
   * made it trusted (and at least `pingsToTrust` of ours went out, so the peer can trust us too); the channel is
   * elevated once `pingsToTrust` pings came in. Nothing is authenticated: any peer that sends the text is trusted.
   */
  const pinging = (link: LegacyLink) =>
    Effect.gen(function* () {
      for (let sent = 0; sent < compat.maxPings; sent++) {
        if (link.pingsReceived() >= compat.pingsToTrust && sent >= compat.pingsToTrust) return
        yield* link.sendLegacy(ping())
        yield* Effect.sleep(compat.pingIntervalMillis)
      }
    }).pipe(Effect.raceFirst(link.ended), Effect.ignore)

  const elevation = (link: LegacyLink, channel: Deferred.Deferred<PeerChannel>) =>
    Effect.gen(function* () {
      yield* link.awaitPings
      const c = yield* Deferred.await(channel)
      // once this link's trust phase has decided (the channel says untrusted), not before
      const state = yield* c.stateChanges.pipe(
        Stream.filter((s) => s === "untrusted" || s === "trusted" || s === "closed"),
        Stream.runHead
      )
      if (!Option.contains(state, "untrusted")) return
      yield* c.setTrusted(true)
      yield* Effect.logWarning(
        `legacy peer trusted after ${link.pingsReceived()} "Ping from" messages: unauthenticated (spec 4.1, B15)`
      )
    }).pipe(Effect.raceFirst(Effect.asVoid(link.ended)))

  /** Runs one legacy connection as a channel until it closes; `ready` gets the channel runtime (dials wait on it). */
  const connect = (
    raw: ByteStream,
    peer: { readonly direction: "inbound" | "outbound"; readonly address: string; readonly port: number },
    remoteId: NodeId,
    ready: Deferred.Deferred<ChannelRuntime, DialError> | undefined
  ) =>
    Effect.gen(function* () {
      const scope = yield* Effect.scope
      const counters = makeCounters(clock.unsafeCurrentTimeMillis())
      const channel = yield* Deferred.make<PeerChannel>()
      const linkTo = (stream: ByteStream) =>
        makeLegacyLink(stream, {
          settings,
          localId: keys.id,
          remoteId,
          listenPort: listening.port,
          remoteListenPort: peer.direction === "outbound" ? peer.port : 0,
          identifier: compat.identifier,
          sendSpacingMillis: compat.sendSpacingMillis,
          sendQueueCapacity: compat.sendQueueCapacity,
          maxBufferBytes: compat.maxBufferBytes,
          maxJunkBytes: compat.maxJunkBytes,
          pingsToTrust: compat.pingsToTrust,
          counters,
          // peers named by a legacy peer are legacy peers: dial them that way
          onPeerGroup: (peers) => {
            for (const p of peers) remember(key(p.address, p.port))
          }
        }).pipe(Scope.extend(scope))
      const link = yield* linkTo(raw)
      const trustPhase = (l: Link) =>
        Effect.gen(function* () {
          if (pingTrust && isLegacyLink(l)) {
            yield* Effect.forkIn(pinging(l), scope)
            yield* Effect.forkIn(elevation(l, channel), scope)
          }
          // like the original: trusted at once only with AllowEnhancedPacketExchange, else when the pings say so
          return policy.allowEnhancedPacketExchange
        })
      const redial: Effect.Effect<Link, CloseReason | DialFailed> =
        peer.direction === "outbound"
          ? Effect.flatMap(dialTcp(peer.address, peer.port, settings.connectTimeoutMillis, deadlines), (socket) =>
              linkTo(socketStream(socket))
            )
          : Effect.fail(new LocalClose({ reason: "inbound legacy channels are not re-dialled" }))
      const reason = yield* network.runProfileLink({
        link,
        counters,
        direction: peer.direction,
        address: peer.address,
        port: peer.port,
        trustPhase,
        redial,
        started: (rt) =>
          Effect.gen(function* () {
            legacy.set(rt.channel.key, rt.channel)
            yield* Deferred.succeed(channel, rt.channel)
            if (ready !== undefined) yield* Deferred.succeed(ready, rt)
          })
      })
      return reason
    }).pipe(
      Effect.tapError((e) => (ready === undefined ? Effect.void : Deferred.fail(ready, e))),
      Effect.ensuring(
        Effect.sync(() => {
          for (const [k, c] of legacy) if (c.isClosed()) legacy.delete(k)
        })
      ),
      Effect.onInterrupt(() => raw.destroy),
      Effect.scoped,
      Effect.annotateLogs({ category: Category.Peers, protocol: "legacy" })
    )

  const accept = (stream: ByteStream) =>
    Effect.gen(function* () {
      if (yield* registry.isBlockedAddress(stream.remoteAddress)) {
        yield* stream.destroy
        return yield* new PeerBlocked({ target: stream.remoteAddress })
      }
      const id = legacyNodeId(stream.remoteAddress, stream.remotePort)
      if (policy.incomingPeerPlacement !== "QueueBased") {
        yield* registry.publish(
          NetworkEvent.IncomingPeer({ address: stream.remoteAddress, port: stream.remotePort, id })
        )
      }
      yield* connect(
        stream,
        { direction: "inbound", address: stream.remoteAddress, port: stream.remotePort },
        id,
        undefined
      )
    }).pipe(
      Effect.catchAll((e) => Effect.logInfo(`inbound legacy connection refused: ${e._tag}: ${e.message}`)),
      Effect.annotateLogs({ category: Category.Peers, address: `${stream.remoteAddress}:${stream.remotePort}` })
    )

  const dialOnce = (address: string, port: number) =>
    Effect.gen(function* () {
      if (yield* registry.isBlockedAddress(address)) return yield* new PeerBlocked({ target: address })
      const socket = yield* dialTcp(address, port, settings.connectTimeoutMillis, deadlines)
      const ready = yield* Deferred.make<ChannelRuntime, DialError>()
      run(
        connect(
          socketStream(socket),
          { direction: "outbound", address, port },
          legacyNodeId(address, port),
          ready
        ).pipe(Effect.catchAll((e) => Effect.logInfo(`legacy connection refused: ${e._tag}: ${e.message}`)))
      )
      const rt = yield* Deferred.await(ready)
      return yield* rt.opened
    }).pipe(
      Effect.withSpan("Compat.dial", { attributes: { address, port } }),
      Effect.annotateLogs({ category: Category.Peers, address: `${address}:${port}`, protocol: "legacy" })
    )

  const dial = (address: string, port: number): Effect.Effect<PeerChannel, DialError> =>
    Effect.gen(function* () {
      remember(key(address, port))
      const id = legacyNodeId(address, port)
      for (const c of legacy.values()) {
        if (c.isClosed()) continue
        if (c.remoteId === id || (c.direction === "inbound" && c.address === address)) return c
      }
      return yield* dialing(key(address, port), dialOnce(address, port))
    })

  const isLegacyEndpoint = (address: string, port: number) => endpoints.has(key(address, port))
  yield* network.routeDials((address, port) => (isLegacyEndpoint(address, port) ? dial(address, port) : undefined))

  yield* Effect.logInfo(
    `compatibility profile: legacy P2PNet peers accepted on ${listening.host}:${listening.port}, advertised as ${advertisedAddress}`
  ).pipe(Effect.annotateLogs({ category: Category.Peers }))
  if (pingTrust) {
    yield* Effect.logWarning(
      'compatibility profile: legacy peers are trusted after three "Ping from" messages; this authenticates nothing ' +
        "(any host that sends that text is trusted: spec 4.1, B15)"
    ).pipe(Effect.annotateLogs({ category: Category.Peers }))
  }
  for (const peer of compat.peers) {
    const target = parseHostPort(peer)
    if (target === undefined) {
      yield* Effect.logWarning(`legacy peer ${JSON.stringify(peer)} ignored: expected host:port`)
      continue
    }
    run(
      dial(target.host, target.port).pipe(
        Effect.catchAll((e) => Effect.logWarning(`could not connect to legacy peer ${peer}: ${e.message}`))
      )
    )
  }

  return CompatProfile.of({
    settings: compat,
    port: listening.port,
    advertisedAddress,
    dial,
    markLegacy,
    isLegacyEndpoint,
    isLegacy: (channel) => legacy.get(channel.key) === channel
  })
})

/** The legacy listener: the given port, or a random free one in the original's range (spec 2.2), a few tries. */
const listen = (compat: CompatSettings, host: string, onSocket: (socket: net.Socket) => void) =>
  Effect.gen(function* () {
    if (compat.port !== undefined) return yield* listenTcp(host, compat.port, onSocket)
    const tries = 16
    let last: ListenFailed | undefined
    for (let i = 0; i < tries; i++) {
      const port = yield* Random.nextIntBetween(compat.portRangeStart, compat.portRangeEnd + 1)
      const bound = yield* Effect.either(listenTcp(host, port, onSocket))
      if (bound._tag === "Right") return bound.right
      last = bound.left
    }
    return yield* Effect.fail(last!)
  })

/** "host:port" or "[v6]:port". */
export const parseHostPort = (s: string): { readonly host: string; readonly port: number } | undefined => {
  const i = s.lastIndexOf(":")
  const port = Number(s.slice(i + 1))
  const host = s.slice(0, i).replace(/^\[|\]$/g, "")
  return i > 0 && host !== "" && Number.isInteger(port) && port >= 1 && port <= 65535 ? { host, port } : undefined
}

const int = (name: string) => Config.integer(name).pipe(Config.option)
const bool = (name: string) => Config.boolean(name).pipe(Config.option)

/** Reads CompatSettings from P2P_COMPAT_* variables (README.md); every one is optional. */
export const compatSettingsFromEnv = Effect.gen(function* () {
  const raw = yield* Config.all({
    listen: bool("P2P_COMPAT_LISTEN"),
    host: Config.string("P2P_COMPAT_HOST").pipe(Config.option),
    port: int("P2P_COMPAT_PORT"),
    identifier: Config.string("P2P_COMPAT_IDENTIFIER").pipe(Config.option),
    advertisedAddress: Config.string("P2P_COMPAT_ADDRESS").pipe(Config.option),
    sendSpacingMillis: int("P2P_COMPAT_SEND_SPACING_MS"),
    pingTrust: bool("P2P_COMPAT_PING_TRUST"),
    pingIntervalMillis: int("P2P_COMPAT_PING_INTERVAL_MS"),
    peers: Config.array(Config.string(), "P2P_COMPAT_PEERS").pipe(Config.option),
    bootstrap: Config.array(Config.string(), "P2P_COMPAT_BOOTSTRAP").pipe(
      Config.map((urls) => urls.map((u) => u.trim()).filter((u) => u !== "")),
      Config.option
    ),
    bootstrapHeartbeatMillis: int("P2P_COMPAT_BOOTSTRAP_HEARTBEAT_MS")
  })
  const discovery = yield* Config.all({
    enabled: bool("P2P_COMPAT_DISCOVERY"),
    designatedPorts: Config.array(Config.integer(), "P2P_COMPAT_DESIGNATED_PORTS").pipe(Config.option),
    broadcasterPort: int("P2P_COMPAT_BROADCASTER_PORT"),
    interfaces: Config.literal("all", "loopback")("P2P_COMPAT_DISCOVERY_INTERFACES").pipe(Config.option)
  })
  const present = (o: Record<string, Option.Option<unknown>>) =>
    Object.fromEntries(Object.entries(o).flatMap(([k, v]) => (Option.isSome(v) ? [[k, v.value]] : [])))
  return yield* Schema.decodeUnknown(CompatSettings)({ ...present(raw), discovery: present(discovery) }).pipe(
    Effect.mapError((e) => ConfigErrors.InvalidData([], `invalid compatibility settings: ${e.message}`))
  )
})
