/**
 * Legacy LAN discovery for the compatibility profile (reference spec 2): the original's raw JSON IdentifierPacket
 * datagram, sent to 255.255.255.255 and 127.0.0.1 on its broadcaster port (one of 8001-8003) at the original's rate,
 * and heard on the designated ports. A datagram from another node makes this node offer
 * `<datagram source address>:<Data>` to the PeerConnector as a legacy endpoint.
 *
 * Security (B13): the original dials the `IP` written in the datagram, so one forged UDP packet makes a .NET peer open
 * a TCP connection to any host and port (reflection, SSRF); our own datagrams cannot prevent that, they only tell the
 * truth. This receiver never dials the `IP` of a datagram: only where the datagram came from, through the
 * PeerConnector's policy, deduplication and rate limit. Datagrams carry no authentication either way.
 */
import { Clock, Context, Data, Effect, Either, Layer, Option, PubSub, Queue, Random, Scope, Stream } from "effect"
import { legacyNodeId } from "../actors/LegacyLink.js"
import { sendDatagram, trySocket, udpSocket } from "../actors/DiscoverySockets.js"
import { baseIntervalMillis, jitterMillis } from "../actors/DiscoveryTargets.js"
import { IpAddress, PeerAddress, Port } from "../schema/ids.js"
import { decodeLegacyDiscovery, encodeLegacyDiscovery } from "../schema/legacy/discovery.js"
import { CompatConfig, CompatProfile } from "./Compat.js"
import { isLoopbackIpv4, NetworkInterfaces } from "./Interfaces.js"
import { Category, scopedWarn } from "./Logging.js"
import { PeerConnector } from "./PeerConnector.js"

export type LegacyDiscoveryEvent = Data.TaggedEnum<{
  /** A datagram of another node: offered at its source address (`ip` is what the payload claimed, never dialled). */
  Discovered: { readonly peer: PeerAddress; readonly ip: string | null }
  Dropped: { readonly reason: string; readonly source: string; readonly detail: string }
}>
export const LegacyDiscoveryEvent = Data.taggedEnum<LegacyDiscoveryEvent>()

export interface LegacyDiscoveryStats {
  readonly listening: ReadonlyArray<number>
  readonly broadcasterPort: number
  readonly sent: number
  readonly received: number
  readonly offered: number
  readonly dropped: number
}

export class LegacyDiscovery extends Context.Tag("effect-p2pnet/LegacyDiscovery")<
  LegacyDiscovery,
  {
    /** Sends one announcement round now (besides the scheduled ones); nothing when discovery is off. */
    readonly announce: Effect.Effect<void>
    readonly stats: Effect.Effect<LegacyDiscoveryStats>
    /** Subscribes now, for the life of the scope. */
    readonly subscribe: Effect.Effect<Stream.Stream<LegacyDiscoveryEvent>, never, Scope.Scope>
  }
>() {
  static readonly layer: Layer.Layer<
    LegacyDiscovery,
    never,
    CompatConfig | CompatProfile | PeerConnector | NetworkInterfaces
  > = Layer.scoped(
    this,
    Effect.suspend(() => make)
  )
}

interface Incoming {
  readonly bytes: Buffer
  readonly source: string
}

