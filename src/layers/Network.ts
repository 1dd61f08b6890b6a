/**
 * Ready-made compositions of the PeerNetwork layer with its default services. Each default can be overridden by
 * passing a layer for it (a test's trust handshake, fixed keys, a policy), so users never rebuild the wiring.
 */
import { Layer } from "effect"
import type { KeyFileError, ListenFailed } from "../schema/errors.js"
import { IncomingTrust } from "./IncomingTrust.js"
import { NodeIdentity } from "./NodeIdentity.js"
import { PeerNetwork } from "./PeerNetwork.js"
import { PeerRegistry } from "./PeerRegistry.js"
import { SecureSession } from "./SecureSession.js"
import { NetworkConfig } from "./Settings.js"
import { TrustHandshake } from "./TrustHandshake.js"
import { BroadcastRotation, defaultRoutinesLayer } from "./DefaultRoutines.js"
import { RoutineScheduler } from "./RoutineScheduler.js"
import { DistributionHandler } from "./Distribution.js"
import type { Handlers } from "./PacketHandlers.js"
import { PacketDispatcher, PacketHandlers } from "./PacketHandlers.js"

export interface NetworkOverrides {
  readonly identity?: Layer.Layer<NodeIdentity, KeyFileError, NetworkConfig>
  readonly trust?: Layer.Layer<IncomingTrust, never, NetworkConfig>
  readonly handshake?: Layer.Layer<TrustHandshake>
  readonly secure?: Layer.Layer<SecureSession>
  /** What the RotateBroadcastPort routine calls; LAN discovery provides it. */
  readonly broadcastRotation?: Layer.Layer<BroadcastRotation>
  /**
   * Run the packet handlers: `{}` for the defaults, or replacements by kind. Without it no handler runs (received
   * packets are still published to subscribers).
   */
  readonly handlers?: Partial<Handlers>
  readonly packetBuffer?: number
}

/**
 * PeerNetwork, PeerRegistry and a RoutineScheduler (with the default routines registered, not started) from a
 * NetworkConfig, with defaults for everything else.
 *
 * @example
 * const Node = networkLayer({ handshake: Layer.succeed(TrustHandshake, { run: () => Effect.succeed(Verdict.Trusted()) }) })
 *   .pipe(Layer.provide(NetworkConfig.layer({ port: 0, host: "127.0.0.1" })))
 */
export const networkLayer = (
  overrides: NetworkOverrides = {}
): Layer.Layer<
  PeerNetwork | PeerRegistry | RoutineScheduler | DistributionHandler | NodeIdentity | PacketDispatcher,
  ListenFailed | KeyFileError,
  NetworkConfig
> =>
  Layer.mergeAll(
    PeerNetwork.layer,
    defaultRoutinesLayer,
    DistributionHandler.layer,
    // packet handlers run only when asked for: a per-packet handler costs ~3 us on the receiver (see the issue 3 note)
    overrides.handlers === undefined
      ? PacketDispatcher.idle
      : PacketDispatcher.layer.pipe(Layer.provide(PacketHandlers.layerWith(overrides.handlers)))
  ).pipe(
    Layer.provideMerge(RoutineScheduler.layer),
    Layer.provide(overrides.broadcastRotation ?? BroadcastRotation.none),
    Layer.provideMerge(
      PeerRegistry.layer(overrides.packetBuffer === undefined ? {} : { packetBuffer: overrides.packetBuffer })
    ),
    Layer.provideMerge(overrides.identity ?? NodeIdentity.layerConfig),
    Layer.provide(
      Layer.mergeAll(
        overrides.trust ?? IncomingTrust.layer,
        overrides.handshake ?? TrustHandshake.layer,
        overrides.secure ?? SecureSession.plain
      )
    )
  )

/** A whole network from plain settings (the NetworkConfig is included). */
export const networkLayerWith = (
  settings: Parameters<typeof NetworkConfig.layer>[0] = {},
  overrides: NetworkOverrides = {}
) => networkLayer(overrides).pipe(Layer.provideMerge(NetworkConfig.layer(settings)))

/** A whole network configured from P2P_* environment variables. */
export const networkLayerConfig = (overrides: NetworkOverrides = {}) =>
  networkLayer(overrides).pipe(Layer.provideMerge(NetworkConfig.layerConfig))
