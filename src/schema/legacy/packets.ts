/**
 * The packets of the original P2PNet (.NET) as they travel on its wire (reference spec 1.2-1.3): Schema classes whose
 * fields carry the exact JSON property names, a byte-exact encoder, a tolerant decoder that reads what .NET reads
 * (unknown properties ignored, missing ones take the C# default, names case-sensitive, enums as integers), the
 * payload-format tags of DataTransmission data, and the conversion to and from the native packets of schema/packets.
 */
import { Either, Schema } from "effect"
import type { NodeId } from "../ids.js"
import { IpAddress, PeerAddress, Port } from "../ids.js"
import type { Packet, PayloadFormat } from "../packets.js"
import { DataTransmission, Disconnect, Identity, PeerGroup, PureMessage } from "../packets.js"
import { describeParseError } from "../tasks.js"
import { LegacyConversionError, LegacyDecodeError, LegacyTagError } from "./errors.js"
import type { LegacyJsonValue } from "./json.js"
import {
  LEGACY_MIN_TIME,
  legacyDateTime,
  LegacyJsonDate,
  legacyStringify,
  LegacyTime,
  legacyTimeToDateTime
} from "./json.js"

/** A .NET `int`: JSON integer in 32-bit range (a string or a fraction fails, as in System.Text.Json). */
export const Int32 = Schema.Int.pipe(Schema.between(-2147483648, 2147483647))
/** A .NET `string`, which may be null. */
const NullableString = Schema.NullOr(Schema.String)
/**
 * A .NET `Dictionary<string,string>`. Null values are refused (the original never writes them); a `__proto__` key is
 * dropped on read (Schema.Record does not create it), which keeps prototype pollution out.
 */
export const LegacyStringMap = Schema.Record({ key: Schema.String, value: Schema.String })

/** The base `NetworkPacket` fields, always written last. `SourceOriginIdentifier` is free text, `""` by default. */
const originFields = {
  SourceOriginIdentifier: NullableString,
  SourceOriginTime: LegacyTime
}

/** "Who I am / where to connect". `Data` is the sender's TCP listening port; `Message` is "discovery" from the library. */
export class IdentifierPacket extends Schema.TaggedClass<IdentifierPacket>()("IdentifierPacket", {
  Message: NullableString,
  Data: Int32,
  IP: NullableString,
  ...originFields
}) {}

/** A text message; the default trust handshake sends "Ping from <ip>" in these. */
export class PureMessagePacket extends Schema.TaggedClass<PureMessagePacket>()("PureMessagePacket", {
  Message: NullableString,
  ...originFields
}) {}

/** One element of `CollectionSharePacket.peers`; written as `{"$type":"GenericPeer","Port":..,"Address":..,"Identifier":..}`. */
export const LegacyGenericPeer = Schema.Struct({
  Port: Int32,
  Address: NullableString,
  Identifier: NullableString
})
export type LegacyGenericPeer = typeof LegacyGenericPeer.Type

/** A peer list. `Data` is "optional" in the original; its bootstrap server sends 100. */
export class CollectionSharePacket extends Schema.TaggedClass<CollectionSharePacket>()("CollectionSharePacket", {
  Data: Int32,
  peers: Schema.Array(LegacyGenericPeer),
  ...originFields
}) {}

/** The original's DataPayloadFormat numbers. Other integers are accepted on read, as .NET does not validate enums. */
export const LegacyDataType = { File: 0, Task: 1, MiscData: 2 } as const satisfies Record<PayloadFormat, number>

/** Bytes with a payload format; `Data` is normally wrapped in the format's tags (see `wrapData`). */
export class DataTransmissionPacket extends Schema.TaggedClass<DataTransmissionPacket>()("DataTransmissionPacket", {
  Data: Schema.NullOr(Schema.Uint8ArrayFromSelf),
  DataType: Int32,
  ...originFields
}) {}

/**
 * The shape the original declares for DisconnectPacket (it can neither send nor read one, B22). We put the native
 * `reason` under the `Reason` key of `Data`.
 */
export class DisconnectPacket extends Schema.TaggedClass<DisconnectPacket>()("DisconnectPacket", {
  IP: NullableString,
  Port: Int32,
  Timestamp: LegacyTime,
  Data: LegacyStringMap,
  ...originFields
}) {}

export const LegacyPacket = Schema.Union(
  IdentifierPacket,
  PureMessagePacket,
  CollectionSharePacket,
  DataTransmissionPacket,
  DisconnectPacket
)
export type LegacyPacket = typeof LegacyPacket.Type

