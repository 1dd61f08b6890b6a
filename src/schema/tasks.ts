/**
 * Network tasks on the wire: the Task payload of a DataTransmission is UTF-8 JSON of either a NetworkTask or a
 * TaskReply (the outcome of a task, correlated by the task's id). Also the outcomes, the typed `taskData` of each task
 * type and the `Tasks` constructors. Decoding never throws: bad bytes become a typed MalformedTask or UnknownTaskType
 * (unlike the original, where an unknown type or an untagged payload crashed the process, B4 and B5).
 */
import { Either, Encoding, ParseResult, Schema } from "effect"
import { MalformedTask, UnknownTaskType } from "./errors.js"
import { IpAddress, NodeId } from "./ids.js"
import { NetworkTask, TaskId, TaskType } from "./packets.js"

export const StringMap = Schema.Record({ key: Schema.String, value: Schema.String })

/** The name of an entry in the DataStore. */
export const DataName = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(255), Schema.brand("DataName"))
export type DataName = typeof DataName.Type

/** A SHA-256 hash in lowercase hex. */
const Sha256Hex = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))

/** The DataStore's digest: the SHA-256 of every entry, by name. */
export const Digest = Schema.Record({ key: DataName, value: Sha256Hex })
export type Digest = typeof Digest.Type

/** Entries by name, their bytes in base64 (the result of a SynchronizeData a peer served). */
export const Entries = Schema.Record({ key: DataName, value: Schema.Uint8ArrayFromBase64 })

/** A node's alias or display name (peers still authenticate by key, never by this). */
export const Identifier = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(64), Schema.brand("Identifier"))
export type Identifier = typeof Identifier.Type

/** Why a task was not carried out (the reason text says more). */
export const RejectCode = Schema.Literal(
  /** The sender's RemoteTaskPolicy does not allow this type from this peer. */
  "Forbidden",
  "UnknownTaskType",
  /** The payload could not be decoded. */
  "Malformed",
  /** The taskData does not fit the task type. */
  "InvalidTaskData",
  /** The type has no meaning here (UpdateSettings, RequestVerifySignature, bootstrap types without an authority). */
  "Unsupported",
  /** The node's task queue is full. */
  "Busy",
  /** A peer asked this node to contact another node on its behalf (only SendMessage does that). */
  "NotRelayed",
  /** A policy service refused it (e.g. the LocalIdentifier policy). */
  "Refused"
)
export type RejectCode = typeof RejectCode.Type

/** The task was carried out; `result` holds its data. `rttMillis` is set by the submitter of a remote task. */
export class Done extends Schema.TaggedClass<Done>()("Done", {
  result: StringMap,
  rttMillis: Schema.optional(Schema.Number)
}) {}
/** The task was not carried out, on purpose. */
export class Rejected extends Schema.TaggedClass<Rejected>()("Rejected", {
  code: RejectCode,
  reason: Schema.String
}) {}
/** The task was tried and did not succeed (peer not found, store full...). */
export class Failed extends Schema.TaggedClass<Failed>()("Failed", {
  reason: Schema.String
}) {}
export const TaskOutcome = Schema.Union(Done, Rejected, Failed)
export type TaskOutcome = typeof TaskOutcome.Type

/** The outcome of a task, sent back to the node that sent the task (same id). */
export class TaskReply extends Schema.TaggedClass<TaskReply>()("TaskReply", {
  id: TaskId,
  outcome: TaskOutcome,
  origin: NodeId,
  sentAt: Schema.DateTimeUtcFromSelf
}) {}

/** What a submitter asks for; the handler adds the id, origin and time. */
export const TaskRequest = Schema.Struct({ taskType: TaskType, taskData: StringMap })
export type TaskRequest = typeof TaskRequest.Type

const peer = Schema.optional(NodeId)

/**
 * The `taskData` of each task type the library carries out. `peer` on PingPeer, Heartbeat, RequestData, SendData,
 * SynchronizeData and AssignIdentifierToPeer names the node to contact; without it (or naming the executing node) the
 * task is served by the executing node itself, which is what a peer asks for.
 */
