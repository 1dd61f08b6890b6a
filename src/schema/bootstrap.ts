/**
 * The bootstrap server's HTTP API, defined once with Schema and shared by the server (src/layers/BootstrapServer.ts,
 * HttpApiBuilder) and its clients (HttpApiClient.make(BootstrapApi, ...)). docs/protocol.md, section "Bootstrap server
 * API and task signatures", describes the requests, the canonical encodings that are signed and the error bodies.
 */
import {
  HttpApi,
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  HttpApiSecurity
} from "@effect/platform"
import { Schema } from "effect"
import { NodeId, Port } from "./ids.js"
import { TaskId, TaskType } from "./packets.js"

// ---------------------------------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------------------------------

/** `trustless` hands out peer lists; `authority` also publishes a key and signs every task it hands out. */
export const BootstrapMode = Schema.Literal("trustless", "authority")
export type BootstrapMode = typeof BootstrapMode.Type

/** Base64 of a raw 32-byte Ed25519 public key. */
export const PublicKeyBase64 = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9+/]{43}=$/))
/** Base64 of a 64-byte Ed25519 signature. */
export const SignatureBase64 = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9+/]{86}==$/))
/** Lowercase hex SHA-256. */
export const HashHex = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))
/** Milliseconds since the Unix epoch (UTC). */
export const EpochMillis = Schema.Int.pipe(Schema.nonNegative())

/**
 * A peer registers itself: its identity, the port it listens on, and a signature (with the key the id derives from)
 * over `registrationBytes`. There is no address field: the server registers the TCP source address it sees (B26), and
 * a body with any field not listed here, `address` included, is refused with 400.
 */
export const RegisterRequest = Schema.Struct({
  id: NodeId,
  port: Port,
  publicKey: PublicKeyBase64,
  network: Schema.String.pipe(Schema.maxLength(128)),
  sentAt: EpochMillis,
  signature: SignatureBase64
}).annotations({ identifier: "RegisterRequest", parseOptions: { onExcessProperty: "error" } })
export type RegisterRequest = typeof RegisterRequest.Type

/** A peer in a list handed out: where the server saw it, and its key, so the receiver can check who answers. */
export const PeerEntry = Schema.Struct({
  id: NodeId,
  address: Schema.String,
  port: Port,
  publicKey: PublicKeyBase64
}).annotations({ identifier: "PeerEntry" })
export type PeerEntry = typeof PeerEntry.Type

export const RegisterResponse = Schema.Struct({
  /** Other registered peers (never the requester), at most the configured list size, a random sample. */
  peers: Schema.Array(PeerEntry),
  network: Schema.String,
  mode: BootstrapMode,
  /** The address the server registered for the requester (its TCP source address). */
  observedAddress: Schema.String,
  /** Authority mode: the key every task this server hands out is signed with. */
  serverPublicKey: Schema.optional(PublicKeyBase64),
  /** A registration not refreshed by a heartbeat for this long is dropped. */
  idleExpirySeconds: Schema.Number
}).annotations({ identifier: "RegisterResponse" })
export type RegisterResponse = typeof RegisterResponse.Type

/** A registered peer asks for its queued tasks and stays registered; signed over `heartbeatBytes`. */
export const HeartbeatRequest = Schema.Struct({
  id: NodeId,
  sentAt: EpochMillis,
  signature: SignatureBase64
}).annotations({ identifier: "HeartbeatRequest" })
export type HeartbeatRequest = typeof HeartbeatRequest.Type

/** A network task as the server hands it out (the JSON form of NetworkTask: sentAt in epoch milliseconds). */
export const TaskWire = Schema.Struct({
  id: TaskId,
  taskType: TaskType,
  taskData: Schema.Record({ key: Schema.String, value: Schema.String }),
  origin: NodeId,
  sentAt: EpochMillis
}).annotations({ identifier: "TaskWire" })
export type TaskWire = typeof TaskWire.Type

/** A task and, in authority mode, its signature: Ed25519 over `taskBytes(task)`, whose SHA-256 is `hash`. */
export const SignedTask = Schema.Struct({
  task: TaskWire,
  hash: HashHex,
  signature: Schema.optional(SignatureBase64),
  keyFingerprint: Schema.optional(Schema.String)
}).annotations({ identifier: "SignedTask" })
export type SignedTask = typeof SignedTask.Type

