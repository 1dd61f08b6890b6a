/**
 * The compatibility profile as one Layer: on top of a network, talk to unmodified P2PNet (.NET) peers (layers/Compat.ts:
 * legacy listener, dialler and trust) and find them by legacy LAN discovery (layers/LegacyDiscovery.ts).
 */
import { Layer } from "effect"
import type { ConfigError } from "effect"
import type { CompatSettings, CompatSettingsInput } from "../schema/compat.js"
import type { ListenFailed } from "../schema/errors.js"
import { CompatConfig, CompatProfile } from "./Compat.js"
import { NetworkInterfaces } from "./Interfaces.js"
import { LegacyDiscovery } from "./LegacyDiscovery.js"
import type { NodeIdentity } from "./NodeIdentity.js"
import type { PeerConnector } from "./PeerConnector.js"
import type { PeerNetwork } from "./PeerNetwork.js"
import type { PeerRegistry } from "./PeerRegistry.js"
import type { NetworkConfig } from "./Settings.js"

export interface CompatLayerOptions {
  /** Where the advertised address comes from (default: node:os). */
  readonly interfaces?: Layer.Layer<NetworkInterfaces>
}

/** What the profile needs from the network it is added to (networkLayer provides all of it). */
export type CompatRequirements = NetworkConfig | NodeIdentity | PeerNetwork | PeerRegistry | PeerConnector

const compose = <E>(config: Layer.Layer<CompatConfig, E>, options: CompatLayerOptions) =>
  LegacyDiscovery.layer.pipe(
    Layer.provideMerge(CompatProfile.layer),
    Layer.provideMerge(config),
    Layer.provide(options.interfaces ?? NetworkInterfaces.layer)
  )

/**
 * Adds the compatibility profile to a network: legacy peers are accepted on a listener of their own (in 8051..8999
 * unless `port` says otherwise), dialled with the legacy protocol when they are known as legacy (from legacy discovery,
 * a legacy peer's PeerGroup, `peers`, or CompatProfile.dial), and exchange every packet kind through the node's
 * ordinary channels. The original's ping trust is off unless `pingTrust: true` (it authenticates nothing).
 *
 * @example
 * const Node = compatLayer({ pingTrust: true }).pipe(Layer.provideMerge(networkLayerWith({ port: 0 })))
 */
export const compatLayer = (
  settings: CompatSettingsInput = {},
  options: CompatLayerOptions = {}
): Layer.Layer<CompatProfile | CompatConfig | LegacyDiscovery, ListenFailed, CompatRequirements> =>
  compose(CompatConfig.layer(settings), options)

/** The profile from settings already decoded (e.g. `compatSettingsFromEnv`, adjusted by a program). */
export const compatLayerFrom = (
  settings: CompatSettings,
  options: CompatLayerOptions = {}
): Layer.Layer<CompatProfile | CompatConfig | LegacyDiscovery, ListenFailed, CompatRequirements> =>
  compose(Layer.succeed(CompatConfig, settings), options)

/** The same, with the settings read from P2P_COMPAT_* environment variables. */
export const compatLayerConfig: Layer.Layer<
  CompatProfile | CompatConfig | LegacyDiscovery,
  ListenFailed | ConfigError.ConfigError,
  CompatRequirements
> = compose(CompatConfig.layerConfig, {})
