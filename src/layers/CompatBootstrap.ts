/**
 * The compatibility profile joins legacy P2PNet (.NET) bootstrap servers (reference spec §8.2-8.3) through
 * LegacyBootstrapClient: at start, one peers request per server (our identifier, the address we announce, the legacy
 * listener's port); the peers listed are marked legacy and offered to the PeerConnector, which dials them with the
 * legacy protocol (CompatProfile's dialler); then a heartbeat per server on a named RoutineScheduler routine.
 *
 * Tasks in heartbeat answers are unauthenticated (the original signs with PGP, which we do not verify): they are logged
 * and published as events, never executed. Failures are logged with their typed error and retried at the next tick.
 */
import { Context, Data, Effect, Layer, Option, PubSub, Schema, Stream, SubscriptionRef } from "effect"
import type { Scope } from "effect"
import { isIP } from "node:net"
import { legacyNodeId } from "../actors/LegacyLink.js"
import { PeerAddress } from "../schema/ids.js"
import type { InterfaceTable } from "../schema/interfaces.js"
import { legacyTaskTypeName } from "../schema/legacy/index.js"
import type {
  LegacyBootstrapError,
  LegacyHeartbeatTask,
  LegacyPeer,
  LegacyPeersResult,
  LegacySignatureKind
} from "../schema/legacyBootstrap.js"
import { CompatConfig, CompatProfile, primaryIpv4 } from "./Compat.js"
import { isLoopbackIpv4, NetworkInterfaces } from "./Interfaces.js"
import type { LegacySelf } from "./LegacyBootstrapClient.js"
import { LegacyBootstrapClient } from "./LegacyBootstrapClient.js"
import { Category } from "./Logging.js"
import { NodeIdentity } from "./NodeIdentity.js"
import { PeerConnector } from "./PeerConnector.js"
import { RoutineScheduler } from "./RoutineScheduler.js"
import { NetworkConfig } from "./Settings.js"

// ---------------------------------------------------------------------------------------------------------------------
// Events and stats
// ---------------------------------------------------------------------------------------------------------------------

export type CompatBootstrapEvent = Data.TaggedEnum<{
  /** The peers request succeeded: the peers listed, how many were offered for a dial, and our own entry skipped. */
  Registered: {
    readonly url: string
    readonly style: LegacyPeersResult["style"]
    readonly tagged: boolean
    readonly peers: ReadonlyArray<LegacyPeer>
    readonly offered: number
    readonly skippedSelf: number
    /** Entries the client left out (not an IP address, or a port outside 1..65535). */
    readonly dropped: number
  }
  HeartbeatAnswered: { readonly url: string; readonly tasks: number; readonly unreadable: number }
  /** A task of a heartbeat answer, logged and not executed (`privileged`: it would block, disconnect, ...). */
  TaskNotExecuted: {
    readonly url: string
    readonly key: string
    readonly taskType: number
    /** The HEAD name of the TaskType, or `unknown`. */
    readonly name: string
    readonly privileged: boolean
    readonly signatureKind: LegacySignatureKind
  }
  Failed: { readonly url: string; readonly request: "peers" | "heartbeat"; readonly error: LegacyBootstrapError }
}>
export const CompatBootstrapEvent = Data.taggedEnum<CompatBootstrapEvent>()

export interface CompatBootstrapStats {
  readonly url: string
  /** Whether the next tick heartbeats (true) or sends the peers request again (false). */
  readonly registered: boolean
  readonly registrations: number
  readonly heartbeats: number
  readonly failures: number
  readonly consecutiveFailures: number
  readonly peersOffered: number
  readonly tasksNotExecuted: number
  /** `_tag: message` of the last failure. */
  readonly lastError: Option.Option<string>
}

/** Prefix of the routine names: one routine per server, `LegacyBootstrapHeartbeat <url>`. */
export const LEGACY_BOOTSTRAP_HEARTBEAT = "LegacyBootstrapHeartbeat"
export const legacyHeartbeatRoutine = (url: string) => `${LEGACY_BOOTSTRAP_HEARTBEAT} ${url}`

