/**
 * The application packets of the original P2PNet (reference spec section 1.2), as Schema classes.
 * Every packet carries its origin identifier and origin time; these classes are the typed values the rest of the
 * library passes around. Their byte layout on the wire is defined by schema/wire.ts and docs/protocol.md.
 */
import { DateTime, Schema } from "effect"
import { IpAddress, NodeId, PeerAddress, Port } from "./ids.js"

/**
 * Origin time. On the wire it travels as integer milliseconds since the Unix epoch (UTC); schema/wire.ts converts.
 * The class field is the Type-side schema: a transforming field makes every constructor call recompile its validator.
 */
const OriginTime = Schema.DateTimeUtcFromSelf

const origin = {
  origin: NodeId,
  sentAt: OriginTime
}

/** "Who I am / where to connect": the sender's listening address and port. */
export class Identity extends Schema.TaggedClass<Identity>()("Identity", {
  message: Schema.String,
  address: IpAddress,
  port: Port,
  ...origin
}) {}

/** Asks the receiver to close the channel; `reason` says why. Implemented here, unlike the original (B22). */
export class Disconnect extends Schema.TaggedClass<Disconnect>()("Disconnect", {
  address: Schema.String,
  port: Port,
  reason: Schema.String,
  data: Schema.Record({ key: Schema.String, value: Schema.String }),
  ...origin
}) {}

/** A share of known peers (the original's CollectionSharePacket). */
export class PeerGroup extends Schema.TaggedClass<PeerGroup>()("PeerGroup", {
  peers: Schema.Array(PeerAddress),
  ...origin
}) {}

/** What a DataTransmission payload is (the original's DataPayloadFormat: File=0, Task=1, MiscData=2). */
export const PayloadFormat = Schema.Literal("File", "Task", "MiscData")
export type PayloadFormat = typeof PayloadFormat.Type

const NODE_ID = /^[0-9a-f]{40}$/
const hasOrigin = (p: { readonly origin: unknown; readonly sentAt: unknown }) =>
  typeof p.origin === "string" && NODE_ID.test(p.origin) && DateTime.isDateTime(p.sentAt) && DateTime.isUtc(p.sentAt)

/**
 * `make` for the high-volume kinds: the same checks as the Schema constructor, written out, and the same instance
 * (prototype plus own fields); anything the quick check does not accept goes through the Schema constructor, which
 * throws its usual ParseError. Schema's class constructor costs about 2.5 us per call, a third of a small send.
 */
const quickMake = (tag: string, ok: (props: any) => boolean) =>
  function <C extends new (...args: Array<any>) => any>(this: C, ...args: ConstructorParameters<C>): InstanceType<C> {
    return args.length === 1 && typeof args[0] === "object" && args[0] !== null && ok(args[0])
      ? Object.assign(Object.create(this.prototype), args[0], { _tag: tag })
      : new this(...args)
  }

/** Raw bytes with a payload format. On the wire the bytes travel as a binary attachment, never base64. */
export class DataTransmission extends Schema.TaggedClass<DataTransmission>()("DataTransmission", {
  format: PayloadFormat,
  data: Schema.Uint8ArrayFromSelf,
  ...origin
}) {
  static override make = quickMake(
    "DataTransmission",
    (p) =>
      Object.keys(p).length === 4 &&
      (p.format === "File" || p.format === "Task" || p.format === "MiscData") &&
      p.data instanceof Uint8Array &&
      hasOrigin(p)
  )
}

/** A plain text message. */
export class PureMessage extends Schema.TaggedClass<PureMessage>()("PureMessage", {
  message: Schema.String,
  ...origin
}) {
  static override make = quickMake(
    "PureMessage",
    (p) => Object.keys(p).length === 3 && typeof p.message === "string" && hasOrigin(p)
  )
}

/** Every application packet kind. */
export const Packet = Schema.Union(Identity, Disconnect, PeerGroup, DataTransmission, PureMessage)
export type Packet = typeof Packet.Type
export type PacketKind = Packet["_tag"]
export const packetKinds: ReadonlyArray<PacketKind> = [
  "Identity",
  "Disconnect",
  "PeerGroup",
  "DataTransmission",
  "PureMessage"
]

/** TaskType of the original, with the same numbers (spec 1.2, HEAD table). */
export const TaskType = Schema.Literal(
  "BlockAndRemovePeer",
  "BlockIP",
  "SendMessage",
  "PingPeer",
  "DisconnectPeer",
  "AuthorizePeer",
  "RevokePeerAuthorization",
  "RequestData",
  "SendData",
  "SynchronizeData",
  "UpdateSettings",
  "RequestVerifyHashRecord",
  "RequestVerifySignature",
  "RequestPublicKey",
  "BootstrapInitialization",
  "Heartbeat",
  "HeartbeatResponse",
  "SetLocalIdentifier",
  "AssignIdentifierToPeer"
)
export type TaskType = typeof TaskType.Type
/** The original's integer for each TaskType (index in the list above). */
export const taskTypeNumber = (t: TaskType): number => TaskType.literals.indexOf(t)

/** Identifies one network task; its reply carries the same id (1 to 64 characters, chosen by the submitter). */
export const TaskId = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(64), Schema.brand("TaskId"))
export type TaskId = typeof TaskId.Type

/**
 * A network task (block a peer, send a message, sync data...). Carried inside a DataTransmission of format Task
 * (schema/tasks.ts has the payload codec, the replies and the typed `taskData` of each type).
 */
export class NetworkTask extends Schema.TaggedClass<NetworkTask>()("NetworkTask", {
  id: TaskId,
  taskType: TaskType,
  taskData: Schema.Record({ key: Schema.String, value: Schema.String }),
  ...origin
}) {}
