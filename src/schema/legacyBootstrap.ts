/**
 * The original P2PNet (.NET) bootstrap HTTP API (`/api/Bootstrap/*`, reference spec §8): its paths, the messages its
 * server answers with, what our legacy client returns, and the typed failures of that client. Shared by
 * src/layers/LegacyBootstrapClient.ts and src/layers/LegacyBootstrapServer.ts; the packets themselves are the legacy
 * codec's (src/schema/legacy/).
 */
import { Schema } from "effect"

// ---------------------------------------------------------------------------------------------------------------------
// Paths and fixed texts
// ---------------------------------------------------------------------------------------------------------------------

/** `CommonBootstrapEndpoints` (§8.1). The original server routes them case-insensitively, and so does ours. */
export const LegacyBootstrapPaths = {
  peers: "/api/Bootstrap/peers",
  verifyHash: "/api/Bootstrap/verifyhash",
  publicIp: "/api/Bootstrap/publicip",
  heartbeat: "/api/Bootstrap/heartbeat"
} as const

/** `CollectionSharePacket.Data` as the original server sends it (appendix A). */
export const LEGACY_PEER_LIST_DATA = 100

/** The original's PureMessagePacket default: never an error (`IsErrorResponse`, §8.3 step 4). */
export const LEGACY_PING_MESSAGE = "Pinging"

/** Answer of a trustless server to /verifyhash (§8.4). */
export const LEGACY_TRUSTLESS_VERIFY_MESSAGE = "Trustless policy in effect, no hash verification performed."

/** Messages of the original server's heartbeat endpoint (§8.4), reused by ours so .NET logs read the same. */
export const legacyHeartbeatMessages = {
  invalidPacket: "Invalid heartbeat packet received.",
  unknownClient: (identifier: string) => `ClientPeer with SourceOriginIdentifier '${identifier}' not found.`,
  invalidTask: "Invalid heartbeat network task received."
} as const

// ---------------------------------------------------------------------------------------------------------------------
// What the client returns
// ---------------------------------------------------------------------------------------------------------------------

/** One `GenericPeer` of a CollectionSharePacket: where the server says the peer listens. */
export const LegacyPeer = Schema.Struct({
  address: Schema.String,
  port: Schema.Int,
  /** The peer's `SourceOriginIdentifier` when it registered; `null` when the server sent none. */
  identifier: Schema.NullOr(Schema.String)
}).annotations({ identifier: "LegacyPeer" })
export type LegacyPeer = typeof LegacyPeer.Type

/** The answer to `PUT /api/Bootstrap/peers`. */
export const LegacyPeersResult = Schema.Struct({
  /**
   * `trustless`: `Data` held a CollectionSharePacket; `authority`: a BootstrapInitialization (14) NetworkTask with
   * `PublicKey` and `Peers` (§8.4).
   */
  style: Schema.Literal("trustless", "authority"),
  /** Whether `Data` came wrapped in a format tag (`<MiscData>`, `<Task>`, ...); both are accepted (B21). */
  tagged: Schema.Boolean,
  peers: Schema.Array(LegacyPeer),
  /** Entries left out because their Address is not an IP address or their Port is not 1..65535. */
  dropped: Schema.Int,
  /** Authority style: the `PublicKey` value as given (the original sends an ASCII-armoured PGP key). Not checked. */
  publicKey: Schema.optional(Schema.String),
  /** The server's `SourceOriginIdentifier` (`""` for the original server). */
  serverIdentifier: Schema.String
}).annotations({ identifier: "LegacyPeersResult" })
export type LegacyPeersResult = typeof LegacyPeersResult.Type

/**
 * What a `Signature` value looks like. The original signs with PGP clear-signing, or, when it cannot sign (trustless
 * mode, no key, wrong passphrase), puts the bare hash there (§8.6). Nothing here checks a PGP signature.
 */
export const LegacySignatureKind = Schema.Literal("none", "rawHash", "pgpClearSigned", "other")
export type LegacySignatureKind = typeof LegacySignatureKind.Type

/** A task's hash and what its signature says about it: the same fields on each task and on the heartbeat answer. */
const signatureCheck = {
  /** base64 MD5 of the task without `Signature`, re-encoded with the legacy JSON rules (§8.6). */
  hash: Schema.String,
  signature: Schema.optional(Schema.String),
  signatureKind: LegacySignatureKind,
  /**
   * Whether the signature names this hash: a raw-hash signature equal to it, or a clear-signed text equal to it.
   * This is a consistency check only: the PGP signature itself is not verified.
   */
  signatureMatchesHash: Schema.Boolean
}

/** One `Task_N` entry of a heartbeat answer. */
export const LegacyHeartbeatTask = Schema.Struct({
  /** The TaskData key it came under (`Task_0`, `Task_1`, ...). */
  key: Schema.String,
  /** The task's JSON exactly as given (including its `Signature`). */
  json: Schema.String,
  taskType: Schema.Int,
  taskData: Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.String })),
  ...signatureCheck
}).annotations({ identifier: "LegacyHeartbeatTask" })
export type LegacyHeartbeatTask = typeof LegacyHeartbeatTask.Type