/**
 * Task types that only inform (the native trustless client's list): logged at Info. Every other one, unknown numbers
 * included, would change this node's state (block, disconnect, authorize, settings, identifiers, data): logged at
 * Warning as refused. Neither kind is executed.
 */
const informational: ReadonlySet<string> = new Set(["SendMessage", "PingPeer", "Heartbeat"])

// ---------------------------------------------------------------------------------------------------------------------
// The address announced
// ---------------------------------------------------------------------------------------------------------------------

const isWildcard = (address: string) => address === "0.0.0.0" || address === "::" || /^(0*:)+0*$/.test(address)
const usable = (address: string) => isIP(address) !== 0 && !isWildcard(address)

/**
 * The `IP` of our peers request. The original announces its public address as learnt over HTTP from third parties
 * (§8.3 step 2; IPv6 first although it listens on IPv4 only, B18); we never announce what a remote told us. In order:
 * the configured `advertisedAddress` (P2P_COMPAT_ADDRESS) when it is an IP literal; the legacy listener's bind address
 * when it is a literal, non-wildcard IP; the last IPv4 address of the primary interface (the original's
 * LocalIPV4Address, spec 2.1); 127.0.0.1.
 */
export const legacyAnnouncedAddress = (input: {
  readonly advertisedAddress: string
  readonly host: string
  readonly interfaces: Option.Option<InterfaceTable>
}): string => {
  if (usable(input.advertisedAddress)) return input.advertisedAddress
  if (usable(input.host)) return input.host
  return primaryIpv4(input.interfaces)
}

// ---------------------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------------------

export class CompatBootstrap extends Context.Tag("effect-p2pnet/CompatBootstrap")<
  CompatBootstrap,
  {
    /** The legacy bootstrap servers joined (CompatSettings.bootstrap, duplicates removed). */
    readonly servers: ReadonlyArray<string>
    /** What the next peers request announces: identifier, address and legacy listening port. */
    readonly announcement: Effect.Effect<LegacySelf>
    readonly stats: Effect.Effect<ReadonlyArray<CompatBootstrapStats>>
    /** The stats now, then after every change (to wait for a registration or a heartbeat without polling). */
    readonly changes: Stream.Stream<ReadonlyArray<CompatBootstrapStats>>
    /** Subscribes now, for the life of the scope. */
    readonly subscribe: Effect.Effect<Stream.Stream<CompatBootstrapEvent>, never, Scope.Scope>
  }
>() {
  static readonly layer: Layer.Layer<
    CompatBootstrap,
    never,
    | CompatConfig
    | CompatProfile
    | NetworkConfig
    | NodeIdentity
    | NetworkInterfaces
    | PeerConnector
    | RoutineScheduler
    | LegacyBootstrapClient
  > = Layer.scoped(
    this,
    Effect.suspend(() => make)
  )
}

const zeroStats = (url: string): CompatBootstrapStats => ({
  url,
  registered: false,
  registrations: 0,
  heartbeats: 0,
  failures: 0,
  consecutiveFailures: 0,
  peersOffered: 0,
  tasksNotExecuted: 0,
  lastError: Option.none()
})

