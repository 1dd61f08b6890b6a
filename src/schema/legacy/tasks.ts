/**
 * The original's NetworkTask on the wire (reference spec 1.2, 6, 8.6): `{"TaskType":<int>,"TaskData":{...}|null}`
 * with the HEAD TaskType numbers, its byte-exact encoding, a decoder that never fails on an unknown type number (the
 * original crashes, B4), the MD5 task hash of the bootstrap signing scheme, and the mapping to the native TaskType.
 */
import { Either, Option, Schema } from "effect"
import { createHash } from "node:crypto"
import type { TaskRequest } from "../tasks.js"
import { describeParseError } from "../tasks.js"
import { TaskType } from "../packets.js"
import { LegacyDecodeError } from "./errors.js"
import { legacyStringify } from "./json.js"
import { Int32, LegacyStringMap, parseLegacyObject } from "./packets.js"

/** TaskType numbers at HEAD (spec 1.2). Numbers from 16 differ in the older snapshot (see `legacyTaskTypeName`). */
export const LegacyTaskType = {
  BlockAndRemovePeer: 0,
  BlockIP: 1,
  SendMessage: 2,
  PingPeer: 3,
  DisconnectPeer: 4,
  AuthorizePeer: 5,
  RevokePeerAuthorization: 6,
  RequestData: 7,
  SendData: 8,
  SynchronizeData: 9,
  UpdateSettings: 10,
  RequestVerifyHashRecord: 11,
  RequestVerifySignature: 12,
  RequestPublicKey: 13,
  BootstrapInitialization: 14,
  Heartbeat: 15,
  HeartbeatResponse: 16,
  SetLocalIdentifier: 17,
  AssignIdentifierToPeer: 18
} as const satisfies Record<TaskType, number>
export type LegacyTaskTypeName = keyof typeof LegacyTaskType

/** Which enum numbering a peer uses: HEAD, or the older snapshot without HeartbeatResponse (spec 12). */
export type LegacyTaskNumbering = "head" | "snapshot"

const headNames: ReadonlyArray<TaskType> = TaskType.literals
const snapshotNames: ReadonlyArray<TaskType> = headNames.filter((name) => name !== "HeartbeatResponse")

/** The name of a TaskType number, or `undefined` for a number the numbering does not define. */
export const legacyTaskTypeName = (
  taskType: number,
  numbering: LegacyTaskNumbering = "head"
): LegacyTaskTypeName | undefined => (numbering === "head" ? headNames : snapshotNames)[taskType]

/** The TaskType number of a name; `undefined` for HeartbeatResponse in the snapshot numbering. */
export const legacyTaskTypeNumber = (name: LegacyTaskTypeName, numbering: LegacyTaskNumbering = "head") => {
  const n = (numbering === "head" ? headNames : snapshotNames).indexOf(name)
  return n === -1 ? undefined : n
}

/**
 * A NetworkTask as the original writes it. `TaskType` is any 32-bit integer (.NET does not validate enums): check
 * `isKnownLegacyTaskType` or `legacyTaskTypeName` before acting on it. `TaskData` keys keep their insertion order on
 * the wire, except integer-like keys ("0", "7"), which JS objects always put first.
 */
export class LegacyNetworkTask extends Schema.Class<LegacyNetworkTask>("LegacyNetworkTask")({
  TaskType: Int32,
  TaskData: Schema.NullOr(LegacyStringMap)
}) {
  /** The HEAD name of the type, `undefined` when unknown. */
  get typeName(): LegacyTaskTypeName | undefined {
    return legacyTaskTypeName(this.TaskType)
  }
}

/** True when the HEAD numbering defines this TaskType. */
export const isKnownLegacyTaskType = (taskType: number): boolean => legacyTaskTypeName(taskType) !== undefined

/**
 * The task's JSON exactly as .NET writes it (the bytes its signature hash covers).
 *
 * @example
 * encodeLegacyTask(new LegacyNetworkTask({ TaskType: 15, TaskData: {} })) // '{"TaskType":15,"TaskData":{}}'
 */
export const encodeLegacyTask = (task: LegacyNetworkTask): string =>
  legacyStringify({ TaskType: task.TaskType, TaskData: task.TaskData })

