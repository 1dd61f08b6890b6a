/**
 * Plain-value settings of a peer network, with the original's defaults where it had one. Users pass these when
 * composing layers in code (`NetworkSettings.make({ port: 0 })`); the node program reads them from environment
 * variables through layers/Settings.ts (names in README.md).
 */
import { Schema } from "effect"

/** How inbound peers are placed (the original's IncomingPeerMode): announced by event, held in a queue, or both. */
export const IncomingPeerPlacement = Schema.Literal("EventBased", "QueueBased", "QueueAndEventBased")
export type IncomingPeerPlacement = typeof IncomingPeerPlacement.Type

/** IncomingPeerTrustPolicy of the original (spec 4.1), with its defaults. */
export class IncomingPeerTrustPolicy extends Schema.Class<IncomingPeerTrustPolicy>("IncomingPeerTrustPolicy")({
  /** Receive Disconnect and PureMessage from untrusted channels. */
  allowDefaultCommunication: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  /** Receive Identity, PeerGroup and DataTransmission from untrusted channels (and trust channels without a handshake). */
  allowEnhancedPacketExchange: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Run the TrustHandshake service on every new channel. */
  runDefaultTrustProtocol: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  incomingPeerPlacement: Schema.optionalWith(IncomingPeerPlacement, { default: () => "EventBased" as const }),
  /** Queue-based placement: how many inbound peers may wait for a decision; more are refused. */
  incomingQueueCapacity: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 64 })
}) {}

const int = (d: number) => Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => d })
const positive = (d: number) => Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => d })

export class NetworkSettings extends Schema.Class<NetworkSettings>("NetworkSettings")({
  /** Network name; peers of other networks are refused when their Hello arrives. */
  network: Schema.optionalWith(Schema.String, { default: () => "p2pnet" }),
  /** Optional pre-shared network key; when set, peers must prove they know it. */
  networkKey: Schema.optionalWith(Schema.String, { default: () => "" }),
  /**
   * How every channel is protected: "noise" (default) runs a Noise XX handshake bound to the node's Ed25519 key and
   * encrypts and authenticates every byte; "plain" sends frames in clear text. Both sides must choose the same: a
   * noise node refuses a plain peer (and the reverse) with a Reject saying why, it never downgrades.
   */
  session: Schema.optionalWith(Schema.Literal("noise", "plain"), { default: () => "noise" as const }),
  /** Address the listener binds. */
  host: Schema.optionalWith(Schema.String, { default: () => "0.0.0.0" }),
  /** TCP listening port; 0 lets the OS pick a free one (observable as PeerNetwork.port). */
  port: Schema.optionalWith(Schema.Int.pipe(Schema.between(0, 65535)), { default: () => 0 }),
  /** Accept inbound connections at all. */
  listen: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  /** File holding the node's Ed25519 private key (PKCS#8 PEM); created when missing. Empty: a fresh key per run. */
  keyFile: Schema.optionalWith(Schema.String, { default: () => "" }),
  /** Largest frame accepted or sent, checked before allocating. */
  maxFrameBytes: positive(16 * 1024 * 1024),
  /** Packets a channel's outbox holds before senders wait (back-pressure). */
  outboxCapacity: positive(1024),
  /** Decoded frames a channel holds before it stops reading its socket. */
  inboxCapacity: positive(4096),
  /** Bytes of decoded frames (attachments, plus 64 per frame) a channel holds before it stops reading its socket. */
  inboxMaxBytes: positive(8 * 1024 * 1024),
  /** Frames per second a peer may send before it is closed as flooding; 0 disables the limit. */
  maxFramesPerSecond: int(500_000),
  connectTimeoutMillis: int(5_000),
  /**
   * Limit for each opening phase, timed separately: the preamble and Hello exchange, a queue-based placement
   * decision, and the trust handshake.
   */
  handshakeTimeoutMillis: int(10_000),
  /** Re-dials of a dropped outbound channel (original: 3). */
  reconnectRetries: int(3),
  /** Delay between re-dials (original: 4000 ms). */
  reconnectDelayMillis: int(4_000),
  /** "fixed" as the original, or "exponential" (doubling from reconnectDelayMillis, with jitter). */
  reconnectBackoff: Schema.optionalWith(Schema.Literal("fixed", "exponential"), { default: () => "fixed" as const }),
  /** DiscernPeerChannels closes channels that received nothing for this long (original: 60 minutes). */
  inactivityLimitMillis: positive(60 * 60 * 1000),
  /** Directory received files are stored in (created on first use); partial files live in its `.partial` folder. */
  fileInbox: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { default: () => "p2p-inbox" }),
  /** Largest file accepted from a peer. */
  maxFileBytes: positive(4 * 1024 * 1024 * 1024),
  /** Bytes of file content per chunk sent (one DataTransmission each). */
  fileChunkBytes: Schema.optionalWith(Schema.Int.pipe(Schema.between(1024, 4 * 1024 * 1024)), {
    default: () => 64 * 1024
  }),
  /** Incoming file transfers one peer may have open at once. */
  fileTransfersPerPeer: positive(4),
  /** How long a sender waits for the receiver's receipt after the last chunk. */
  fileReceiptTimeoutMillis: positive(60_000),
  /** Dial peers learned from PeerGroup packets (and, later, discovery and bootstrap peer lists). */
  autoConnect: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  /** Dials the connector starts per second at most (the original dialled every listed peer at once). */
  connectsPerSecond: positive(4),
  /** Candidates waiting for the connector; more are dropped and counted. */
  connectQueueCapacity: positive(256),
  trust: Schema.optionalWith(IncomingPeerTrustPolicy, { default: () => IncomingPeerTrustPolicy.make({}) })
}) {}

export const LogFormat = Schema.Literal("pretty", "json")
export class LogSettings extends Schema.Class<LogSettings>("LogSettings")({
  level: Schema.optionalWith(Schema.Literal("All", "Trace", "Debug", "Info", "Warning", "Error", "Fatal", "None"), {
    default: () => "Info" as const
  }),
  format: Schema.optionalWith(LogFormat, { default: () => "pretty" as const }),
  /** Also append JSON lines to this file when non-empty. */
  file: Schema.optionalWith(Schema.String, { default: () => "" })
}) {}
