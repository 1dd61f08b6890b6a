/**
 * Typed failures. Frame and protocol errors close one channel and name the reason; dial, listen and policy errors
 * are returned to the caller. Each has a `message` a person can act on.
 */
import { Schema } from "effect"

export class FrameTooLarge extends Schema.TaggedError<FrameTooLarge>()("FrameTooLarge", {
  size: Schema.Number,
  max: Schema.Number
}) {
  override get message() {
    return `frame of ${this.size} bytes exceeds the ${this.max}-byte limit`
  }
}

export class FrameTruncated extends Schema.TaggedError<FrameTruncated>()("FrameTruncated", {
  expected: Schema.Number,
  received: Schema.Number
}) {
  override get message() {
    return `connection ended inside a frame: ${this.received} of ${this.expected} bytes received`
  }
}

export class FrameNotJson extends Schema.TaggedError<FrameNotJson>()("FrameNotJson", {
  detail: Schema.String
}) {
  override get message() {
    return `frame header is not valid UTF-8 JSON: ${this.detail}`
  }
}

export class UnknownPacketKind extends Schema.TaggedError<UnknownPacketKind>()("UnknownPacketKind", {
  kind: Schema.String
}) {
  override get message() {
    return `unknown packet kind ${JSON.stringify(this.kind)}`
  }
}

export class InvalidPacket extends Schema.TaggedError<InvalidPacket>()("InvalidPacket", {
  kind: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `invalid ${this.kind}: ${this.detail}`
  }
}

/** Any reason a frame could not be turned into a typed value. */
export type FrameError = FrameTooLarge | FrameTruncated | FrameNotJson | UnknownPacketKind | InvalidPacket

export class ProtocolMismatch extends Schema.TaggedError<ProtocolMismatch>()("ProtocolMismatch", {
  reason: Schema.String
}) {
  override get message() {
    return `protocol mismatch: ${this.reason}`
  }
}

/**
 * The two sides announced different session protections in their preambles (one "noise", one "plain"). Neither
 * downgrades: plain text must be chosen explicitly on both sides.
 */
export class SessionMismatch extends Schema.TaggedError<SessionMismatch>()("SessionMismatch", {
  local: Schema.String,
  remote: Schema.String
}) {
  override get message() {
    return this.local === "plain"
      ? `peer requires a ${this.remote} session; this node is set to plain text (session: "plain")`
      : `peer offers a ${this.remote} session; this node requires ${this.local} and never falls back to plain text ` +
          `(plain text must be set explicitly on both sides: session "plain")`
  }
}

/** The peer authenticated as another node than the one it was dialled for. */
export class PeerIdentityMismatch extends Schema.TaggedError<PeerIdentityMismatch>()("PeerIdentityMismatch", {
  expected: Schema.String,
  actual: Schema.String
}) {
  override get message() {
    return `peer proved it is ${this.actual}, but it was dialled as ${this.expected}`
  }
}

export class HandshakeTimeout extends Schema.TaggedError<HandshakeTimeout>()("HandshakeTimeout", {
  millis: Schema.Number
}) {
  override get message() {
    return `handshake did not complete within ${this.millis} ms`
  }
}

export class HandshakeFailed extends Schema.TaggedError<HandshakeFailed>()("HandshakeFailed", {
  reason: Schema.String
}) {
  override get message() {
    return `handshake failed: ${this.reason}`
  }
}

export class PeerFlooding extends Schema.TaggedError<PeerFlooding>()("PeerFlooding", {
  frames: Schema.Number,
  limit: Schema.Number
}) {
  override get message() {
    return `peer sent ${this.frames} frames within one second (limit ${this.limit})`
  }
}

export class ConnectionLost extends Schema.TaggedError<ConnectionLost>()("ConnectionLost", {
  detail: Schema.String
}) {
  override get message() {
    return `connection lost: ${this.detail}`
  }
}

export class RemoteDisconnected extends Schema.TaggedError<RemoteDisconnected>()("RemoteDisconnected", {
  reason: Schema.String
}) {
  override get message() {
    return `peer disconnected: ${this.reason}`
  }
}

export class RemoteRejected extends Schema.TaggedError<RemoteRejected>()("RemoteRejected", {
  reason: Schema.String
}) {
  override get message() {
    return `peer rejected the connection: ${this.reason}`
  }
}

