/**
 * The NetworkConfig service: the settings every subsystem reads, given as plain values (`layer`) or read once from
 * environment variables (`layerConfig`). Variable names and defaults are listed in README.md.
 */
import { Config, Context, Effect, Layer } from "effect"
import { IncomingPeerTrustPolicy, LogSettings, NetworkSettings } from "../schema/settings.js"

export class NetworkConfig extends Context.Tag("effect-p2pnet/NetworkConfig")<NetworkConfig, NetworkSettings>() {
  static readonly layer = (settings: Partial<ConstructorParameters<typeof NetworkSettings>[0]> = {}) =>
    Layer.succeed(this, NetworkSettings.make(settings))
  static readonly layerConfig = Layer.effect(
    this,
    Effect.suspend(() => networkSettingsFromEnv)
  )
}

const d = NetworkSettings.make({})
const int = (name: string, def: number) => Config.integer(name).pipe(Config.withDefault(def))
const bool = (name: string, def: boolean) => Config.boolean(name).pipe(Config.withDefault(def))
const str = (name: string, def: string) => Config.string(name).pipe(Config.withDefault(def))

/** Reads NetworkSettings from P2P_* environment variables; every one is optional. */
export const networkSettingsFromEnv = Effect.gen(function* () {
  const c = yield* Config.all({
    network: str("P2P_NETWORK", d.network),
    networkKey: str("P2P_NETWORK_KEY", d.networkKey),
    session: Config.literal("noise", "plain")("P2P_SESSION").pipe(Config.withDefault(d.session)),
    host: str("P2P_HOST", d.host),
    port: Config.integer("P2P_PORT").pipe(
      Config.validate({
        message: "expected a port number from 0 to 65535 (0: any free port)",
        validation: (n) => n >= 0 && n <= 65535
      }),
      Config.withDefault(d.port)
    ),
    listen: bool("P2P_LISTEN", d.listen),
    keyFile: str("P2P_KEY_FILE", d.keyFile),
    maxFrameBytes: int("P2P_MAX_FRAME_BYTES", d.maxFrameBytes),
    outboxCapacity: int("P2P_OUTBOX_CAPACITY", d.outboxCapacity),
    inboxCapacity: int("P2P_INBOX_CAPACITY", d.inboxCapacity),
    inboxMaxBytes: int("P2P_INBOX_MAX_BYTES", d.inboxMaxBytes),
    maxFramesPerSecond: int("P2P_MAX_FRAMES_PER_SECOND", d.maxFramesPerSecond),
    connectTimeoutMillis: int("P2P_CONNECT_TIMEOUT_MS", d.connectTimeoutMillis),
    handshakeTimeoutMillis: int("P2P_HANDSHAKE_TIMEOUT_MS", d.handshakeTimeoutMillis),
    reconnectRetries: int("P2P_RECONNECT_RETRIES", d.reconnectRetries),
    reconnectDelayMillis: int("P2P_RECONNECT_DELAY_MS", d.reconnectDelayMillis),
    inactivityLimitMillis: int("P2P_INACTIVITY_LIMIT_MS", d.inactivityLimitMillis),
    fileInbox: str("P2P_FILE_INBOX", d.fileInbox),
    maxFileBytes: int("P2P_MAX_FILE_BYTES", d.maxFileBytes),
    fileChunkBytes: Config.integer("P2P_FILE_CHUNK_BYTES").pipe(
      Config.validate({
        message: "expected a chunk size from 1024 to 4194304 bytes",
        validation: (n) => n >= 1024 && n <= 4 * 1024 * 1024
      }),
      Config.withDefault(d.fileChunkBytes)
    ),
    fileTransfersPerPeer: int("P2P_FILE_TRANSFERS_PER_PEER", d.fileTransfersPerPeer),
    fileReceiptTimeoutMillis: int("P2P_FILE_RECEIPT_TIMEOUT_MS", d.fileReceiptTimeoutMillis),
    autoConnect: bool("P2P_AUTO_CONNECT", d.autoConnect),
    connectsPerSecond: int("P2P_CONNECTS_PER_SECOND", d.connectsPerSecond),
    connectQueueCapacity: int("P2P_CONNECT_QUEUE_CAPACITY", d.connectQueueCapacity),
    reconnectBackoff: Config.literal(
      "fixed",
      "exponential"
    )("P2P_RECONNECT_BACKOFF").pipe(Config.withDefault(d.reconnectBackoff)),
    allowDefaultCommunication: bool("P2P_ALLOW_DEFAULT_COMMUNICATION", d.trust.allowDefaultCommunication),
    allowEnhancedPacketExchange: bool("P2P_ALLOW_ENHANCED_PACKET_EXCHANGE", d.trust.allowEnhancedPacketExchange),
    runDefaultTrustProtocol: bool("P2P_RUN_DEFAULT_TRUST_PROTOCOL", d.trust.runDefaultTrustProtocol),
    incomingPeerPlacement: Config.literal(
      "EventBased",
      "QueueBased",
      "QueueAndEventBased"
    )("P2P_INCOMING_PEER_PLACEMENT").pipe(Config.withDefault(d.trust.incomingPeerPlacement)),
    incomingQueueCapacity: int("P2P_INCOMING_QUEUE_CAPACITY", d.trust.incomingQueueCapacity)
  })
  const {
    allowDefaultCommunication,
    allowEnhancedPacketExchange,
    incomingPeerPlacement,
    incomingQueueCapacity,
    runDefaultTrustProtocol,
    ...rest
  } = c
  return NetworkSettings.make({
    ...rest,
    trust: IncomingPeerTrustPolicy.make({
      allowDefaultCommunication,
      allowEnhancedPacketExchange,
      runDefaultTrustProtocol,
      incomingPeerPlacement,
      incomingQueueCapacity
    })
  })
})

/** Reads LogSettings from P2P_LOG_LEVEL, P2P_LOG_FORMAT and P2P_LOG_FILE. */
export const logSettingsFromEnv = Effect.gen(function* () {
  const l = LogSettings.make({})
  const c = yield* Config.all({
    level: Config.literal(
      "All",
      "Trace",
      "Debug",
      "Info",
      "Warning",
      "Error",
      "Fatal",
      "None"
    )("P2P_LOG_LEVEL").pipe(Config.withDefault(l.level)),
    format: Config.literal("pretty", "json")("P2P_LOG_FORMAT").pipe(Config.withDefault(l.format)),
    file: str("P2P_LOG_FILE", l.file)
  })
  return LogSettings.make(c)
})
