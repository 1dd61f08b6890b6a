/**
 * Typed errors of the legacy (P2PNet .NET) wire format: decoding packets, tasks and discovery datagrams, the
 * payload-format tags inside a DataTransmission, the tolerant stream parser and the conversion to native packets.
 * None of these is ever thrown; every codec in schema/legacy returns them in an Either.
 */
import { Schema } from "effect"

/** A legacy JSON payload that is not JSON (`NotJson`) or does not have the packet's shape (`WrongShape`). */
export class LegacyDecodeError extends Schema.TaggedError<LegacyDecodeError>()("LegacyDecodeError", {
  /** What was being decoded: a frame kind ("Identity", "Message"...), "Task" or "Discovery". */
  kind: Schema.String,
  reason: Schema.Literal("NotJson", "WrongShape"),
  detail: Schema.String
}) {
  override get message() {
    return `legacy ${this.kind} payload ${this.reason === "NotJson" ? "is not JSON" : "has the wrong shape"}: ${this.detail}`
  }
}

/** The payload-format tags inside DataTransmission data are broken (one tag missing, or closing before opening). */
export class LegacyTagError extends Schema.TaggedError<LegacyTagError>()("LegacyTagError", {
  /** The DataType number of the packet (0 File, 1 Task, 2 MiscData; anything else is unknown). */
  dataType: Schema.Number,
  detail: Schema.String
}) {
  override get message() {
    return `invalid tag structure in legacy data (DataType ${this.dataType}): ${this.detail}`
  }
}

/** The stream parser's buffer passed its bound: the peer sent an opening tag and never closed it in time (B8). */
export class LegacyBufferOverflow extends Schema.TaggedError<LegacyBufferOverflow>()("LegacyBufferOverflow", {
  size: Schema.Number,
  max: Schema.Number
}) {
  override get message() {
    return `legacy stream buffer of ${this.size} bytes exceeds the ${this.max}-byte limit`
  }
}

/** The stream ended inside a frame: an opening tag was seen and its closing tag never came. */
export class LegacyTruncatedFrame extends Schema.TaggedError<LegacyTruncatedFrame>()("LegacyTruncatedFrame", {
  kind: Schema.String,
  /** Bytes of the unfinished frame, opening tag included. */
  bytes: Schema.Number
}) {
  override get message() {
    return `legacy stream ended inside a ${this.kind} frame (${this.bytes} bytes pending)`
  }
}

/** A discovery datagram larger than the receiver accepts; refused before any parsing. */
export class LegacyDatagramTooLarge extends Schema.TaggedError<LegacyDatagramTooLarge>()("LegacyDatagramTooLarge", {
  size: Schema.Number,
  max: Schema.Number
}) {
  override get message() {
    return `legacy discovery datagram of ${this.size} bytes exceeds the ${this.max}-byte limit`
  }
}

/** A discovery datagram whose listening port (`Data`) cannot be dialled. */
export class LegacyPortOutOfRange extends Schema.TaggedError<LegacyPortOutOfRange>()("LegacyPortOutOfRange", {
  port: Schema.Number
}) {
  override get message() {
    return `legacy discovery port ${this.port} is outside 1..65535`
  }
}

/** A legacy packet that has no native equivalent as it stands (an address that is not one, a port out of range...). */
export class LegacyConversionError extends Schema.TaggedError<LegacyConversionError>()("LegacyConversionError", {
  kind: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `legacy ${this.kind} cannot become a native packet: ${this.detail}`
  }
}
