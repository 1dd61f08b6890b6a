/**
 * effect-p2pnet public API: the services and layers users compose, the packet and error schemas, and the wire codec.
 */
export * from "./schema/ids.js"
export * from "./schema/packets.js"
export * from "./schema/handshake.js"
export * from "./schema/errors.js"
export * from "./schema/settings.js"
export {
  decodeBody,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameReader,
  parsePreamble,
  preamble,
  PROTOCOL_VERSION,
  SESSION_CODES
} from "./schema/wire.js"
export type { FrameValue, Preamble, SessionName } from "./schema/wire.js"
export { NetworkConfig, networkSettingsFromEnv, logSettingsFromEnv } from "./layers/Settings.js"
export {
  NodeIdentity,
  generateKeys,
  keysFromPem,
  loadOrCreateKeys,
  nodeIdFromPublicKey,
  verifySignature
} from "./layers/NodeIdentity.js"
export type { NodeKeys } from "./layers/NodeIdentity.js"
export { IncomingTrust, policyGate, isEnhancedKind } from "./layers/IncomingTrust.js"
export { TrustHandshake, Verdict, defaultHandshake, transcript } from "./layers/TrustHandshake.js"
export type { HandshakeContext } from "./layers/TrustHandshake.js"
export { SecureSession } from "./layers/SecureSession.js"
export type { Opening, UpgradeError } from "./layers/SecureSession.js"
export { generateStaticKeys, noiseSession, noiseSessionLayer, sessionLayer } from "./layers/NoiseSession.js"
export type { NoiseOptions, StaticKeyPair } from "./layers/NoiseSession.js"
export { MAX_PLAINTEXT, NoiseCipher, secureTransport } from "./layers/NoiseTransport.js"
export type { SecureByteStream, SessionPeer } from "./layers/NoiseTransport.js"
export { PeerRegistry, NetworkEvent } from "./layers/PeerRegistry.js"
export { PeerNetwork } from "./layers/PeerNetwork.js"
export type { PendingPeer, DialError, DialOptions } from "./layers/PeerNetwork.js"
export { RoutineScheduler } from "./layers/RoutineScheduler.js"
export type { RoutineOptions } from "./layers/RoutineScheduler.js"
export * from "./schema/routines.js"
export {
  BroadcastRotation,
  defaultRoutinesLayer,
  discernPeerChannels,
  DISCERN_PEER_CHANNELS,
  ROTATE_BROADCAST_PORT
} from "./layers/DefaultRoutines.js"
export { DistributionHandler, unwrap, unwrapText } from "./layers/Distribution.js"
export type { BroadcastResult, DistributeOptions, Payload, Received } from "./layers/Distribution.js"
export type { OverflowPolicy } from "./actors/PeerChannel.js"
export { MAX_PEERS_PER_GROUP, PacketDispatcher, PacketHandlers } from "./layers/PacketHandlers.js"
export { ConnectPolicy, PeerConnector, plausiblePeer, RETRY_AFTER_MILLIS } from "./layers/PeerConnector.js"
export type { ConnectorStats } from "./layers/PeerConnector.js"
export { PacketInbox, INBOX_CAPACITY } from "./layers/PacketInbox.js"
export type { Handlers } from "./layers/PacketHandlers.js"
export * from "./schema/files.js"
export { FileTransfer } from "./layers/FileTransfer.js"
export type { BroadcastFileResult, OutgoingTransfer, SendFileOptions } from "./layers/FileTransfer.js"
export { FileStore, makeDirectoryStore, makeMemoryStore } from "./layers/FileStore.js"
export type { PartialFile, StoredFile } from "./layers/FileStore.js"
export * from "./schema/tasks.js"
export {
  DEFAULT_TASK_TIMEOUT,
  MAX_PENDING_TASKS,
  NetworkTaskHandler,
  TASK_QUEUE_CAPACITY,
  TASK_WORKERS
} from "./layers/NetworkTasks.js"
export type { SubmitOptions, SubmitToError, TaskStats } from "./layers/NetworkTasks.js"
export { DataStore, sha256Hex } from "./layers/DataStore.js"
export type { DataStoreLimits } from "./layers/DataStore.js"
export { BootstrapStore, StoreError } from "./layers/BootstrapStore.js"
export type { AuditRecord, PeerRecord, QueuedTask, SigningRecord } from "./layers/BootstrapStore.js"
export {
  migrations as bootstrapStoreMigrations,
  sqliteClient as bootstrapSqliteClient
} from "./layers/BootstrapStoreSql.js"
export {
  BootstrapTaskHook,
  defaultRemoteTaskTypes,
  LocalIdentifier,
  RemoteTaskPolicy,
  TaskSource
} from "./layers/TaskPolicy.js"
export type { IdentifierSource } from "./layers/TaskPolicy.js"
export { PublicAddress, publicIPv4SettingsFromEnv } from "./layers/PublicAddress.js"
export type { PublicAddressError } from "./layers/PublicAddress.js"
export { LocalIdentifierSetPolicy, PublicIPv4GetPolicy, PublicIPv4Settings } from "./schema/trustPolicy.js"
export { networkLayer, networkLayerWith, networkLayerConfig } from "./layers/Network.js"
export type { NetworkOverrides } from "./layers/Network.js"
export { loggingLayer, loggingLayerConfig, Category } from "./layers/Logging.js"
export type { ChannelInfo, ChannelState, ChannelStats, PacketReceived, PeerChannel } from "./actors/PeerChannel.js"
export type { ByteStream, Receiver } from "./actors/Connection.js"
export * from "./schema/interfaces.js"
export * from "./schema/discovery.js"
export {
  formatIpv4,
  interfaceTable,
  isLoopbackIpv4,
  NetworkInterfaces,
  parseIpv4,
  REFRESH_INTERFACES
} from "./layers/Interfaces.js"
export type { InterfaceSource } from "./layers/Interfaces.js"
export {
  Discovery,
  DiscoveryConfig,
  DiscoveryEvent,
  discoveryLayer,
  discoveryLayerConfig,
  discoverySettingsFromEnv,
  DISCOVERY_INBOX_CAPACITY,
  SAME_NODE_WINDOW_MILLIS
} from "./layers/Discovery.js"
export type {
  DiscoveryLayerOptions,
  DiscoveryRequirements,
  DiscoverySettingsInput,
  DiscoveryStats
} from "./layers/Discovery.js"
export { checkDatagram, encodeAnnouncement } from "./actors/DiscoveryCodec.js"
export type { CheckContext, Rejection } from "./actors/DiscoveryCodec.js"
export {
  baseIntervalMillis,
  broadcastTargets,
  LOOPBACK_BROADCAST,
  multicastInterfaces
} from "./actors/DiscoveryTargets.js"
export {
  AdminAuth,
  AdminGroup,
  BootstrapApi,
  BootstrapGroup,
  BootstrapMode,
  heartbeatBytes,
  HeartbeatRequest,
  HeartbeatResponse,
  PeerEntry,
  registrationBytes,
  RegisterRequest,
  RegisterResponse,
  ServerInfo,
  SignedTask,
  taskBytes,
  TaskWire,
  InvalidSignature,
  IdMismatch,
  StaleRequest,
  WrongNetwork,
  MalformedRequest,
  PeerBlocked,
  UnknownPeer,
  PayloadTooLarge,
  LengthRequired,
  RateLimited,
  NotAuthority,
  Unauthorized as BootstrapUnauthorized,
  NotFound as BootstrapNotFound,
  InternalError as BootstrapInternalError
} from "./schema/bootstrap.js"
export {
  BootstrapAuthority,
  fingerprintOf,
  taskHash,
  TRUSTLESS_ORIGIN,
  verifySignedTask
} from "./layers/BootstrapAuthority.js"
export type { AuthorityKey, AuthorityOptions } from "./layers/BootstrapAuthority.js"
export {
  AdminToken,
  BootstrapConfig,
  BootstrapSettingsConfig,
  bootstrapSettings,
  clientAddress,
  httpLayer as bootstrapHttpLayer,
  serverLayer as bootstrapServerLayer,
  serverUrl as bootstrapServerUrl
} from "./layers/BootstrapServer.js"
export type { BootstrapSettings, RequestCounters } from "./layers/BootstrapServer.js"
export { BootstrapTrustPolicy, defaultTrustPolicy, resolvePolicyEither } from "./schema/bootstrapPolicy.js"
export type { BootstrapTrustPolicyInput } from "./schema/bootstrapPolicy.js"
export {
  classifyLegacySignature,
  LegacyBootstrapClient,
  LegacyBootstrapClientConfig,
  legacyHeartbeatRequestBody,
  legacyPeersRequestBody,
  legacyVerifyHashRequestBody,
  readLegacyHeartbeatAnswer,
  readLegacyPeersAnswer,
  readLegacyPublicIpAnswer,
  readLegacyVerifyAnswer
} from "./layers/LegacyBootstrapClient.js"
export type { LegacyBootstrapClientSettings, LegacyRequestOptions, LegacySelf } from "./layers/LegacyBootstrapClient.js"
export { LegacyBootstrapRegistry, legacyRoutes as legacyBootstrapRoutes } from "./layers/LegacyBootstrapServer.js"
export type { LegacyPeerRecord, LegacyRegistryOptions, LegacyRoutesOptions } from "./layers/LegacyBootstrapServer.js"
export * from "./schema/legacyBootstrap.js"
export {
  BootstrapClient,
  BootstrapEvent,
  bootstrapClientLayer,
  bootstrapClientLayerConfig,
  bootstrapSettingsFromEnv,
  trustlessTaskTypes
} from "./layers/BootstrapClient.js"
export type {
  AuthorityPin,
  BootstrapChannel,
  BootstrapChannelState,
  BootstrapChannelStats,
  BootstrapClientError,
  BootstrapClientSettings,
  BootstrapServerEntry
} from "./layers/BootstrapClient.js"

