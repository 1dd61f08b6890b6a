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