/** The frame tags of the TCP stream (`<Identity>...</Identity>`), one per packet class. */
export const LegacyFrameKind = Schema.Literal("Identity", "Disconnect", "PeerGroup", "DataTransmit", "Message")
export type LegacyFrameKind = typeof LegacyFrameKind.Type
/** In the order the original tries them. */
export const legacyFrameKinds: ReadonlyArray<LegacyFrameKind> = LegacyFrameKind.literals

const kindOfTag = {
  IdentifierPacket: "Identity",
  DisconnectPacket: "Disconnect",
  CollectionSharePacket: "PeerGroup",
  DataTransmissionPacket: "DataTransmit",
  PureMessagePacket: "Message"
} as const satisfies Record<LegacyPacket["_tag"], LegacyFrameKind>

/** The frame tag a packet travels in. */
export const legacyFrameKind = (packet: LegacyPacket): LegacyFrameKind => kindOfTag[packet._tag]

/** The two base fields for a packet built here: the identifier (default `""`, as the original) and the time. */
export const legacyOrigin = (
  identifier: string | null = "",
  time: Parameters<typeof legacyDateTime>[0] | LegacyTime = Date.now()
): { readonly SourceOriginIdentifier: string | null; readonly SourceOriginTime: LegacyTime } => ({
  SourceOriginIdentifier: identifier,
  SourceOriginTime: typeof time === "string" ? time : legacyDateTime(time)
})

// ---------------------------------------------------------------------------------------------------------------
// Encoding

const originJson = (p: { readonly SourceOriginIdentifier: string | null; readonly SourceOriginTime: LegacyTime }) => ({
  SourceOriginIdentifier: p.SourceOriginIdentifier,
  SourceOriginTime: new LegacyJsonDate(p.SourceOriginTime)
})

/** The JSON tree of a packet, properties in .NET's order (derived class first, then the base fields). */
export const legacyPacketJson = (p: LegacyPacket): LegacyJsonValue => {
  switch (p._tag) {
    case "IdentifierPacket":
      return { Message: p.Message, Data: p.Data, IP: p.IP, ...originJson(p) }
    case "PureMessagePacket":
      return { Message: p.Message, ...originJson(p) }
    case "CollectionSharePacket":
      return {
        Data: p.Data,
        peers: p.peers.map((peer) => ({
          $type: "GenericPeer",
          Port: peer.Port,
          Address: peer.Address,
          Identifier: peer.Identifier
        })),
        ...originJson(p)
      }
    case "DataTransmissionPacket":
      return { Data: p.Data, DataType: p.DataType, ...originJson(p) }
    case "DisconnectPacket":
      return {
        IP: p.IP,
        Port: p.Port,
        Timestamp: new LegacyJsonDate(p.Timestamp),
        Data: p.Data,
        ...originJson(p)
      }
  }
}

/**
 * The packet's JSON exactly as .NET writes it, without tags (discovery datagrams and HTTP bodies travel like this).
 *
 * @example
 * encodeLegacyJson(new PureMessagePacket({ Message: "hi", ...legacyOrigin("peer_one", T) }))
 * // '{"Message":"hi","SourceOriginIdentifier":"peer_one","SourceOriginTime":"..."}'
 */
export const encodeLegacyJson = (p: LegacyPacket): string => legacyStringify(legacyPacketJson(p))

const encoder = new TextEncoder()