// Legacy (P2PNet .NET) wire format: schema/legacy, used by the compatibility profile.
export {
  CollectionSharePacket,
  DataTransmissionPacket,
  decodeLegacyDiscovery,
  decodeLegacyPacket,
  decodeLegacyTask,
  DEFAULT_LEGACY_BUFFER_BYTES,
  DEFAULT_LEGACY_DATAGRAM_BYTES,
  DisconnectPacket,
  encodeLegacyDiscovery,
  encodeLegacyFrame,
  encodeLegacyJson,
  encodeLegacyTask,
  escapeLegacyString,
  fromNativePacket,
  fromNativeTaskRequest,
  fromNativeTaskType,
  IdentifierPacket,
  isKnownLegacyTaskType,
  LEGACY_DISCOVERY_PORTS,
  LEGACY_MIN_TIME,
  LegacyBufferOverflow,
  LegacyConversionError,
  LegacyDatagramTooLarge,
  legacyDateTime,
  LegacyDataType,
  LegacyDecodeError,
  legacyFrameKind,
  LegacyFrameKind,
  legacyFrameKinds,
  LegacyGenericPeer,
  LegacyJsonDate,
  LegacyNetworkTask,
  legacyOrigin,
  LegacyPacket,
  legacyPacketJson,
  legacyPayloadFormat,
  LegacyPortOutOfRange,
  LegacyStreamParser,
  legacyString,
  legacyStringify,
  LegacyTagError,
  legacyTaskBytes,
  legacyTaskHash,
  LegacyTaskType,
  legacyTaskTypeName,
  legacyTaskTypeNumber,
  LegacyTime,
  legacyTimeToDateTime,
  LegacyTruncatedFrame,
  parseLegacyTime,
  PureMessagePacket,
  toNativePacket,
  toNativeTaskRequest,
  toNativeTaskType,
  unwrapData,
  wrapData
} from "./schema/legacy/index.js"
export type {
  FromNativeContext,
  LegacyDiscoveryError,
  LegacyDiscoveryInput,
  LegacyFrame,
  LegacyJsonValue,
  LegacyStreamParserOptions,
  LegacyTaskNumbering,
  LegacyTaskTypeName,
  ToNativeContext
} from "./schema/legacy/index.js"

