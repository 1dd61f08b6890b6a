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
import type { SecureSession } from "./SecureSession.js"
import { sessionLayer } from "./NoiseSession.js"
import { NetworkConfig } from "./Settings.js"
import { TrustHandshake } from "./TrustHandshake.js"
import { BroadcastRotation, defaultRoutinesLayer } from "./DefaultRoutines.js"
import { RoutineScheduler } from "./RoutineScheduler.js"
import { DistributionHandler } from "./Distribution.js"
import type { Handlers } from "./PacketHandlers.js"
import { PacketDispatcher, PacketHandlers } from "./PacketHandlers.js"
import { ConnectPolicy, PeerConnector } from "./PeerConnector.js"
import { inboxFor, PacketInbox } from "./PacketInbox.js"
import { FileTransfer } from "./FileTransfer.js"
import { FileStore } from "./FileStore.js"
import { NetworkTaskHandler } from "./NetworkTasks.js"
import { DataStore } from "./DataStore.js"
import { BootstrapTaskHook, LocalIdentifier, RemoteTaskPolicy } from "./TaskPolicy.js"
import { packetKinds } from "../schema/packets.js"
import type { PacketKind } from "../schema/packets.js"

export interface NetworkOverrides {
  readonly identity?: Layer.Layer<NodeIdentity, KeyFileError, NetworkConfig>
  readonly trust?: Layer.Layer<IncomingTrust, never, NetworkConfig>
  readonly handshake?: Layer.Layer<TrustHandshake>
  /**
   * How channels are protected (default: `sessionLayer`, Noise unless NetworkSettings.session is "plain"). For
   * example `noiseSessionLayer({ rekeyInterval })`, or `SecureSession.plain`.
   */
  readonly secure?: Layer.Layer<SecureSession, never, NetworkConfig | NodeIdentity>
  /** What the RotateBroadcastPort routine calls; LAN discovery provides it. */
  readonly broadcastRotation?: Layer.Layer<BroadcastRotation>
  /**
   * Packet handlers: replacements by kind (the others keep their defaults), or a whole PacketHandlers layer (which may
   * use any service of the network), or `false` to run no handler at all (received packets are still published to
   * subscribers, but files and tasks are not taken in).
   */
  readonly handlers?: Partial<Handlers> | Layer.Layer<PacketHandlers, never, HandlerServices> | false
  readonly packetBuffer?: number
  /** Where received files are stored (default: the directory NetworkSettings.fileInbox on disk). */
  readonly fileStore?: Layer.Layer<FileStore, never, NetworkConfig>
  /** Which peers learned from the network may be dialled (default: plausible address and port, never itself). */
  readonly connectPolicy?: Layer.Layer<ConnectPolicy, never, NodeIdentity>
  /** Which task types peers may ask this node for (default: RemoteTaskPolicy.layer). */
  readonly taskPolicy?: Layer.Layer<RemoteTaskPolicy>
  /** Named blobs for the data tasks (default: in memory, DataStore.layer). */
  readonly dataStore?: Layer.Layer<DataStore>
  /** Who may set this node's identifier (default: LocalIdentifier.layer, i.e. layerPolicy("LocalAndRemote")). */
  readonly localIdentifier?: Layer.Layer<LocalIdentifier>
  /** What the bootstrap-only task types do (default: rejected, no bootstrap authority). */
  readonly bootstrapTasks?: Layer.Layer<BootstrapTaskHook>
}

/** The services a replacement PacketHandlers layer may use. */
export type HandlerServices = Exclude<NetworkServices, PacketDispatcher>

/** Every service a network layer provides. */
export type NetworkServices =
  | PeerNetwork
  | PeerRegistry
  | RoutineScheduler
  | DistributionHandler
  | NodeIdentity
  | PacketDispatcher
  | FileTransfer
  | NetworkTaskHandler
  | PeerConnector
  | DataStore
  | LocalIdentifier

/**
 * PeerNetwork, PeerRegistry, DistributionHandler, FileTransfer, NetworkTaskHandler, the packet dispatcher and a
 * RoutineScheduler (with the default routines registered, not started) from a NetworkConfig, with defaults for
 * everything else.
 *
 * @example
 * const Node = networkLayer({ handshake: Layer.succeed(TrustHandshake, { run: () => Effect.succeed(Verdict.Trusted()) }) })
 *   .pipe(Layer.provide(NetworkConfig.layer({ port: 0, host: "127.0.0.1" })))
 */
export const networkLayer = (
  overrides: NetworkOverrides = {}
): Layer.Layer<NetworkServices, ListenFailed | KeyFileError, NetworkConfig> => {
  const handlers = overrides.handlers ?? {}
  const handlersLayer = Layer.isLayer(handlers)
    ? (handlers as Layer.Layer<PacketHandlers, never, HandlerServices>)
    : undefined
  const replaced: ReadonlyArray<PacketKind> =
    handlers === false ? [] : Layer.isLayer(handlers) ? packetKinds : (Object.keys(handlers) as Array<PacketKind>)
  const core = PeerNetwork.layer.pipe(
    Layer.provideMerge(handlers === false ? PacketInbox.none : inboxFor(replaced)),
    Layer.provideMerge(
      PeerRegistry.layer(overrides.packetBuffer === undefined ? {} : { packetBuffer: overrides.packetBuffer })
    ),
    Layer.provide(
      Layer.mergeAll(
        overrides.trust ?? IncomingTrust.layer,
        overrides.handshake ?? TrustHandshake.layer,
        overrides.secure ?? sessionLayer
      )
    ),
    Layer.provideMerge(overrides.identity ?? NodeIdentity.layerConfig)
  )
  const tasks = NetworkTaskHandler.layer.pipe(
    Layer.provide(
      Layer.mergeAll(
        overrides.taskPolicy ?? RemoteTaskPolicy.layer,
        overrides.bootstrapTasks ?? BootstrapTaskHook.layer
      )
    ),
    Layer.provideMerge(
      Layer.mergeAll(overrides.dataStore ?? DataStore.layer, overrides.localIdentifier ?? LocalIdentifier.layer)
    )
  )
  const files = FileTransfer.layer.pipe(Layer.provide(overrides.fileStore ?? FileStore.layer))
  const services = Layer.mergeAll(files, tasks).pipe(Layer.provideMerge(DistributionHandler.layer))
  return Layer.mergeAll(
    defaultRoutinesLayer,
    handlers === false
      ? PacketDispatcher.idle
      : PacketDispatcher.layer.pipe(
          Layer.provide(handlersLayer ?? PacketHandlers.layerWith(handlers as Partial<Handlers>))
        )
  ).pipe(
    Layer.provideMerge(services),
    Layer.provideMerge(PeerConnector.layer.pipe(Layer.provide(overrides.connectPolicy ?? ConnectPolicy.layer))),
    Layer.provideMerge(RoutineScheduler.layer),
    Layer.provide(overrides.broadcastRotation ?? BroadcastRotation.none),
    Layer.provideMerge(core)
  )
}

/** A whole network from plain settings (the NetworkConfig is included). */
export const networkLayerWith = (
  settings: Parameters<typeof NetworkConfig.layer>[0] = {},
  overrides: NetworkOverrides = {}
) => networkLayer(overrides).pipe(Layer.provideMerge(NetworkConfig.layer(settings)))

/** A whole network configured from P2P_* environment variables. */
export const networkLayerConfig = (overrides: NetworkOverrides = {}) =>
  networkLayer(overrides).pipe(Layer.provideMerge(NetworkConfig.layerConfig))
