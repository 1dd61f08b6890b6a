/**
 * The compatibility profile as one Layer: on top of a network, talk to unmodified P2PNet (.NET) peers (layers/Compat.ts:
 * legacy listener, dialler and trust), find them by legacy LAN discovery (layers/LegacyDiscovery.ts) and through legacy
 * bootstrap servers (layers/CompatBootstrap.ts).
 */
import { Layer } from "effect"
import type { ConfigError } from "effect"
import type { CompatSettings, CompatSettingsInput } from "../schema/compat.js"
import type { ListenFailed } from "../schema/errors.js"
import { CompatConfig, CompatProfile } from "./Compat.js"
import { CompatBootstrap } from "./CompatBootstrap.js"
import { NetworkInterfaces } from "./Interfaces.js"
import { LegacyBootstrapClient } from "./LegacyBootstrapClient.js"
import { LegacyDiscovery } from "./LegacyDiscovery.js"
import type { NodeIdentity } from "./NodeIdentity.js"
import type { PeerConnector } from "./PeerConnector.js"
import type { PeerNetwork } from "./PeerNetwork.js"
import type { PeerRegistry } from "./PeerRegistry.js"
import type { RoutineScheduler } from "./RoutineScheduler.js"
import type { NetworkConfig } from "./Settings.js"

export interface CompatLayerOptions<E = never> {
  /** Where the advertised address comes from (default: node:os). */
  readonly interfaces?: Layer.Layer<NetworkInterfaces>
  /**
   * The client of legacy bootstrap servers (default: `LegacyBootstrapClient.layer()`, 10 s per request;
   * `compatLayerConfig` uses `LegacyBootstrapClient.layerConfig`).
   */
  readonly bootstrapClient?: Layer.Layer<LegacyBootstrapClient, E>
}

/** What the profile needs from the network it is added to (networkLayer provides all of it). */
export type CompatRequirements =
  NetworkConfig | NodeIdentity | PeerNetwork | PeerRegistry | PeerConnector | RoutineScheduler

/** What the profile provides. */
export type CompatServices = CompatProfile | CompatConfig | LegacyDiscovery | CompatBootstrap

const compose = <E1, E2>(config: Layer.Layer<CompatConfig, E1>, options: CompatLayerOptions<E2>) =>
  Layer.merge(
    LegacyDiscovery.layer,
    CompatBootstrap.layer.pipe(Layer.provide(options.bootstrapClient ?? LegacyBootstrapClient.layer()))
  ).pipe(
    Layer.provideMerge(CompatProfile.layer),
    Layer.provideMerge(config),
    Layer.provide(options.interfaces ?? NetworkInterfaces.layer)
  )

/**
 * Adds the compatibility profile to a network: legacy peers are accepted on a listener of their own (in 8051..8999
 * unless `port` says otherwise), dialled with the legacy protocol when they are known as legacy (from legacy discovery,
 * a legacy peer's PeerGroup, a legacy bootstrap server's list, `peers`, or CompatProfile.dial), and exchange every
 * packet kind through the node's ordinary channels. The original's ping trust is off unless `pingTrust: true` (it
 * authenticates nothing). `bootstrap` names legacy bootstrap servers to join (layers/CompatBootstrap.ts).
 *
 * @example
 * const Node = compatLayer({ pingTrust: true, bootstrap: ["http://203.0.113.1:5070"] }).pipe(
 *   Layer.provideMerge(networkLayerWith({ port: 0 }))
 * )
 */
export const compatLayer = <E = never>(
  settings: CompatSettingsInput = {},
  options: CompatLayerOptions<E> = {}
): Layer.Layer<CompatServices, ListenFailed | E, CompatRequirements> => compose(CompatConfig.layer(settings), options)

/** The profile from settings already decoded (e.g. `compatSettingsFromEnv`, adjusted by a program). */
export const compatLayerFrom = <E = never>(
  settings: CompatSettings,
  options: CompatLayerOptions<E> = {}
): Layer.Layer<CompatServices, ListenFailed | E, CompatRequirements> =>
  compose(Layer.succeed(CompatConfig, settings), options)

/**
 * The same, with the settings read from P2P_COMPAT_* environment variables (and the legacy bootstrap client's from
 * P2P_LEGACY_BOOTSTRAP_*).
 */
export const compatLayerConfig: Layer.Layer<
  CompatServices,
  ListenFailed | ConfigError.ConfigError,
  CompatRequirements
> = compose(CompatConfig.layerConfig, { bootstrapClient: LegacyBootstrapClient.layerConfig })