/** One TCP frame: `<Tag>json</Tag>` in UTF-8, nothing before or after (send each in its own socket write). */
export const encodeLegacyFrame = (p: LegacyPacket): Uint8Array => {
  const kind = legacyFrameKind(p)
  return encoder.encode(`<${kind}>${encodeLegacyJson(p)}</${kind}>`)
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding

const withDefault = <S extends Schema.Schema.AnyNoContext>(schema: S, value: () => Schema.Schema.Type<S>) =>
  Schema.optionalWith(schema, { default: value, exact: true })

const originWire = {
  SourceOriginIdentifier: withDefault(NullableString, () => ""),
  SourceOriginTime: withDefault(LegacyTime, () => LEGACY_MIN_TIME)
}

const PeerWire = Schema.Struct({
  // Accepted anywhere and optional on read; .NET wants it first and present, and we always write it so.
  $type: Schema.optional(Schema.Literal("GenericPeer")),
  Port: withDefault(Int32, () => 0),
  Address: withDefault(NullableString, () => null),
  Identifier: withDefault(NullableString, () => null)
})

/** What a JSON object must look like for each frame kind, with the C# default of every missing property. */
const wireSchemas = {
  Identity: Schema.Struct({
    Message: withDefault(NullableString, () => null),
    Data: withDefault(Int32, () => 0),
    IP: withDefault(NullableString, () => null),
    ...originWire
  }),
  Message: Schema.Struct({ Message: withDefault(NullableString, () => "Pinging"), ...originWire }),
  PeerGroup: Schema.Struct({
    Data: withDefault(Int32, () => 0),
    peers: withDefault(Schema.NullOr(Schema.Array(PeerWire)), () => []),
    ...originWire
  }),
  DataTransmit: Schema.Struct({
    Data: withDefault(Schema.NullOr(Schema.Uint8ArrayFromBase64), () => null),
    DataType: withDefault(Int32, () => 0),
    ...originWire
  }),
  Disconnect: Schema.Struct({
    IP: withDefault(NullableString, () => null),
    Port: withDefault(Int32, () => 0),
    Timestamp: withDefault(LegacyTime, () => LEGACY_MIN_TIME),
    Data: withDefault(LegacyStringMap, () => ({})),
    ...originWire
  })
} as const

const decoders = {
  Identity: Schema.decodeUnknownEither(wireSchemas.Identity),
  Message: Schema.decodeUnknownEither(wireSchemas.Message),
  PeerGroup: Schema.decodeUnknownEither(wireSchemas.PeerGroup),
  DataTransmit: Schema.decodeUnknownEither(wireSchemas.DataTransmit),
  Disconnect: Schema.decodeUnknownEither(wireSchemas.Disconnect)
}

/** JSON.parse without throwing; only objects are packets (`null` deserializes to a null packet in .NET). */
export const parseLegacyObject = (kind: string, json: string): Either.Either<object, LegacyDecodeError> => {
  const parsed = Either.try(() => JSON.parse(json) as unknown)
  if (Either.isLeft(parsed)) {
    return Either.left(
      new LegacyDecodeError({
        kind,
        reason: "NotJson",
        detail: parsed.left instanceof Error ? parsed.left.message : String(parsed.left)
      })
    )
  }
  const value = parsed.right
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? Either.right(value)
    : Either.left(new LegacyDecodeError({ kind, reason: "WrongShape", detail: "expected a JSON object" }))
}

const wrongShape = (kind: string) => (error: Parameters<typeof describeParseError>[0]) =>
  new LegacyDecodeError({ kind, reason: "WrongShape", detail: describeParseError(error) })

/** Decodes the payload of one frame (the JSON between its tags) without validating it twice. */
const decodeKind = (kind: LegacyFrameKind, value: object): Either.Either<LegacyPacket, LegacyDecodeError> => {
  switch (kind) {
    case "Identity":
      return Either.mapBoth(decoders.Identity(value), {
        onLeft: wrongShape(kind),
        onRight: (p) => new IdentifierPacket(p, true)
      })
    case "Message":
      return Either.mapBoth(decoders.Message(value), {
        onLeft: wrongShape(kind),
        onRight: (p) => new PureMessagePacket(p, true)
      })
    case "PeerGroup":
      return Either.mapBoth(decoders.PeerGroup(value), {
        onLeft: wrongShape(kind),
        onRight: (p) =>
          new CollectionSharePacket(
            {
              Data: p.Data,
              peers: (p.peers ?? []).map((e) => ({ Port: e.Port, Address: e.Address, Identifier: e.Identifier })),
              SourceOriginIdentifier: p.SourceOriginIdentifier,
              SourceOriginTime: p.SourceOriginTime
            },
            true
          )
      })
    case "DataTransmit":
      return Either.mapBoth(decoders.DataTransmit(value), {
        onLeft: wrongShape(kind),
        onRight: (p) => new DataTransmissionPacket(p, true)
      })
    case "Disconnect":
      return Either.mapBoth(decoders.Disconnect(value), {
        onLeft: wrongShape(kind),
        onRight: (p) => new DisconnectPacket(p, true)
      })
  }
}

/**
 * Reads the JSON of a frame of the given kind as .NET would, without ever throwing: unknown properties are ignored,
 * missing ones take the C# default (a missing time becomes 0001-01-01T00:00:00Z), names are case-sensitive, enums are
 * integers (out-of-range ones kept), and anything else (not JSON, a string where an int belongs...) is a
 * LegacyDecodeError.
 */
export const decodeLegacyPacket = (
  kind: LegacyFrameKind,
  json: string
): Either.Either<LegacyPacket, LegacyDecodeError> =>
  Either.flatMap(parseLegacyObject(kind, json), (value) => decodeKind(kind, value))

// ---------------------------------------------------------------------------------------------------------------
// Payload-format tags inside DataTransmission data

/** The payload formats by DataType number; `undefined` for numbers the original does not define. */
export const legacyPayloadFormat = (dataType: number): PayloadFormat | undefined =>
  dataType === 0 ? "File" : dataType === 1 ? "Task" : dataType === 2 ? "MiscData" : undefined

const tags = {
  File: { open: encoder.encode("<File>"), close: encoder.encode("</File>") },
  Task: { open: encoder.encode("<Task>"), close: encoder.encode("</Task>") },
  MiscData: { open: encoder.encode("<MiscData>"), close: encoder.encode("</MiscData>") }
} as const

/** The first index of `needle` in `haystack` at or after `from`, or -1. */
export const indexOfBytes = (haystack: Uint8Array, needle: Uint8Array, from = 0): number => {
  const first = needle[0]
  const last = haystack.length - needle.length
  for (let i = haystack.indexOf(first!, from); i !== -1 && i <= last; i = haystack.indexOf(first!, i + 1)) {
    let j = 1
    while (j < needle.length && haystack[i + j] === needle[j]) j++
    if (j === needle.length) return i
  }
  return -1
}

const startsWith = (bytes: Uint8Array, prefix: Uint8Array, at = 0) => {
  if (at < 0 || at + prefix.length > bytes.length) return false
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false
  return true
}

/** `<Format>` + bytes + `</Format>`, as the original's `DataTransmissionPacket(byte[], DataPayloadFormat)` does. */
export const wrapData = (format: PayloadFormat, bytes: Uint8Array): Uint8Array => {
  const { close, open } = tags[format]
  const out = new Uint8Array(open.length + bytes.length + close.length)
  out.set(open, 0)
  out.set(bytes, open.length)
  out.set(close, open.length + bytes.length)
  return out
}

/**
 * The payload inside the format tags. Tolerant where the original is not (B5, B21): data that is exactly
 * `<F>...</F>` gives everything between (even if it contains the tags itself); data with no tag at all is returned as
 * it is (several original senders do not wrap); otherwise the original's rule applies (first opening tag, first
 * closing tag, the bytes between). A closing tag before the opening one, or only one of the two, is a LegacyTagError,
 * as is a DataType the original does not define.
 */
export const unwrapData = (
  format: PayloadFormat | number,
  bytes: Uint8Array
): Either.Either<Uint8Array, LegacyTagError> => {
  const name = typeof format === "number" ? legacyPayloadFormat(format) : format
  const dataType = typeof format === "number" ? format : LegacyDataType[format]
  if (name === undefined) return Either.left(new LegacyTagError({ dataType, detail: "unknown DataType" }))
  const { close, open } = tags[name]
  if (
    bytes.length >= open.length + close.length &&
    startsWith(bytes, open) &&
    startsWith(bytes, close, bytes.length - close.length)
  ) {
    return Either.right(bytes.subarray(open.length, bytes.length - close.length))
  }
  const openAt = indexOfBytes(bytes, open)
  const closeAt = indexOfBytes(bytes, close)
  if (openAt === -1 && closeAt === -1) return Either.right(bytes)
  if (openAt === -1 || closeAt === -1 || openAt + open.length > closeAt) {
    const detail = openAt === -1 ? "no opening tag" : closeAt === -1 ? "no closing tag" : "closing tag first"
    return Either.left(new LegacyTagError({ dataType, detail }))
  }
  return Either.right(bytes.subarray(openAt + open.length, closeAt))
}

// ---------------------------------------------------------------------------------------------------------------
// Conversion to and from native packets

/** What a legacy packet lacks to become native: the NodeId the compatibility layer gives the legacy peer. */
export interface ToNativeContext {
  /** Legacy identifiers are free text, not key-derived: the caller decides which NodeId stands for this peer. */
  readonly origin: NodeId
}

/** What a native packet lacks to become legacy. */
export interface FromNativeContext {
  /** Written as SourceOriginIdentifier (the original's default is `""`). */
  readonly identifier?: string | null
  /** CollectionSharePacket.Data (the original's bootstrap server sends 100; default 0). */
  readonly peerGroupData?: number
}

const decodeAddress = Schema.decodeUnknownEither(IpAddress)
const decodePort = Schema.decodeUnknownEither(Port)

/**
 * The native packet for a legacy one. Lost on the way: SourceOriginIdentifier (replaced by `context.origin`), time
 * digits beyond the millisecond, a null Message (becomes ""), CollectionSharePacket.Data, each GenericPeer's
 * Identifier (free text, not a NodeId: `id` is null) and the peers whose Address or Port is unusable (dropped),
 * DisconnectPacket.Timestamp (the `Reason` key of Data becomes `reason`), and the format tags of DataTransmission
 * data (removed by `unwrapData`; untagged data passes as it is). Fails on an Identity without a valid IP or port, a
 * DataTransmission without data or with an unknown DataType, or broken format tags.
 */
export const toNativePacket = (
  legacy: LegacyPacket,
  context: ToNativeContext
): Either.Either<Packet, LegacyConversionError | LegacyTagError> => {
  const origin = { origin: context.origin, sentAt: legacyTimeToDateTime(legacy.SourceOriginTime) }
  const fail = (detail: string) => Either.left(new LegacyConversionError({ kind: legacyFrameKind(legacy), detail }))
  switch (legacy._tag) {
    case "IdentifierPacket": {
      const address = decodeAddress(legacy.IP)
      const port = decodePort(legacy.Data)
      if (Either.isLeft(address)) return fail(`IP: ${describeParseError(address.left)}`)
      if (Either.isLeft(port)) return fail(`Data (port): ${describeParseError(port.left)}`)
      return Either.right(
        new Identity({ message: legacy.Message ?? "", address: address.right, port: port.right, ...origin }, true)
      )
    }
    case "PureMessagePacket":
      return Either.right(PureMessage.make({ message: legacy.Message ?? "", ...origin }))
    case "CollectionSharePacket": {
      const peers: Array<PeerAddress> = []
      for (const peer of legacy.peers) {
        const address = decodeAddress(peer.Address)
        const port = decodePort(peer.Port)
        if (Either.isRight(address) && Either.isRight(port)) {
          peers.push(new PeerAddress({ address: address.right, port: port.right, id: null }, true))
        }
      }
      return Either.right(new PeerGroup({ peers, ...origin }, true))
    }
    case "DataTransmissionPacket": {
      const format = legacyPayloadFormat(legacy.DataType)
      if (format === undefined) return fail(`unknown DataType ${legacy.DataType}`)
      if (legacy.Data === null) return fail("Data is null")
      return Either.map(unwrapData(format, legacy.Data), (data) =>
        DataTransmission.make({ format, data: Uint8Array.from(data), ...origin })
      )
    }
    case "DisconnectPacket": {
      const port = decodePort(legacy.Port)
      if (Either.isLeft(port)) return fail(`Port: ${describeParseError(port.left)}`)
      const { Reason: reason = "", ...data } = legacy.Data
      return Either.right(new Disconnect({ address: legacy.IP ?? "", port: port.right, reason, data, ...origin }, true))
    }
  }
}

/**
 * The legacy packet for a native one. Lost on the way: the origin NodeId (replaced by `context.identifier`) and the
 * PeerAddress ids (written as each GenericPeer's Identifier, which legacy peers treat as free text). A Disconnect's
 * non-empty reason goes under the `Reason` key of Data. DataTransmission data is wrapped in its format tags; the
 * bytes themselves are not converted (a native Task payload is not a legacy NetworkTask: see legacy/tasks.ts).
 */
export const fromNativePacket = (packet: Packet, context: FromNativeContext = {}): LegacyPacket => {
  const origin = legacyOrigin(context.identifier === undefined ? "" : context.identifier, packet.sentAt)
  switch (packet._tag) {
    case "Identity":
      return new IdentifierPacket({ Message: packet.message, Data: packet.port, IP: packet.address, ...origin }, true)
    case "PureMessage":
      return new PureMessagePacket({ Message: packet.message, ...origin }, true)
    case "PeerGroup":
      return new CollectionSharePacket(
        {
          Data: context.peerGroupData ?? 0,
          peers: packet.peers.map((p) => ({ Port: p.port, Address: p.address, Identifier: p.id })),
          ...origin
        },
        true
      )
    case "DataTransmission":
      return new DataTransmissionPacket(
        { Data: wrapData(packet.format, packet.data), DataType: LegacyDataType[packet.format], ...origin },
        true
      )
    case "Disconnect":
      return new DisconnectPacket(
        {
          IP: packet.address,
          Port: packet.port,
          Timestamp: origin.SourceOriginTime,
          Data:
            packet.reason === "" || "Reason" in packet.data ? packet.data : { ...packet.data, Reason: packet.reason },
          ...origin
        },
        true
      )
  }
}