// Compatibility profile: unmodified P2PNet (.NET) peers on their own wire (layers/Compat.ts).
export { compatLayer, compatLayerConfig, compatLayerFrom } from "./layers/Compatibility.js"
export type { CompatLayerOptions, CompatRequirements, CompatServices } from "./layers/Compatibility.js"
export {
  CompatBootstrap,
  CompatBootstrapEvent,
  LEGACY_BOOTSTRAP_HEARTBEAT,
  legacyAnnouncedAddress,
  legacyHeartbeatRoutine
} from "./layers/CompatBootstrap.js"
export type { CompatBootstrapStats } from "./layers/CompatBootstrap.js"
export { CompatConfig, CompatProfile, compatSettingsFromEnv } from "./layers/Compat.js"
export { LegacyDiscovery, LegacyDiscoveryEvent } from "./layers/LegacyDiscovery.js"
export type { LegacyDiscoveryStats } from "./layers/LegacyDiscovery.js"
export { legacyNodeId, makeLegacyLink } from "./actors/LegacyLink.js"
export type { LegacyLink, LegacyLinkOptions } from "./actors/LegacyLink.js"
export { CompatSettings, LegacyBootstrapUrl, LegacyDiscoverySettings } from "./schema/compat.js"
export type { CompatSettingsInput } from "./schema/compat.js"
export type { DialRoute, ProfileLink } from "./layers/PeerNetwork.js"