const make = Effect.gen(function* () {
  const compat = yield* CompatConfig
  const profile = yield* CompatProfile
  const settings = yield* NetworkConfig
  const keys = yield* NodeIdentity
  const interfaces = yield* NetworkInterfaces
  const connector = yield* PeerConnector
  const scheduler = yield* RoutineScheduler
  const client = yield* LegacyBootstrapClient
  const servers = [...new Set(compat.bootstrap)]
  const events = yield* Effect.acquireRelease(PubSub.sliding<CompatBootstrapEvent>(1024), PubSub.shutdown)
  const stats = yield* SubscriptionRef.make<ReadonlyMap<string, CompatBootstrapStats>>(
    new Map(servers.map((url) => [url, zeroStats(url)] as const))
  )
  // the original server tells clients apart by identifier alone (B28): an empty one would merge us with others
  const identifier = compat.identifier !== "" ? compat.identifier : keys.id
  const host = compat.host ?? settings.host

  const announcement = Effect.map(Effect.option(interfaces.current), (table) => ({
    identifier,
    ip: legacyAnnouncedAddress({ advertisedAddress: compat.advertisedAddress, host, interfaces: table }),
    port: profile.port
  }))

  const service = CompatBootstrap.of({
    servers,
    announcement,
    stats: Effect.map(SubscriptionRef.get(stats), (m) => [...m.values()]),
    changes: Stream.map(stats.changes, (m) => [...m.values()]),
    subscribe: Effect.map(PubSub.subscribe(events), Stream.fromQueue)
  })
  if (servers.length === 0) return service
  if (profile.port === 0) {
    yield* Effect.logWarning(
      "legacy bootstrap servers ignored: the legacy listener is off, and its port is what a peers request announces"
    ).pipe(Effect.annotateLogs({ category: Category.Bootstrap }))
    return service
  }

  const update = (url: string, f: (s: CompatBootstrapStats) => Partial<CompatBootstrapStats>) =>
    SubscriptionRef.update(stats, (m) => {
      const current = m.get(url) ?? zeroStats(url)
      return new Map(m).set(url, { ...current, ...f(current) })
    })

  /** Our own entry (the original lists the requester to itself): our legacy port at one of our addresses. */
  const isSelf = (peer: LegacyPeer, self: LegacySelf, table: Option.Option<InterfaceTable>) =>
    peer.port === self.port &&
    (peer.address === self.ip ||
      peer.address === host ||
      isLoopbackIpv4(peer.address) ||
      peer.address === "::1" ||
      Option.exists(table, (t) =>
        t.interfaces.some(
          (i) => i.ipv4.some((a) => a.address === peer.address) || i.ipv6.some((a) => a.address === peer.address)
        )
      ))

  const register = (url: string) =>
    Effect.gen(function* () {
      const table = yield* Effect.option(interfaces.current)
      const self = yield* announcement
      const result = yield* client.peers(url, self)
      const candidates: Array<PeerAddress> = []
      let skippedSelf = 0
      for (const peer of result.peers) {
        if (isSelf(peer, self, table)) {
          skippedSelf++
          continue
        }
        const candidate = Schema.decodeUnknownOption(PeerAddress)({
          address: peer.address,
          port: peer.port,
          id: legacyNodeId(peer.address, peer.port)
        })
        if (Option.isSome(candidate)) candidates.push(candidate.value)
      }
      // listed by a legacy server, so legacy peers: PeerNetwork.dial (the connector's) reaches them that way
      for (const c of candidates) yield* profile.markLegacy(c.address, c.port)
      yield* connector.offer(candidates)
      yield* update(url, (s) => ({
        registered: true,
        registrations: s.registrations + 1,
        consecutiveFailures: 0,
        peersOffered: s.peersOffered + candidates.length
      }))
      yield* Effect.logInfo(
        `legacy bootstrap ${url}: registered as ${JSON.stringify(self.identifier)} at ${self.ip}:${self.port}; ` +
          `${result.peers.length} peers listed, ${candidates.length} offered`
      )
      yield* PubSub.publish(
        events,
        CompatBootstrapEvent.Registered({
          url,
          style: result.style,
          tagged: result.tagged,
          peers: result.peers,
          offered: candidates.length,
          skippedSelf,
          dropped: result.dropped
        })
      )
    })

  const notExecuted = (url: string, task: LegacyHeartbeatTask) =>
    Effect.gen(function* () {
      const name = legacyTaskTypeName(task.taskType) ?? "unknown"
      const privileged = !informational.has(name)
      const text =
        `legacy bootstrap ${url}: task ${task.key} (${name}, TaskType ${task.taskType}) not executed: ` +
        `tasks from a legacy bootstrap server are unauthenticated (no PGP verification; signature ${task.signatureKind})`
      yield* privileged ? Effect.logWarning(text) : Effect.logInfo(text)
      yield* update(url, (s) => ({ tasksNotExecuted: s.tasksNotExecuted + 1 }))
      yield* PubSub.publish(
        events,
        CompatBootstrapEvent.TaskNotExecuted({
          url,
          key: task.key,
          taskType: task.taskType,
          name,
          privileged,
          signatureKind: task.signatureKind
        })
      )
    })

  const heartbeat = (url: string) =>
    Effect.gen(function* () {
      const result = yield* client.heartbeat(url, identifier)
      yield* update(url, (s) => ({ heartbeats: s.heartbeats + 1, consecutiveFailures: 0 }))
      if (result.tasks.length > 0 || result.unreadable.length > 0) {
        yield* Effect.logInfo(
          `legacy bootstrap ${url} answered the heartbeat with ${result.tasks.length} tasks` +
            (result.unreadable.length > 0 ? ` (${result.unreadable.length} unreadable)` : "")
        )
      }
      yield* PubSub.publish(
        events,
        CompatBootstrapEvent.HeartbeatAnswered({
          url,
          tasks: result.tasks.length,
          unreadable: result.unreadable.length
        })
      )
      for (const task of result.tasks) yield* notExecuted(url, task)
    })

  const failed = (url: string, request: "peers" | "heartbeat") => (error: LegacyBootstrapError) =>
    Effect.gen(function* () {
      yield* update(url, (s) => ({
        // a server that refuses the heartbeat (e.g. it forgot us: "ClientPeer ... not found") gets the peers request
        registered: s.registered && !(request === "heartbeat" && error._tag === "LegacyBootstrapRefused"),
        failures: s.failures + 1,
        consecutiveFailures: s.consecutiveFailures + 1,
        lastError: Option.some(`${error._tag}: ${error.message}`)
      }))
      yield* Effect.logWarning(
        `legacy bootstrap ${url}: ${request} request failed (retried next tick): ${error.message}`
      ).pipe(Effect.annotateLogs({ error: error._tag }))
      yield* PubSub.publish(events, CompatBootstrapEvent.Failed({ url, request, error }))
    })

  /** One tick for one server: the peers request until it succeeded once (or after a refusal), else a heartbeat. */
  const tick = (url: string) =>
    Effect.gen(function* () {
      const registered = (yield* SubscriptionRef.get(stats)).get(url)?.registered ?? false
      return yield* registered
        ? heartbeat(url).pipe(Effect.catchAll(failed(url, "heartbeat")))
        : register(url).pipe(Effect.catchAll(failed(url, "peers")))
    }).pipe(Effect.annotateLogs({ category: Category.Bootstrap, bootstrap: url, protocol: "legacy" }))

  const joined: Array<string> = []
  for (const url of servers) {
    const name = legacyHeartbeatRoutine(url)
    const added = yield* Effect.either(
      Effect.acquireRelease(scheduler.add(name, tick(url), compat.bootstrapHeartbeatMillis), () =>
        scheduler.remove(name).pipe(Effect.ignore)
      )
    )
    if (added._tag === "Right") joined.push(url)
    else yield* Effect.logWarning(`legacy bootstrap ${url} not joined: ${added.left.message}`)
  }
  // the peers request at once, then the heartbeat routine (its first tick one interval later), each server on its own
  yield* Effect.forkScoped(
    Effect.forEach(
      joined,
      (url) => Effect.zipRight(tick(url), scheduler.start(legacyHeartbeatRoutine(url)).pipe(Effect.orDie)),
      { concurrency: "unbounded", discard: true }
    )
  )
  yield* Effect.logInfo(
    `compatibility profile: joining legacy bootstrap servers ${joined.join(", ")} (heartbeat every ` +
      `${compat.bootstrapHeartbeatMillis} ms; tasks they send are logged, never executed)`
  ).pipe(Effect.annotateLogs({ category: Category.Bootstrap }))
  return service
})