const encoder = new TextEncoder()

/** `NetworkTask.ToByte()` of the original: UTF-8 of the JSON (what travels inside `<Task>` tags). */
export const legacyTaskBytes = (task: LegacyNetworkTask): Uint8Array => encoder.encode(encodeLegacyTask(task))

/**
 * The original's task hash (spec 8.6): base64 of the MD5 of the serialized task. Compute it on the task without its
 * `Signature` key, as the signer does.
 *
 * @example
 * legacyTaskHash(new LegacyNetworkTask({ TaskType: 4, TaskData: { TargetPeer: "203.0.113.9" } }))
 * // "ovR8sks8MOkO46b4O2AlWw=="
 */
export const legacyTaskHash = (task: LegacyNetworkTask): string =>
  createHash("md5").update(legacyTaskBytes(task)).digest("base64")

const TaskWire = Schema.Struct({
  TaskType: Schema.optionalWith(Int32, { default: () => 0, exact: true }),
  TaskData: Schema.optionalWith(Schema.NullOr(LegacyStringMap), { default: () => null, exact: true })
})
const decodeWire = Schema.decodeUnknownEither(TaskWire)
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/**
 * Reads a NetworkTask from its JSON (a string, or the UTF-8 bytes found between `<Task>` tags). Unknown properties
 * are ignored, missing ones take the C# default (TaskType 0, TaskData null); an unknown TaskType number decodes fine.
 * Not JSON, or a wrong type (TaskType as a string, a non-string TaskData value), is a LegacyDecodeError.
 */
export const decodeLegacyTask = (json: string | Uint8Array): Either.Either<LegacyNetworkTask, LegacyDecodeError> => {
  const text = typeof json === "string" ? Either.right(json) : Either.try(() => utf8.decode(json))
  if (Either.isLeft(text))
    return Either.left(new LegacyDecodeError({ kind: "Task", reason: "NotJson", detail: "not UTF-8" }))
  return Either.flatMap(parseLegacyObject("Task", text.right), (value) =>
    Either.mapBoth(decodeWire(value), {
      onLeft: (error) =>
        new LegacyDecodeError({ kind: "Task", reason: "WrongShape", detail: describeParseError(error) }),
      onRight: (task) => new LegacyNetworkTask(task, true)
    })
  )
}

/**
 * The native TaskType of a legacy number (same numbers at HEAD), or None when the numbering does not define it.
 */
export const toNativeTaskType = (taskType: number, numbering: LegacyTaskNumbering = "head"): Option.Option<TaskType> =>
  Option.fromNullable(legacyTaskTypeName(taskType, numbering))

/** The legacy number of a native TaskType (None only for HeartbeatResponse in the snapshot numbering). */
export const fromNativeTaskType = (
  taskType: TaskType,
  numbering: LegacyTaskNumbering = "head"
): Option.Option<number> => Option.fromNullable(legacyTaskTypeNumber(taskType, numbering))

/**
 * The native task request for a legacy task: type by number, TaskData as taskData (null becomes {}). None for an
 * unknown number. The native `taskData` keys of each type (schema/tasks.ts TaskArgs) are not the original's: the
 * original defines none but `Recipient`, `PublicKey`, `Peers`, `Signature`, `Hash`, `TargetPeer` and `Task_N`.
 */
export const toNativeTaskRequest = (
  task: LegacyNetworkTask,
  numbering: LegacyTaskNumbering = "head"
): Option.Option<TaskRequest> =>
  Option.map(toNativeTaskType(task.TaskType, numbering), (taskType) => ({ taskType, taskData: { ...task.TaskData } }))

/** The legacy task for a native request or task (its id, origin and time are not carried: the original has none). */
export const fromNativeTaskRequest = (
  request: { readonly taskType: TaskType; readonly taskData: Readonly<Record<string, string>> },
  numbering: LegacyTaskNumbering = "head"
): Option.Option<LegacyNetworkTask> =>
  Option.map(
    fromNativeTaskType(request.taskType, numbering),
    (n) => new LegacyNetworkTask({ TaskType: n, TaskData: { ...request.taskData } }, true)
  )