export const HeartbeatResponse = Schema.Struct({
  tasks: Schema.Array(SignedTask)
}).annotations({ identifier: "HeartbeatResponse" })

export const VerifyRequest = Schema.Struct({ hash: HashHex }).annotations({ identifier: "VerifyRequest" })
export const VerifyResponse = Schema.Struct({
  hash: HashHex,
  /** Whether this server signed a task with this hash (always false in trustless mode). */
  known: Schema.Boolean,
  signature: Schema.optional(SignatureBase64),
  keyFingerprint: Schema.optional(Schema.String),
  signedAt: Schema.optional(EpochMillis)
}).annotations({ identifier: "VerifyResponse" })

export const ServerInfo = Schema.Struct({
  network: Schema.String,
  mode: BootstrapMode,
  /** Authority mode: base64 raw Ed25519 public key and its fingerprint (hex SHA-256, first 16 bytes). */
  publicKey: Schema.optional(PublicKeyBase64),
  fingerprint: Schema.optional(Schema.String),
  /** The NodeId of the authority key: the `origin` of the tasks it signs. */
  serverId: NodeId,
  apiVersion: Schema.Literal(1)
}).annotations({ identifier: "ServerInfo" })
export type ServerInfo = typeof ServerInfo.Type

export const AdminPeer = Schema.Struct({
  id: NodeId,
  address: Schema.String,
  port: Port,
  publicKey: Schema.String,
  registeredAt: EpochMillis,
  lastSeenAt: EpochMillis
}).annotations({ identifier: "AdminPeer" })

export const SigningEntry = Schema.Struct({
  hash: HashHex,
  signature: Schema.String,
  taskJson: Schema.String,
  keyFingerprint: Schema.String,
  signedAt: EpochMillis
}).annotations({ identifier: "SigningEntry" })

export const AuditEntry = Schema.Struct({
  at: EpochMillis,
  action: Schema.String,
  detail: Schema.String
}).annotations({ identifier: "AuditEntry" })

export const PeerAction = Schema.Struct({
  reason: Schema.optional(Schema.String.pipe(Schema.maxLength(256)))
}).annotations({ identifier: "PeerAction" })

export const PeerActionResult = Schema.Struct({
  /** The task queued for every registered peer (signed in authority mode). */
  task: SignedTask,
  /** How many registered peers got it. */
  enqueued: Schema.Int
}).annotations({ identifier: "PeerActionResult" })

export const KeyRotated = Schema.Struct({
  publicKey: PublicKeyBase64,
  fingerprint: Schema.String,
  previousFingerprint: Schema.String
}).annotations({ identifier: "KeyRotated" })

export const RequestCounts = Schema.Struct({
  register: Schema.Int,
  heartbeat: Schema.Int,
  rejected: Schema.Int,
  rateLimited: Schema.Int
})

export const ServerStatus = Schema.Struct({
  network: Schema.String,
  mode: BootstrapMode,
  fingerprint: Schema.optional(Schema.String),
  publicKey: Schema.optional(PublicKeyBase64),
  startedAt: EpochMillis,
  uptimeSeconds: Schema.Number,
  peers: Schema.Int,
  /** Totals since start; a dashboard derives rates from two readings. */
  requests: RequestCounts
}).annotations({ identifier: "ServerStatus" })

const Limit = Schema.Struct({
  limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 1000)))
})

// ---------------------------------------------------------------------------------------------------------------------
// Errors: each body names the problem; the status is part of the schema
// ---------------------------------------------------------------------------------------------------------------------

/** Each error body carries `_tag`, the fields of the problem and a `message` for people. */
export class InvalidSignature extends Schema.TaggedError<InvalidSignature>()(
  "InvalidSignature",
  { detail: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 400 })
) {
  static of(detail: string) {
    return new InvalidSignature({ detail, message: `invalid signature: ${detail}` })
  }
}

export class IdMismatch extends Schema.TaggedError<IdMismatch>()(
  "IdMismatch",
  { id: Schema.String, derived: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 400 })
) {
  static of(id: string, derived: string) {
    return new IdMismatch({ id, derived, message: `id ${id} is not the NodeId of the given public key (${derived})` })
  }
}

