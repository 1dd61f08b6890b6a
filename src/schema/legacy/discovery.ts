/**
 * The original's LAN discovery datagram (reference spec 1.5 and 2.4-2.6): the raw JSON of an IdentifierPacket, no
 * tags, `Data` = the sender's TCP listening port. Sent to UDP 8001-8003 by default.
 *
 * Security: the original dials the `IP` written in the datagram (B13), so anyone who can send one UDP packet makes it
 * open a TCP connection anywhere. Our receivers must dial the datagram's source address only, with the `Data` port;
 * the `IP` field is informational and never a dial target. `decodeLegacyDiscovery` does not check it for that reason.
 */
import { Either } from "effect"
import type { DateTime } from "effect"
import { LegacyDatagramTooLarge, LegacyDecodeError, LegacyPortOutOfRange } from "./errors.js"
import type { LegacyTime } from "./json.js"
import { decodeLegacyPacket, encodeLegacyJson, IdentifierPacket, legacyOrigin } from "./packets.js"

/** The original's UDP listening ports (`DesignatedPorts`). */
export const LEGACY_DISCOVERY_PORTS: ReadonlyArray<number> = [8001, 8002, 8003]

/** The largest datagram read by default; a real one is about 150 bytes. */
export const DEFAULT_LEGACY_DATAGRAM_BYTES = 4096

export interface LegacyDiscoveryInput {
  /** Our TCP listening port (`Data`). */
  readonly port: number
  /** The address written as `IP` (the original writes its LocalIPV4Address). */
  readonly ip: string
  /** SourceOriginIdentifier; the original's default is `""`. */
  readonly identifier?: string
  /** SourceOriginTime; the original freezes it when broadcasting starts. */
  readonly time: Date | DateTime.DateTime | number | LegacyTime
  /** Always "discovery" in the original. */
  readonly message?: string
}

const encoder = new TextEncoder()
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/**
 * The datagram bytes, exactly as the original sends them.
 *
 * @example
 * encodeLegacyDiscovery({ port: 8523, ip: "192.168.1.20", time: new Date() })
 * // {"Message":"discovery","Data":8523,"IP":"192.168.1.20","SourceOriginIdentifier":"","SourceOriginTime":"..."}
 */
export const encodeLegacyDiscovery = (input: LegacyDiscoveryInput): Uint8Array =>
  encoder.encode(
    encodeLegacyJson(
      new IdentifierPacket({
        Message: input.message ?? "discovery",
        Data: input.port,
        IP: input.ip,
        ...legacyOrigin(input.identifier ?? "", input.time)
      })
    )
  )

export type LegacyDiscoveryError = LegacyDatagramTooLarge | LegacyDecodeError | LegacyPortOutOfRange

/**
 * Reads a discovery datagram: refused unread above `maxBytes`, then UTF-8 JSON of an IdentifierPacket read as the
 * original reads it, then `Data` must be a dialable port (1..65535). The returned packet's `IP` is NOT an address to
 * dial: use the datagram's source address (see the module comment).
 */
export const decodeLegacyDiscovery = (
  bytes: Uint8Array,
  maxBytes: number = DEFAULT_LEGACY_DATAGRAM_BYTES
): Either.Either<IdentifierPacket, LegacyDiscoveryError> => {
  if (bytes.length > maxBytes) return Either.left(new LegacyDatagramTooLarge({ size: bytes.length, max: maxBytes }))
  const text = Either.try(() => utf8.decode(bytes))
  if (Either.isLeft(text)) {
    return Either.left(new LegacyDecodeError({ kind: "Discovery", reason: "NotJson", detail: "not UTF-8" }))
  }
  const decoded = Either.mapLeft(
    decodeLegacyPacket("Identity", text.right),
    (e) => new LegacyDecodeError({ kind: "Discovery", reason: e.reason, detail: e.detail })
  )
  return Either.flatMap(decoded, (packet) => {
    const identifier = packet as IdentifierPacket
    return identifier.Data >= 1 && identifier.Data <= 65535
      ? Either.right(identifier)
      : Either.left(new LegacyPortOutOfRange({ port: identifier.Data }))
  })
}