export const TaskArgs = {
  BlockAndRemovePeer: Schema.Struct({ peer: NodeId }),
  BlockIP: Schema.Struct({ address: IpAddress }),
  /** To one peer (`to`), or to every trusted peer. */
  SendMessage: Schema.Struct({ text: Schema.String, to: Schema.optional(NodeId) }),
  PingPeer: Schema.Struct({ peer }),
  DisconnectPeer: Schema.Struct({ peer: NodeId, reason: Schema.optional(Schema.String) }),
  AuthorizePeer: Schema.Struct({ peer: NodeId }),
  RevokePeerAuthorization: Schema.Struct({ peer: NodeId }),
  RequestData: Schema.Struct({ name: DataName, peer }),
  /** `data` in base64; when sending to a peer without `data`, the local entry of that name is sent. */
  SendData: Schema.Struct({ name: DataName, data: Schema.optional(Schema.Uint8ArrayFromBase64), peer }),
  /** `digest` (JSON of name → SHA-256) is the requester's; the peer answers with what differs or is missing. */
  SynchronizeData: Schema.Struct({ peer, digest: Schema.optional(Schema.parseJson(Digest)) }),
  SetLocalIdentifier: Schema.Struct({ identifier: Identifier }),
  AssignIdentifierToPeer: Schema.Struct({ identifier: Identifier, peer }),
  Heartbeat: Schema.Struct({ peer })
} as const

/** Types that only make sense with a bootstrap authority: handed to the BootstrapTaskHook. */
export const bootstrapTaskTypes: ReadonlyArray<TaskType> = [
  "RequestVerifyHashRecord",
  "RequestPublicKey",
  "BootstrapInitialization",
  "HeartbeatResponse"
]

/** Types without a defined meaning: always rejected as Unsupported. */
export const unsupportedTaskTypes: ReadonlyArray<TaskType> = ["UpdateSettings", "RequestVerifySignature"]

const request = (taskType: TaskType, taskData: Record<string, string | undefined>): TaskRequest => ({
  taskType,
  taskData: Object.fromEntries(Object.entries(taskData).filter((e): e is [string, string] => e[1] !== undefined))
})

/**
 * Task requests for `NetworkTaskHandler.submit` (run here) and `submitTo` (run by a peer), without hand-written
 * taskData.
 *
 * @example
 * const outcome = yield* tasks.submit(Tasks.ping(peerId))            // this node pings the peer: Done, rttMillis
 * const served = yield* tasks.submitTo(peerId, Tasks.heartbeat())     // the peer answers: Done { status: "alive" }
 */
export const Tasks = {
  /** Block a peer's identifier, close its channel and forget it. */
  blockAndRemovePeer: (peer: NodeId) => request("BlockAndRemovePeer", { peer }),
  /** Block an address: refuse it at accept and dial, close its channels. */
  blockIP: (address: string) => request("BlockIP", { address }),
  /** Send a PureMessage to one peer, or to every trusted peer. */
  sendMessage: (text: string, to?: NodeId) => request("SendMessage", { text, to }),
  /** Ping `peer` and measure the round trip; without a peer, answer "pong". */
  ping: (peer?: NodeId) => request("PingPeer", { peer }),
  /** Close the channel to a peer (a Disconnect with the reason is sent first). */
  disconnectPeer: (peer: NodeId, reason?: string) => request("DisconnectPeer", { peer, reason }),
  /** Trust a peer's channel. */
  authorizePeer: (peer: NodeId) => request("AuthorizePeer", { peer }),
  /** Stop trusting a peer's channel. */
  revokePeerAuthorization: (peer: NodeId) => request("RevokePeerAuthorization", { peer }),
  /** Fetch the named entry from `from` and store it here; without a peer, answer with the local entry. */
  requestData: (name: string, from?: NodeId) => request("RequestData", { name, peer: from }),
  /** Store an entry at `to` (the given bytes, or the local entry of that name); without a peer, store it here. */
  sendData: (name: string, options: { readonly data?: Uint8Array; readonly to?: NodeId } = {}) =>
    request("SendData", {
      name,
      data: options.data === undefined ? undefined : Encoding.encodeBase64(options.data),
      peer: options.to
    }),
  /** Pull from `peer` every entry that is missing here or differs (the peer's version wins). */
  synchronizeData: (peer: NodeId) => request("SynchronizeData", { peer }),
  /** What a peer is asked in a SynchronizeData: the entries that differ from this digest. */
  synchronizeWith: (digest: Digest) => request("SynchronizeData", { digest: JSON.stringify(digest) }),
  /** Set this node's identifier (an alias; the LocalIdentifier policy decides). */
  setLocalIdentifier: (identifier: string) => request("SetLocalIdentifier", { identifier }),
  /** Ask `peer` to take this identifier (its RemoteTaskPolicy and LocalIdentifier policy decide). */
  assignIdentifierToPeer: (peer: NodeId, identifier: string) => request("AssignIdentifierToPeer", { peer, identifier }),
  /** Ask `peer` whether it is alive; without a peer, answer "alive". */
  heartbeat: (peer?: NodeId) => request("Heartbeat", { peer }),
  /** Any task type with free-form taskData (e.g. the bootstrap types). */
  make: (taskType: TaskType, taskData: Record<string, string> = {}): TaskRequest => ({ taskType, taskData })
} as const