/** The local side closed the channel on purpose (scope closed, duplicate, rejected by the application...). */
export class LocalClose extends Schema.TaggedError<LocalClose>()("LocalClose", {
  reason: Schema.String
}) {
  override get message() {
    return this.reason
  }
}

/** Why a channel closed. */
export type CloseReason =
  | FrameError
  | ProtocolMismatch
  | SessionMismatch
  | PeerIdentityMismatch
  | HandshakeTimeout
  | HandshakeFailed
  | PeerFlooding
  | ConnectionLost
  | RemoteDisconnected
  | RemoteRejected
  | LocalClose

export class DialFailed extends Schema.TaggedError<DialFailed>()("DialFailed", {
  address: Schema.String,
  port: Schema.Number,
  detail: Schema.String
}) {
  override get message() {
    return `could not connect to ${this.address}:${this.port}: ${this.detail}`
  }
}

export class ListenFailed extends Schema.TaggedError<ListenFailed>()("ListenFailed", {
  host: Schema.String,
  port: Schema.Number,
  detail: Schema.String
}) {
  override get message() {
    return `could not listen on ${this.host}:${this.port}: ${this.detail}`
  }
}

export class PeerBlocked extends Schema.TaggedError<PeerBlocked>()("PeerBlocked", {
  target: Schema.String
}) {
  override get message() {
    return `peer ${this.target} is blocked`
  }
}

/** A gated packet kind was sent to, or needed, a channel that is not trusted. */
export class NotTrusted extends Schema.TaggedError<NotTrusted>()("NotTrusted", {
  kind: Schema.String,
  peer: Schema.String
}) {
  override get message() {
    return `cannot send ${this.kind} to untrusted peer ${this.peer}`
  }
}

/** The channel is closed (or closed before the packet was written); `reason` says why. */
export class ChannelClosed extends Schema.TaggedError<ChannelClosed>()("ChannelClosed", {
  peer: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `channel to ${this.peer} is closed: ${this.reason}`
  }
}

export class PeerNotFound extends Schema.TaggedError<PeerNotFound>()("PeerNotFound", {
  peer: Schema.String
}) {
  override get message() {
    return `no active channel to ${this.peer}`
  }
}

export class KeyFileError extends Schema.TaggedError<KeyFileError>()("KeyFileError", {
  path: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `node key file ${this.path}: ${this.detail}`
  }
}

/** A packet was refused because the channel's outbox was full and the overflow policy is "fail". */
export class OutboxFull extends Schema.TaggedError<OutboxFull>()("OutboxFull", {
  peer: Schema.String,
  capacity: Schema.Number
}) {
  override get message() {
    return `outbox to ${this.peer} is full (${this.capacity} packets)`
  }
}

/** A task sent to a peer got no reply in time (its pending entry is removed). */
export class TaskTimeout extends Schema.TaggedError<TaskTimeout>()("TaskTimeout", {
  taskId: Schema.String,
  taskType: Schema.String,
  peer: Schema.String,
  millis: Schema.Number
}) {
  override get message() {
    return `${this.taskType} task ${this.taskId} sent to ${this.peer} got no reply within ${this.millis} ms`
  }
}

/** Too many tasks sent to peers are waiting for their replies; this one was not sent. */
export class TooManyPendingTasks extends Schema.TaggedError<TooManyPendingTasks>()("TooManyPendingTasks", {
  limit: Schema.Number
}) {
  override get message() {
    return `${this.limit} tasks are already waiting for replies; try again once some have completed`
  }
}

/** A Task payload that is not a valid task or reply: garbage bytes, bad JSON, missing or wrongly typed fields. */
export class MalformedTask extends Schema.TaggedError<MalformedTask>()("MalformedTask", {
  /** The task's id when it could be read (a rejection reply is then sent). */
  taskId: Schema.optional(Schema.String),
  detail: Schema.String
}) {
  override get message() {
    return `malformed task payload: ${this.detail}`
  }
}

/** A task whose type this node does not know. */
export class UnknownTaskType extends Schema.TaggedError<UnknownTaskType>()("UnknownTaskType", {
  taskId: Schema.String,
  taskType: Schema.String
}) {
  override get message() {
    return `unknown task type ${JSON.stringify(this.taskType.slice(0, 64))}`
  }
}