const make = Effect.gen(function* () {
  const compat = yield* CompatConfig
  const profile = yield* CompatProfile
  const connector = yield* PeerConnector
  const interfaces = yield* NetworkInterfaces
  const settings = compat.discovery
  const loopback = settings.interfaces === "loopback"
  const ports = [...new Set(settings.designatedPorts)]
  const events = yield* Effect.acquireRelease(PubSub.sliding<LegacyDiscoveryEvent>(1024), PubSub.shutdown)
  const counters = { sent: 0, received: 0, offered: 0, dropped: 0 }
  const listening: Array<number> = []
  const broadcasterPort =
    settings.broadcasterPort !== 0
      ? settings.broadcasterPort
      : ports.length > 0
        ? ports[yield* Random.nextIntBetween(0, ports.length)]!
        : 0
  const service = LegacyDiscovery.of({
    announce: Effect.void,
    stats: Effect.sync(() => ({ listening: [...listening], broadcasterPort, ...counters })),
    subscribe: Effect.map(PubSub.subscribe(events), Stream.fromQueue)
  })
  if (!settings.enabled) return service

  const localAddresses = Option.match(yield* Effect.option(interfaces.current), {
    onNone: () => new Set<string>(),
    onSome: (t) => new Set(t.interfaces.flatMap((i) => i.ipv4.map((a) => a.address)))
  })
  const isSelf = (source: string, port: number) =>
    port === profile.port &&
    (isLoopbackIpv4(source) || localAddresses.has(source) || source === profile.advertisedAddress)

  const drop = (reason: string, source: string, detail: string) =>
    Effect.gen(function* () {
      counters.dropped++
      if (reason !== "self")
        yield* Effect.logDebug(`dropped legacy discovery datagram from ${source} (${reason}): ${detail}`)
      yield* PubSub.publish(events, LegacyDiscoveryEvent.Dropped({ reason, source, detail }))
    })

  const handle = (item: Incoming) =>
    Effect.gen(function* () {
      if (loopback && !isLoopbackIpv4(item.source)) return yield* drop("source", item.source, "not a loopback address")
      const decoded = decodeLegacyDiscovery(item.bytes, settings.maxDatagramBytes)
      if (Either.isLeft(decoded)) return yield* drop(decoded.left._tag, item.source, decoded.left.message)
      const d = decoded.right
      if (isSelf(item.source, d.Data)) return yield* drop("self", item.source, "our own announcement")
      // B13: the source of the datagram, never the IP it names
      const peer = PeerAddress.make({
        address: IpAddress.make(item.source),
        port: Port.make(d.Data),
        id: legacyNodeId(item.source, d.Data)
      })
      if (d.IP !== item.source) {
        yield* Effect.logDebug(`legacy datagram from ${item.source} names ${JSON.stringify(d.IP)}; using its source`)
      }
      yield* profile.markLegacy(peer.address, peer.port)
      counters.offered++
      yield* connector.offer([peer])
      yield* PubSub.publish(events, LegacyDiscoveryEvent.Discovered({ peer, ip: d.IP }))
    }).pipe(Effect.annotateLogs({ category: Category.LAN, address: item.source }))

  const warn = yield* scopedWarn
  const inbox = yield* Effect.acquireRelease(Queue.dropping<Incoming>(256), Queue.shutdown)
  const onMessage = (message: Buffer, remote: { readonly address: string }) => {
    counters.received++
    if (!Queue.unsafeOffer(inbox, { bytes: message, source: remote.address })) counters.dropped++
  }
  const onError = (e: Error) => warn(`legacy discovery socket error: ${e.message}`)
  const bindAddress = loopback ? "127.0.0.1" : "0.0.0.0"
  for (const p of ports) {
    const bound = yield* Effect.either(
      udpSocket({ port: p, address: bindAddress, reuseAddr: true, onMessage, onError })
    )
    if (Either.isRight(bound)) listening.push(p)
    else yield* Effect.logWarning(`legacy discovery: ${bound.left.message}`)
  }
  yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(inbox), handle)))

  const opened = yield* Effect.either(
    udpSocket({ port: 0, address: bindAddress, reuseAddr: false, onMessage: () => {}, onError })
  )
  if (Either.isLeft(opened)) {
    yield* Effect.logWarning(`legacy discovery cannot send: ${opened.left.message}`)
    return service
  }
  const sender = opened.right
  const failed = trySocket(() => sender.setBroadcast(true))
  if (failed !== undefined) yield* Effect.logWarning(`legacy discovery sender: ${failed}`)
  // the original builds its datagram once, when broadcasting starts: its time is frozen
  const startedAt = yield* Clock.currentTimeMillis
  const bytes = encodeLegacyDiscovery({
    port: profile.port,
    ip: profile.advertisedAddress,
    identifier: compat.identifier,
    time: startedAt
  })
  const send = (address: string) =>
    sendDatagram(sender, bytes, broadcasterPort, address).pipe(
      Effect.matchEffect({
        onSuccess: () => Effect.sync(() => void counters.sent++),
        onFailure: (e) => Effect.logDebug(`legacy discovery send to ${address}:${broadcasterPort} failed: ${e}`)
      })
    )
  /** One round, as the original's LocalChannel: broadcast, a pause, then loopback (loopback mode: loopback only). */
  const round = Effect.gen(function* () {
    if (profile.port === 0 || broadcasterPort === 0) return
    if (!loopback) {
      yield* send("255.255.255.255")
      yield* Effect.sleep(settings.loopbackDelayMillis)
    }
    yield* send("127.0.0.1")
  })
  const interval = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    return baseIntervalMillis(now, settings, false) + (yield* jitterMillis(settings))
  })
  if (profile.port === 0) yield* Effect.logWarning("legacy discovery: no legacy listener, nothing to announce")
  yield* Effect.forkScoped(
    Effect.forever(
      Effect.zipRight(
        round,
        Effect.flatMap(interval, (ms) => Effect.sleep(ms))
      )
    )
  )
  yield* Effect.logInfo(
    `legacy LAN discovery started (listening on UDP ${listening.join(", ")}, broadcaster port ${broadcasterPort}, ` +
      `interfaces ${settings.interfaces})`
  ).pipe(Effect.annotateLogs({ category: Category.LAN }))
  return LegacyDiscovery.of({ ...service, announce: round })
})