/** The first problem a ParseError reports, as one line. */
export const describeParseError = (error: ParseResult.ParseError): string => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  if (issue === undefined) return "invalid"
  return issue.path.length === 0 ? issue.message : `${issue.path.join(".")}: ${issue.message}`
}

/** The JSON shape of a class with origin fields: origin time as epoch milliseconds. */
const fromWire = <C extends Schema.Schema.AnyNoContext & { readonly fields: Schema.Struct.Fields }>(Class: C) =>
  Schema.transform(
    Schema.Struct({ ...Class.fields, sentAt: Schema.DateTimeUtcFromNumber }),
    Schema.typeSchema(Class) as unknown as Schema.Schema<Schema.Schema.Type<C>>,
    {
      strict: false,
      // validated by the struct already: construct without validating again
      decode: (props) =>
        new (Class as unknown as new (p: unknown, disable: boolean) => Schema.Schema.Type<C>)(props, true),
      encode: (value) => value
    }
  )

/** What a Task payload holds, decoded from its JSON value. */
export const TaskPayload = Schema.Union(fromWire(NetworkTask), fromWire(TaskReply))
export type TaskPayload = NetworkTask | TaskReply

const decodePayload = Schema.decodeUnknownEither(TaskPayload)
const encodePayload = Schema.encodeEither(TaskPayload)
const TaskHeader = Schema.Struct({ _tag: Schema.Literal("NetworkTask"), id: TaskId })
const decodeHeader = Schema.decodeUnknownEither(TaskHeader)
const decodeTypeName = Schema.decodeUnknownEither(Schema.Struct({ taskType: Schema.String }))
const utf8 = new TextDecoder("utf-8", { fatal: true })
const encoder = new TextEncoder()

/** The bytes of a Task payload. Encoding a valid value cannot fail; a Left is a bug. */
export const encodeTaskPayload = (payload: TaskPayload): Either.Either<Uint8Array, ParseResult.ParseError> =>
  Either.map(encodePayload(payload), (json) => encoder.encode(JSON.stringify(json)))

/**
 * A Task payload from bytes. A NetworkTask whose id can be read but whose type is unknown gives UnknownTaskType; any
 * other defect gives MalformedTask (with the task's id when it could be read, so the sender can be told).
 */
export const decodeTaskPayload = (bytes: Uint8Array): Either.Either<TaskPayload, MalformedTask | UnknownTaskType> => {
  const json = Either.try(() => JSON.parse(utf8.decode(bytes)) as unknown)
  if (Either.isLeft(json)) return Either.left(new MalformedTask({ detail: "not UTF-8 JSON" }))
  const decoded = decodePayload(json.right)
  if (Either.isRight(decoded)) return Either.right(decoded.right as TaskPayload)
  const header = decodeHeader(json.right)
  if (Either.isLeft(header)) return Either.left(new MalformedTask({ detail: describeParseError(decoded.left) }))
  const taskId = header.right.id
  const typeName = decodeTypeName(json.right)
  if (Either.isRight(typeName) && !(TaskType.literals as ReadonlyArray<string>).includes(typeName.right.taskType)) {
    return Either.left(new UnknownTaskType({ taskId, taskType: typeName.right.taskType }))
  }
  return Either.left(new MalformedTask({ taskId, detail: describeParseError(decoded.left) }))
}
