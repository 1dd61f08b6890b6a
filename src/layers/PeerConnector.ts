/**
 * The PeerConnector: where peers learned from the network (PeerGroup packets now; LAN discovery and bootstrap peer
 * lists later) become known peers and, when NetworkSettings.autoConnect is on, dial attempts. The ConnectPolicy
 * service decides which candidates are acceptable at all; the connector deduplicates them against open channels,
 * dials in flight and recent attempts, and dials at most NetworkSettings.connectsPerSecond, so a peer list cannot
 * make this node open hundreds of connections at once (the original dialled every listed peer immediately).
 */
import { Clock, Context, Effect, FiberSet, Layer, Queue, Ref } from "effect"
import { isIP } from "node:net"
import type { PeerAddress } from "../schema/ids.js"
import { NodeIdentity } from "./NodeIdentity.js"
import { PeerNetwork } from "./PeerNetwork.js"
import { PeerRegistry } from "./PeerRegistry.js"
import { NetworkConfig } from "./Settings.js"

/** Which candidate peers may be considered at all. Replace it with a Layer to narrow or widen it. */
export class ConnectPolicy extends Context.Tag("effect-p2pnet/ConnectPolicy")<
  ConnectPolicy,
  { readonly admits: (candidate: PeerAddress) => boolean }
>() {
  /** A plausible IP address and port, never this node itself. */
  static readonly layer = Layer.effect(
    this,
    Effect.map(NodeIdentity, (self) => ConnectPolicy.of({ admits: (candidate) => plausiblePeer(candidate, self) }))
  )
}

/** The default connect policy: a literal IPv4 or IPv6 address, a port from 1 to 65535, and not this node. */
export const plausiblePeer = (peer: PeerAddress, self: { readonly id: string }): boolean =>
  isIP(peer.address) !== 0 && peer.port >= 1 && peer.port <= 65535 && peer.id !== self.id

export interface ConnectorStats {
  /** Candidates the policy turned down. */
  readonly refused: number
  /** Candidates skipped because they are connected, being dialled or were tried recently. */
  readonly duplicates: number
  /** Candidates dropped because the connector's queue was full. */
  readonly dropped: number
  readonly dialled: number
  readonly failed: number
}

export class PeerConnector extends Context.Tag("effect-p2pnet/PeerConnector")<
  PeerConnector,
  {
    /**
     * Considers candidate peers: the ones the policy admits are added to the known peers and, with autoConnect,
     * queued for a dial. Never waits: when the queue is full the rest are dropped (and counted). Returns how many
     * were queued.
     */
    readonly offer: (candidates: Iterable<PeerAddress>) => Effect.Effect<number>
    readonly stats: Effect.Effect<ConnectorStats>
  }
>() {
  static readonly layer: Layer.Layer<PeerConnector, never, PeerNetwork | PeerRegistry | NetworkConfig | ConnectPolicy> =
    Layer.scoped(
      this,
      Effect.suspend(() => make)
    )
}

/** A candidate dialled (or found connected) is not tried again for this long. */
export const RETRY_AFTER_MILLIS = 60_000
/** Recent attempts remembered at most; the oldest are forgotten first. */
const RECENT_LIMIT = 4096

const make = Effect.gen(function* () {
  const network = yield* PeerNetwork
  const registry = yield* PeerRegistry
  const settings = yield* NetworkConfig
  const policy = yield* ConnectPolicy
  const queue = yield* Effect.acquireRelease(Queue.dropping<PeerAddress>(settings.connectQueueCapacity), Queue.shutdown)
  const stats = yield* Ref.make<ConnectorStats>({ refused: 0, duplicates: 0, dropped: 0, dialled: 0, failed: 0 })
  const count = (key: keyof ConnectorStats, n = 1) => Ref.update(stats, (s) => ({ ...s, [key]: s[key] + n }))
  // "address:port" -> when it was queued or dialled; insertion order is age order
  const recent = new Map<string, number>()
  const dials = yield* FiberSet.make<void>()

  const isDuplicate = (candidate: PeerAddress, now: number) =>
    Effect.gen(function* () {
      const key = `${candidate.address}:${candidate.port}`
      const at = recent.get(key)
      if (at !== undefined && now - at < RETRY_AFTER_MILLIS) return true
      if (candidate.id !== null && (yield* Effect.either(registry.channel(candidate.id)))._tag === "Right") return true
      const channels = yield* registry.channels
      return channels.some((c) => c.address === candidate.address && c.remoteListenPort === candidate.port)
    })

  const remember = (candidate: PeerAddress, now: number) => {
    const key = `${candidate.address}:${candidate.port}`
    recent.delete(key)
    recent.set(key, now)
    if (recent.size > RECENT_LIMIT) recent.delete(recent.keys().next().value!)
  }

  const offer = (candidates: Iterable<PeerAddress>) =>
    Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      let queued = 0
      for (const candidate of candidates) {
        if (!policy.admits(candidate)) {
          yield* count("refused")
          continue
        }
        const blocked = yield* Effect.either(registry.addKnown(candidate))
        if (blocked._tag === "Left") {
          yield* count("refused")
          continue
        }
        if (!settings.autoConnect) continue
        if (yield* isDuplicate(candidate, now)) {
          yield* count("duplicates")
          continue
        }
        if (yield* Queue.offer(queue, candidate)) {
          remember(candidate, now)
          queued++
        } else yield* count("dropped")
      }
      return queued
    })

  const dial = (candidate: PeerAddress) =>
    // a peer listed with its identifier must prove it in the Noise handshake (PeerIdentityMismatch otherwise)
    network.dial(candidate.address, candidate.port, candidate.id === null ? {} : { id: candidate.id }).pipe(
      Effect.tap(() => count("dialled")),
      Effect.tapError((e) =>
        Effect.zipRight(count("failed"), Effect.logDebug(`could not connect to ${candidate.label}: ${e.message}`))
      ),
      Effect.ignore
    )

  // one dial started per 1/connectsPerSecond; dials run side by side so a slow peer does not hold up the next
  const spacing = Math.max(1, Math.round(1000 / settings.connectsPerSecond))
  yield* Effect.forkScoped(
    Queue.take(queue).pipe(
      Effect.flatMap((candidate) => FiberSet.run(dials, dial(candidate))),
      Effect.zipRight(Effect.sleep(spacing)),
      Effect.forever
    )
  )
  return PeerConnector.of({ offer, stats: Ref.get(stats) })
})