export class StaleRequest extends Schema.TaggedError<StaleRequest>()(
  "StaleRequest",
  { sentAt: Schema.Number, serverTime: Schema.Number, message: Schema.String },
  HttpApiSchema.annotations({ status: 400 })
) {
  static of(sentAt: number, serverTime: number, detail: string) {
    return new StaleRequest({
      sentAt,
      serverTime,
      message: `request time ${sentAt} refused (server time ${serverTime}): ${detail}`
    })
  }
}

export class WrongNetwork extends Schema.TaggedError<WrongNetwork>()(
  "WrongNetwork",
  { expected: Schema.String, received: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 400 })
) {
  static of(expected: string, received: string) {
    return new WrongNetwork({
      expected,
      received,
      message: `this server serves network ${JSON.stringify(expected)}, not ${JSON.stringify(received)}`
    })
  }
}

export class MalformedRequest extends Schema.TaggedError<MalformedRequest>()(
  "MalformedRequest",
  { detail: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 400 })
) {
  static of(detail: string) {
    return new MalformedRequest({ detail, message: `malformed request: ${detail}` })
  }
}

export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 401 })
) {}

export class PeerBlocked extends Schema.TaggedError<PeerBlocked>()(
  "PeerBlocked",
  { id: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 403 })
) {
  static of(id: string) {
    return new PeerBlocked({ id, message: `peer ${id} is blocked by this server` })
  }
}

export class UnknownPeer extends Schema.TaggedError<UnknownPeer>()(
  "UnknownPeer",
  { id: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 404 })
) {
  static of(id: string) {
    return new UnknownPeer({
      id,
      message: `peer ${id} is not registered (register first, or again after an idle expiry)`
    })
  }
}

export class NotFound extends Schema.TaggedError<NotFound>()(
  "NotFound",
  { method: Schema.String, path: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 404 })
) {
  static of(method: string, path: string) {
    return new NotFound({ method, path, message: `no endpoint ${method} ${path}` })
  }
}

export class NotAuthority extends Schema.TaggedError<NotAuthority>()(
  "NotAuthority",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 409 })
) {}

export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()(
  "PayloadTooLarge",
  { max: Schema.Number, message: Schema.String },
  HttpApiSchema.annotations({ status: 413 })
) {
  static of(max: number) {
    return new PayloadTooLarge({ max, message: `request body exceeds the ${max}-byte limit` })
  }
}

export class LengthRequired extends Schema.TaggedError<LengthRequired>()(
  "LengthRequired",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 411 })
) {}

export class RateLimited extends Schema.TaggedError<RateLimited>()(
  "RateLimited",
  { retryAfterSeconds: Schema.Number, message: Schema.String },
  HttpApiSchema.annotations({ status: 429 })
) {
  static of(retryAfterSeconds: number) {
    return new RateLimited({
      retryAfterSeconds,
      message: `too many requests from this address; retry in ${retryAfterSeconds} s`
    })
  }
}

export class InternalError extends Schema.TaggedError<InternalError>()(
  "InternalError",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 500 })
) {}

// ---------------------------------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------------------------------

/** Admin endpoints need `Authorization: Bearer <admin token>`, checked on the server in constant time (B25). */
export class AdminAuth extends HttpApiMiddleware.Tag<AdminAuth>()("AdminAuth", {
  failure: Unauthorized,
  security: { bearer: HttpApiSecurity.bearer }
}) {}