/** The RemoteTaskPolicy does not let this peer ask for this task type. */
export class TaskForbidden extends Schema.TaggedError<TaskForbidden>()("TaskForbidden", {
  taskType: Schema.String,
  peer: Schema.String
}) {
  override get message() {
    return `peer ${this.peer} may not ask this node for ${this.taskType}`
  }
}

/** The LocalIdentifier policy refused an identifier (from this source, or of this form). */
export class IdentifierRefused extends Schema.TaggedError<IdentifierRefused>()("IdentifierRefused", {
  identifier: Schema.String,
  source: Schema.Literal("local", "remote"),
  reason: Schema.String
}) {
  override get message() {
    return `identifier ${JSON.stringify(this.identifier.slice(0, 64))} (${this.source}) refused: ${this.reason}`
  }
}

/** The DataStore cannot take this entry without going over its limits. */
export class DataStoreFull extends Schema.TaggedError<DataStoreFull>()("DataStoreFull", {
  name: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `data store cannot take ${JSON.stringify(this.name.slice(0, 64))}: ${this.detail}`
  }
}

/** The interface scan found nothing to use (or could not read the interfaces at all). */
export class NoUsableInterface extends Schema.TaggedError<NoUsableInterface>()("NoUsableInterface", {
  detail: Schema.String
}) {
  override get message() {
    return `no usable network interface: ${this.detail}`
  }
}

/** LAN discovery could not start: no UDP port could be bound, or the settings cannot work. */
export class DiscoveryUnavailable extends Schema.TaggedError<DiscoveryUnavailable>()("DiscoveryUnavailable", {
  reason: Schema.String
}) {
  override get message() {
    return `LAN discovery cannot start: ${this.reason}`
  }
}

/** No public IPv4 address could be found: no source configured, or none gave a valid answer in time. */
export class PublicAddressUnavailable extends Schema.TaggedError<PublicAddressUnavailable>()(
  "PublicAddressUnavailable",
  {
    policy: Schema.String,
    /** One line per source tried: its URL and what went wrong. */
    failures: Schema.Array(Schema.String)
  }
) {
  override get message() {
    return this.failures.length === 0
      ? `no public IPv4 source configured (${this.policy})`
      : `public IPv4 lookup (${this.policy}) failed: ${this.failures.join("; ")}`
  }
}

/** URLListConsensus: no answer was given by enough sources. */
export class PublicAddressNoQuorum extends Schema.TaggedError<PublicAddressNoQuorum>()("PublicAddressNoQuorum", {
  quorum: Schema.Number,
  /** How many sources gave each valid answer. */
  answers: Schema.Record({ key: Schema.String, value: Schema.Number }),
  failures: Schema.Array(Schema.String)
}) {
  override get message() {
    return `no public IPv4 answer reached the quorum of ${this.quorum}: ${JSON.stringify(this.answers)}${
      this.failures.length > 0 ? `; failed: ${this.failures.join("; ")}` : ""
    }`
  }
}

/** A BootstrapTrustPolicy whose settings contradict each other (named by `conflict`). */
export class TrustPolicyConflict extends Schema.TaggedError<TrustPolicyConflict>()("TrustPolicyConflict", {
  conflict: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `bootstrap trust policy conflict ${this.conflict}: ${this.detail}`
  }
}

/** The BootstrapTrustPolicy does not allow a channel of this mode. */
export class BootstrapForbidden extends Schema.TaggedError<BootstrapForbidden>()("BootstrapForbidden", {
  url: Schema.String,
  mode: Schema.Literal("trustless", "authority"),
  reason: Schema.String
}) {
  override get message() {
    return `bootstrap channel to ${this.url} (${this.mode}) forbidden: ${this.reason}`
  }
}

/** FirstSingleLockingAuthority: an authority is pinned already, and it is not this one. */
export class InitialAuthorityLocked extends Schema.TaggedError<InitialAuthorityLocked>()("InitialAuthorityLocked", {
  url: Schema.String,
  pinnedUrl: Schema.String,
  pinnedFingerprint: Schema.String
}) {
  override get message() {
    return `bootstrap authority ${this.url} refused: locked to ${this.pinnedUrl} (key ${this.pinnedFingerprint})`
  }
}

/** The bootstrap authority pin file cannot be read or written. */
export class BootstrapPinFileError extends Schema.TaggedError<BootstrapPinFileError>()("BootstrapPinFileError", {
  path: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `bootstrap pin file ${this.path}: ${this.detail}`
  }
}