/** The answer to `PUT /api/Bootstrap/heartbeat`: a HeartbeatResponse (16) task. */
export const LegacyHeartbeatResult = Schema.Struct({
  tagged: Schema.Boolean,
  taskType: Schema.Int,
  tasks: Schema.Array(LegacyHeartbeatTask),
  /** TaskData values that were not a readable NetworkTask (other than `Signature`), by key, with the reason. */
  unreadable: Schema.Array(Schema.Struct({ key: Schema.String, reason: Schema.String })),
  /** The response task's own hash (without its `Signature`) and signature, as for each task. */
  ...signatureCheck
}).annotations({ identifier: "LegacyHeartbeatResult" })
export type LegacyHeartbeatResult = typeof LegacyHeartbeatResult.Type

/** The answer to `PUT /api/Bootstrap/verifyhash`. */
export const LegacyVerifyResult = Schema.Struct({
  /** `known`: `True:<hash>`; `unknown`: `False:<hash>`; `unsupported`: any other message (a trustless server). */
  verdict: Schema.Literal("known", "unknown", "unsupported"),
  message: Schema.String
}).annotations({ identifier: "LegacyVerifyResult" })
export type LegacyVerifyResult = typeof LegacyVerifyResult.Type

// ---------------------------------------------------------------------------------------------------------------------
// Client failures
// ---------------------------------------------------------------------------------------------------------------------

/** The request did not get an HTTP answer (bad URL, refused, reset, DNS). */
export class LegacyBootstrapUnreachable extends Schema.TaggedError<LegacyBootstrapUnreachable>()(
  "LegacyBootstrapUnreachable",
  { url: Schema.String, detail: Schema.String }
) {
  override get message() {
    return `legacy bootstrap server ${this.url} unreachable: ${this.detail}`
  }
}

export class LegacyBootstrapTimeout extends Schema.TaggedError<LegacyBootstrapTimeout>()("LegacyBootstrapTimeout", {
  url: Schema.String,
  timeoutMillis: Schema.Number
}) {
  override get message() {
    return `legacy bootstrap server ${this.url} did not answer within ${this.timeoutMillis} ms`
  }
}

/** A status outside 2xx without an error message we could read. */
export class LegacyBootstrapBadStatus extends Schema.TaggedError<LegacyBootstrapBadStatus>()(
  "LegacyBootstrapBadStatus",
  { url: Schema.String, status: Schema.Number, body: Schema.String }
) {
  override get message() {
    return `legacy bootstrap server ${this.url} answered HTTP ${this.status}${this.body === "" ? "" : `: ${this.body}`}`
  }
}

export class LegacyBootstrapTooLarge extends Schema.TaggedError<LegacyBootstrapTooLarge>()("LegacyBootstrapTooLarge", {
  url: Schema.String,
  max: Schema.Number
}) {
  override get message() {
    return `legacy bootstrap server ${this.url} sent more than ${this.max} bytes`
  }
}

/** The body is not JSON (or not UTF-8). */
export class LegacyBootstrapInvalidJson extends Schema.TaggedError<LegacyBootstrapInvalidJson>()(
  "LegacyBootstrapInvalidJson",
  { url: Schema.String, detail: Schema.String }
) {
  override get message() {
    return `legacy bootstrap server ${this.url} sent a body that is not JSON: ${this.detail}`
  }
}

/** The body is JSON but not the packet the endpoint answers with. */
export class LegacyBootstrapUnexpectedShape extends Schema.TaggedError<LegacyBootstrapUnexpectedShape>()(
  "LegacyBootstrapUnexpectedShape",
  { url: Schema.String, detail: Schema.String }
) {
  override get message() {
    return `legacy bootstrap server ${this.url} sent an unexpected answer: ${this.detail}`
  }
}

/**
 * The server answered with an error message: a PureMessagePacket whose `Message` is non-empty and not `"Pinging"`
 * (the original's `IsErrorResponse` rule, §8.3), with any status (the original sends heartbeat errors as 200).
 */
export class LegacyBootstrapRefused extends Schema.TaggedError<LegacyBootstrapRefused>()("LegacyBootstrapRefused", {
  url: Schema.String,
  status: Schema.Number,
  reason: Schema.String
}) {
  override get message() {
    return `legacy bootstrap server ${this.url} refused the request (HTTP ${this.status}): ${this.reason}`
  }
}

export type LegacyBootstrapError =
  | LegacyBootstrapUnreachable
  | LegacyBootstrapTimeout
  | LegacyBootstrapBadStatus
  | LegacyBootstrapTooLarge
  | LegacyBootstrapInvalidJson
  | LegacyBootstrapUnexpectedShape
  | LegacyBootstrapRefused