export class BootstrapGroup extends HttpApiGroup.make("bootstrap")
  .add(
    HttpApiEndpoint.put("register", "/api/v1/peers")
      .setPayload(RegisterRequest)
      .addSuccess(RegisterResponse)
      .addError(InvalidSignature)
      .addError(IdMismatch)
      .addError(StaleRequest)
      .addError(WrongNetwork)
      .addError(PeerBlocked)
      .addError(RateLimited)
  )
  .add(
    HttpApiEndpoint.post("registerPost", "/api/v1/peers")
      .setPayload(RegisterRequest)
      .addSuccess(RegisterResponse)
      .addError(InvalidSignature)
      .addError(IdMismatch)
      .addError(StaleRequest)
      .addError(WrongNetwork)
      .addError(PeerBlocked)
      .addError(RateLimited)
  )
  .add(
    HttpApiEndpoint.put("heartbeat", "/api/v1/heartbeat")
      .setPayload(HeartbeatRequest)
      .addSuccess(HeartbeatResponse)
      .addError(InvalidSignature)
      .addError(StaleRequest)
      .addError(UnknownPeer)
      .addError(RateLimited)
  )
  .add(HttpApiEndpoint.get("publicip", "/api/v1/publicip").addSuccess(HttpApiSchema.Text()))
  .add(HttpApiEndpoint.post("verify", "/api/v1/verify").setPayload(VerifyRequest).addSuccess(VerifyResponse))
  .add(HttpApiEndpoint.get("info", "/api/v1/info").addSuccess(ServerInfo)) {}

const PeerPath = Schema.Struct({ id: NodeId })

export class AdminGroup extends HttpApiGroup.make("admin")
  .add(HttpApiEndpoint.get("peers", "/peers").addSuccess(Schema.Array(AdminPeer)))
  .add(
    HttpApiEndpoint.post("disconnect", "/peers/:id/disconnect")
      .setPath(PeerPath)
      .setPayload(PeerAction)
      .addSuccess(PeerActionResult)
  )
  .add(
    HttpApiEndpoint.post("block", "/peers/:id/block")
      .setPath(PeerPath)
      .setPayload(PeerAction)
      .addSuccess(PeerActionResult)
  )
  .add(HttpApiEndpoint.get("signatures", "/signatures").setUrlParams(Limit).addSuccess(Schema.Array(SigningEntry)))
  .add(HttpApiEndpoint.post("rotateKey", "/rotate-key").addSuccess(KeyRotated).addError(NotAuthority))
  .add(HttpApiEndpoint.get("status", "/status").addSuccess(ServerStatus))
  .add(HttpApiEndpoint.get("audit", "/audit").setUrlParams(Limit).addSuccess(Schema.Array(AuditEntry)))
  .middleware(AdminAuth)
  .prefix("/api/v1/admin") {}

/**
 * The bootstrap server API. A client:
 *
 * @example
 * const client = yield* HttpApiClient.make(BootstrapApi, { baseUrl: "http://203.0.113.5:8080" })
 * const { peers, serverPublicKey } = yield* client.bootstrap.register({ payload: signedRegistration })
 */
export class BootstrapApi extends HttpApi.make("BootstrapApi")
  .add(BootstrapGroup)
  .add(AdminGroup)
  .addError(MalformedRequest)
  .addError(NotFound)
  .addError(PayloadTooLarge)
  .addError(LengthRequired)
  .addError(InternalError) {}

// ---------------------------------------------------------------------------------------------------------------------
// Canonical encodings: what is signed (UTF-8 of compact JSON arrays; docs/protocol.md)
// ---------------------------------------------------------------------------------------------------------------------

const encoder = new TextEncoder()

/** Signed by a peer with its node key when it registers. */
export const registrationBytes = (r: Omit<RegisterRequest, "signature">): Uint8Array =>
  encoder.encode(JSON.stringify(["p2pnet-bootstrap-register-v1", r.id, r.port, r.publicKey, r.network, r.sentAt]))

/** Signed by a peer with its node key on each heartbeat. */
export const heartbeatBytes = (h: Omit<HeartbeatRequest, "signature">): Uint8Array =>
  encoder.encode(JSON.stringify(["p2pnet-bootstrap-heartbeat-v1", h.id, h.sentAt]))

/**
 * Signed by the authority: the task's type, id, data entries sorted by key (code-unit order), origin and time. The
 * task's `hash` is the hex SHA-256 of these bytes; /api/v1/verify answers whether this server signed that hash.
 */
export const taskBytes = (t: TaskWire): Uint8Array => {
  const entries = Object.keys(t.taskData)
    .sort()
    .map((k) => [k, t.taskData[k]])
  return encoder.encode(JSON.stringify(["p2pnet-task-v1", t.taskType, t.id, entries, t.origin, t.sentAt]))
}
