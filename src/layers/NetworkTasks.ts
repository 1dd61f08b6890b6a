/**
 * NetworkTaskHandler: carries out network tasks (schema/tasks.ts) from local code (`submit`) and from peers (Task
 * payloads of DataTransmission, handed over by the default DataTransmission handler), and sends tasks to peers
 * (`submitTo`), awaiting their replies by task id. Two bounded queues, one for local and one for remote tasks, are
 * drained by worker fibers that die with the network's scope; a task served for a peer never waits on another node,
 * so two nodes asking each other cannot deadlock. Every task ends in an outcome (Done, Rejected, Failed); a bad or
 * forbidden task from a peer is rejected, counted and answered when its id can be read, never a crash (B4, B5).
 */
import {
  Cause,
  Clock,
  Context,
  DateTime,
  Deferred,
  Duration,
  Effect,
  Either,
  Encoding,
  HashMap,
  Layer,
  Option
} from "effect"
import { Queue, Ref, Schema } from "effect"
import { randomUUID } from "node:crypto"
import type { OverflowPolicy, PeerChannel } from "../actors/PeerChannel.js"
import type { FrameTooLarge, IdentifierRefused, MalformedTask, NotTrusted, UnknownTaskType } from "../schema/errors.js"
import type { PeerNotFound } from "../schema/errors.js"
import { ChannelClosed, TaskForbidden, TaskTimeout, TooManyPendingTasks } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import { DataTransmission, NetworkTask, PureMessage } from "../schema/packets.js"
import type { TaskId } from "../schema/packets.js"
import type { Digest, TaskOutcome } from "../schema/tasks.js"
import {
  DataName,
  decodeTaskPayload,
  describeParseError,
  Done,
  encodeTaskPayload,
  Entries,
  Failed,
  Rejected,
  TaskArgs,
  TaskReply,
  TaskRequest,
  Tasks
} from "../schema/tasks.js"
import { DataStore, sha256Hex } from "./DataStore.js"
import type { Received } from "./Distribution.js"
import { DistributionHandler } from "./Distribution.js"
import { Category } from "./Logging.js"
import { NodeIdentity } from "./NodeIdentity.js"
import { PeerRegistry } from "./PeerRegistry.js"
import { BootstrapTaskHook, LocalIdentifier, RemoteTaskPolicy, TaskSource } from "./TaskPolicy.js"

/** Tasks each queue (local, remote) holds; a full local queue makes `submit` wait, a full remote one rejects (Busy). */
export const TASK_QUEUE_CAPACITY = 256
/** Workers per queue: tasks of one queue run at most this many at a time. */
export const TASK_WORKERS = 4
/** Tasks sent with `submitTo` that may wait for their replies at once. */
export const MAX_PENDING_TASKS = 1024
/** How long `submitTo` waits for a reply by default. */
export const DEFAULT_TASK_TIMEOUT: Duration.Duration = Duration.seconds(10)

export interface TaskStats {
  /** Tasks this node carried out (local and for peers), by outcome. */
  readonly done: number
  readonly rejected: number
  readonly failed: number
  /** Of the rejected: Task payloads from peers that could not be decoded (garbage, bad JSON, wrong types). */
  readonly malformed: number
  /** Of the rejected: tasks from peers with a task type this node does not know. */
  readonly unknownType: number
  /** Of the rejected: tasks the RemoteTaskPolicy refused. */
  readonly forbidden: number
  /** Of the rejected: tasks from peers refused because the remote queue was full. */
  readonly busy: number
  /** `submitTo` calls that gave up waiting for a reply. */
  readonly timedOut: number
  /** Replies that matched no waiting task, or came from another peer than the one the task was sent to. */
  readonly ignoredReplies: number
  /** `submitTo` calls waiting for a reply now. */
  readonly pending: number
  /** Tasks waiting for a worker now. */
  readonly queued: number
}

export interface SubmitOptions {
  /** How long to wait for the reply (default DEFAULT_TASK_TIMEOUT); the send is included. */
  readonly timeout?: Duration.DurationInput
}

export type SubmitToError =
  PeerNotFound | NotTrusted | ChannelClosed | FrameTooLarge | TaskTimeout | TooManyPendingTasks

export class NetworkTaskHandler extends Context.Tag("effect-p2pnet/NetworkTaskHandler")<
  NetworkTaskHandler,
  {
    /** Handles a received DataTransmission of format Task (called by the default DataTransmission handler). */
    readonly incoming: (received: Received<"DataTransmission">) => Effect.Effect<void>
    /**
     * Carries out a task on this node and returns its outcome. Never fails: a task that cannot be carried out is
     * Rejected or Failed. `options.timeout` bounds the wait for a peer the task contacts (ping, data, assign).
     *
     * @example
     * const outcome = yield* tasks.submit(Tasks.sendMessage("hello, everyone"))
     */
    readonly submit: (request: TaskRequest, options?: SubmitOptions) => Effect.Effect<TaskOutcome>
    /**
     * Sends a task to a peer, which carries it out if its RemoteTaskPolicy allows, and returns the peer's outcome
     * (a Done carries `rttMillis`, the round trip measured here).
     *
     * @example
     * const pong = yield* tasks.submitTo(peer, Tasks.ping(), { timeout: "2 seconds" })
     */
    readonly submitTo: (
      peer: NodeId,
      request: TaskRequest,
      options?: SubmitOptions
    ) => Effect.Effect<TaskOutcome, SubmitToError>
    readonly stats: Effect.Effect<TaskStats>
  }
>() {
  /** Needs the policy services (TaskPolicy.ts) and a DataStore; networkLayer provides defaults for them. */
  static readonly layer: Layer.Layer<
    NetworkTaskHandler,
    never,
    | PeerRegistry
    | NodeIdentity
    | DistributionHandler
    | DataStore
    | RemoteTaskPolicy
    | LocalIdentifier
    | BootstrapTaskHook
  > = Layer.scoped(
    this,
    Effect.suspend(() => make)
  )
}

interface Job {
  readonly task: NetworkTask
  readonly source: TaskSource
  /** For a task that contacts a peer: how long to wait for it. */
  readonly options: SubmitOptions
  /** Delivers the outcome; `thenActions` says actions wait for it, so a reply must be written before they run. */
  readonly complete: (outcome: TaskOutcome, thenActions: boolean) => Effect.Effect<void>
}

interface Pending {
  readonly peer: NodeId
  readonly reply: Deferred.Deferred<TaskOutcome>
}

type Counter = Exclude<keyof TaskStats, "pending" | "queued">
const counterNames: ReadonlyArray<Counter> = [
  "done",
  "rejected",
  "failed",
  "malformed",
  "unknownType",
  "forbidden",
  "busy",
  "timedOut",
  "ignoredReplies"
]

const done = (result: Record<string, string>) => Done.make({ result })
const failed = (reason: string) => Failed.make({ reason })
const invalid = (reason: string) => Rejected.make({ code: "InvalidTaskData", reason })
const notRelayed = Rejected.make({
  code: "NotRelayed",
  reason: "this node does not contact other nodes on a peer's behalf"
})
const isDataName = Schema.is(DataName)
const decodeRequest = Schema.decodeUnknownEither(TaskRequest)
const decodeEntries = Schema.decodeUnknownEither(Entries)

/** Decodes the task's taskData for its type; a mismatch is Rejected with InvalidTaskData. */
const withArgs = <A, I>(
  schema: Schema.Schema<A, I>,
  task: NetworkTask,
  f: (args: A) => Effect.Effect<TaskOutcome>
): Effect.Effect<TaskOutcome> =>
  Either.match(Schema.decodeUnknownEither(schema)(task.taskData), {
    onLeft: (e) => Effect.succeed(invalid(`${task.taskType}: ${describeParseError(e)}`)),
    onRight: f
  })

const make = Effect.gen(function* () {
  const registry = yield* PeerRegistry
  const keys = yield* NodeIdentity
  const distribution = yield* DistributionHandler
  const store = yield* DataStore
  const policy = yield* RemoteTaskPolicy
  const identifier = yield* LocalIdentifier
  const hook = yield* BootstrapTaskHook

  const counters = yield* Ref.make(Object.fromEntries(counterNames.map((n) => [n, 0])) as Record<Counter, number>)
  const pending = yield* Ref.make(HashMap.empty<string, Pending>())
  const localQueue = yield* Effect.acquireRelease(Queue.bounded<Job>(TASK_QUEUE_CAPACITY), Queue.shutdown)
  const remoteQueue = yield* Effect.acquireRelease(Queue.bounded<Job>(TASK_QUEUE_CAPACITY), Queue.shutdown)
  // completed when the scope closes (after the workers stop, before the queues shut down): submitters stop waiting
  const stopped = yield* Effect.acquireRelease(Deferred.make<void>(), (d) => Deferred.succeed(d, undefined))

  const count = (...names: ReadonlyArray<Counter>) =>
    Ref.update(counters, (c) => {
      const next = { ...c }
      for (const n of names) next[n]++
      return next
    })
  const countOutcome = (outcome: TaskOutcome) =>
    count(outcome._tag === "Done" ? "done" : outcome._tag === "Rejected" ? "rejected" : "failed")

  const encode = (payload: NetworkTask | TaskReply) =>
    Effect.orDie(encodeTaskPayload(payload)).pipe(
      Effect.map((data) => DataTransmission.make({ format: "Task", data, origin: keys.id, sentAt: payload.sentAt }))
    )

  const newTask = (request: TaskRequest) =>
    Effect.map(
      DateTime.now,
      (sentAt) =>
        new NetworkTask(
          {
            id: randomUUID() as TaskId,
            taskType: request.taskType,
            taskData: request.taskData,
            origin: keys.id,
            sentAt
          },
          true
        )
    )

  /** Sends a task's outcome back on the channel it came from; a reply too large for a frame becomes a Failed. */
  const reply = (
    channel: PeerChannel,
    id: TaskId,
    outcome: TaskOutcome,
    whenFull: OverflowPolicy | "written"
  ): Effect.Effect<void> =>
    Effect.gen(function* () {
      const packet = yield* encode(TaskReply.make({ id, outcome, origin: keys.id, sentAt: yield* DateTime.now }))
      yield* (whenFull === "written" ? channel.sendAndAwait(packet) : channel.offer(packet, whenFull)).pipe(
        Effect.catchTag("FrameTooLarge", (e) =>
          outcome._tag === "Failed"
            ? Effect.fail(e)
            : reply(channel, id, failed(`the reply is too large: ${e.message}`), whenFull)
        ),
        Effect.catchAll((e) => Effect.logDebug(`task reply not sent: ${e.message}`))
      )
    })

  // ---- sending tasks to peers ----

  const submitTo = (
    peer: NodeId,
    request: TaskRequest,
    options: SubmitOptions = {}
  ): Effect.Effect<TaskOutcome, SubmitToError> =>
    Effect.gen(function* () {
      const valid = decodeRequest(request)
      if (Either.isLeft(valid)) return invalid(describeParseError(valid.left))
      const channel = yield* registry.channel(peer)
      const task = yield* newTask(valid.right)
      const packet = yield* encode(task)
      const replied = yield* Deferred.make<TaskOutcome>()
      const timeout = Duration.decode(options.timeout ?? DEFAULT_TASK_TIMEOUT)
      const register = Effect.flatMap(
        Ref.modify(pending, (m) =>
          HashMap.size(m) >= MAX_PENDING_TASKS
            ? [false, m]
            : [true, HashMap.set(m, task.id as string, { peer, reply: replied })]
        ),
        (added) => (added ? Effect.void : Effect.fail(new TooManyPendingTasks({ limit: MAX_PENDING_TASKS })))
      )
      const exchange = Effect.gen(function* () {
        const started = yield* Clock.currentTimeNanos
        yield* channel.send(packet)
        const outcome = yield* Effect.raceFirst(
          Deferred.await(replied),
          Effect.flatMap(channel.awaitClosed, (reason) =>
            Effect.fail(new ChannelClosed({ peer, reason: reason.message }))
          )
        )
        const rttMillis = Number((yield* Clock.currentTimeNanos) - started) / 1e6
        return outcome._tag === "Done" ? Done.make({ result: outcome.result, rttMillis }) : outcome
      }).pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () =>
            new TaskTimeout({ taskId: task.id, taskType: task.taskType, peer, millis: Duration.toMillis(timeout) })
        }),
        Effect.tapErrorTag("TaskTimeout", () => count("timedOut"))
      )
      // the entry goes however this ends: reply, timeout, closed channel or interruption
      return yield* Effect.acquireUseRelease(
        register,
        () => exchange,
        () => Ref.update(pending, HashMap.remove(task.id as string))
      )
    }).pipe(Effect.withSpan("NetworkTaskHandler.submitTo", { attributes: { peer, taskType: request.taskType } }))

  /** A task run here that contacts a peer: the peer's outcome, or Failed with why it could not be asked. */
  const ask = (peer: NodeId, request: TaskRequest, options: SubmitOptions) =>
    submitTo(peer, request, options).pipe(Effect.catchAll((e) => Effect.succeed(failed(e.message))))

  // ---- carrying out tasks ----

  const here = (peer: NodeId | undefined) => peer === undefined || peer === keys.id

  const storeAll = (entries: ReadonlyArray<readonly [string, Uint8Array]>) =>
    Effect.forEach(entries, ([name, data]) => Effect.as(store.put(name, data), [name, sha256Hex(data)] as const)).pipe(
      Effect.map((stored) => done(Object.fromEntries(stored))),
      Effect.catchTag("DataStoreFull", (e) => Effect.succeed(failed(e.message)))
    )

  const serveSync = (theirs: Digest) =>
    Effect.gen(function* () {
      const mine = yield* store.digest
      const names = Object.keys(mine).filter(
        (name) => isDataName(name) && theirs[name as DataName] !== mine[name as DataName]
      )
      const entries = yield* Effect.forEach(names, (name) =>
        Effect.map(
          store.get(name),
          Option.map((data) => [name, Encoding.encodeBase64(data)] as const)
        )
      )
      return done(Object.fromEntries(entries.flatMap(Option.toArray)))
    })

  const pullSync = (peer: NodeId, options: SubmitOptions) =>
    Effect.gen(function* () {
      const mine = yield* store.digest
      const digest = Object.fromEntries(Object.entries(mine).filter(([name]) => isDataName(name))) as Digest
      const outcome = yield* ask(peer, Tasks.synchronizeWith(digest), options)
      if (outcome._tag !== "Done") return outcome
      const entries = decodeEntries(outcome.result)
      if (Either.isLeft(entries)) return failed(`the peer's entries are invalid: ${describeParseError(entries.left)}`)
      return yield* storeAll(Object.entries(entries.right))
    })

  const fetchData = (peer: NodeId, name: DataName, options: SubmitOptions) =>
    Effect.gen(function* () {
      const outcome = yield* ask(peer, Tasks.requestData(name), options)
      if (outcome._tag !== "Done") return outcome
      const entries = decodeEntries({ [name]: outcome.result["data"] })
      if (Either.isLeft(entries)) return failed(`the peer's data is invalid: ${describeParseError(entries.left)}`)
      return yield* storeAll(Object.entries(entries.right))
    })

  const setIdentifier = (value: string, source: "local" | "remote") =>
    identifier.set(value, source).pipe(
      Effect.as(done({ identifier: value })),
      Effect.catchTag("IdentifierRefused", (e: IdentifierRefused) =>
        Effect.succeed(Rejected.make({ code: "Refused", reason: e.message }))
      )
    )

  const orFailed = <E extends { readonly message: string }>(self: Effect.Effect<TaskOutcome, E>) =>
    Effect.catchAll(self, (e) => Effect.succeed(failed(e.message)))

  /**
   * Carries out a task. `afterReply` runs an action once the outcome is delivered: a peer asking this node to block,
   * disconnect or revoke that very peer gets its reply before its channel closes or stops being trusted (the trust
   * gate would refuse the reply after).
   */
  const execute = (
    task: NetworkTask,
    source: TaskSource,
    options: SubmitOptions,
    afterReply: (action: Effect.Effect<void>) => Effect.Effect<void>
  ): Effect.Effect<TaskOutcome> => {
    const remote = source._tag === "Remote"
    const type = task.taskType
    const affectsAsker = (peer: string | undefined, address?: string) =>
      remote && (source.channel.remoteId === peer || source.channel.address === address)
    const act = (asker: boolean, action: Effect.Effect<void>) => (asker ? afterReply(action) : action)
    switch (type) {
      case "BlockAndRemovePeer":
        return withArgs(TaskArgs.BlockAndRemovePeer, task, ({ peer }) =>
          peer === keys.id
            ? Effect.succeed(invalid("a node cannot block itself"))
            : Effect.as(act(affectsAsker(peer), registry.blockId(peer)), done({ peer }))
        )
      case "BlockIP":
        return withArgs(TaskArgs.BlockIP, task, ({ address }) =>
          Effect.as(act(affectsAsker(undefined, address), registry.blockAddress(address)), done({ address }))
        )
      case "SendMessage":
        return withArgs(TaskArgs.SendMessage, task, ({ text, to }) =>
          Effect.gen(function* () {
            const message = PureMessage.make({ message: text, origin: keys.id, sentAt: yield* DateTime.now })
            if (to !== undefined) {
              return yield* orFailed(
                Effect.flatMap(registry.channel(to), (c) => Effect.as(c.send(message), done({ sent: "1" })))
              )
            }
            const result = yield* distribution.broadcast(message)
            return done({ sent: String(result.accepted), refused: String(result.refused.length) })
          })
        )
      case "PingPeer":
        return withArgs(TaskArgs.PingPeer, task, ({ peer }) =>
          here(peer)
            ? Effect.succeed(done({ reply: "pong" }))
            : remote
              ? Effect.succeed(notRelayed)
              : ask(peer!, Tasks.ping(), options)
        )
      case "Heartbeat":
        return withArgs(TaskArgs.Heartbeat, task, ({ peer }) =>
          here(peer)
            ? Effect.succeed(done({ status: "alive" }))
            : remote
              ? Effect.succeed(notRelayed)
              : ask(peer!, Tasks.heartbeat(), options)
        )
      case "DisconnectPeer":
        return withArgs(TaskArgs.DisconnectPeer, task, ({ peer, reason }) =>
          orFailed(
            Effect.flatMap(registry.channel(peer), (c) =>
              Effect.as(act(affectsAsker(peer), c.close(reason ?? "disconnected by a network task")), done({ peer }))
            )
          )
        )
      case "AuthorizePeer":
        return withArgs(TaskArgs.AuthorizePeer, task, ({ peer }) =>
          orFailed(Effect.as(registry.elevate(peer), done({ peer })))
        )
      case "RevokePeerAuthorization":
        return withArgs(TaskArgs.RevokePeerAuthorization, task, ({ peer }) =>
          orFailed(
            Effect.zipRight(
              registry.channel(peer),
              Effect.as(act(affectsAsker(peer), Effect.ignore(registry.demote(peer))), done({ peer }))
            )
          )
        )
      case "RequestData":
        return withArgs(TaskArgs.RequestData, task, ({ name, peer }) =>
          here(peer)
            ? Effect.map(
                store.get(name),
                Option.match({
                  onNone: () => failed(`no data named ${JSON.stringify(name)}`),
                  onSome: (data) => done({ name, data: Encoding.encodeBase64(data), sha256: sha256Hex(data) })
                })
              )
            : remote
              ? Effect.succeed(notRelayed)
              : fetchData(peer!, name, options)
        )
      case "SendData":
        return withArgs(TaskArgs.SendData, task, ({ name, data, peer }) =>
          here(peer)
            ? data === undefined
              ? Effect.succeed(invalid("SendData to this node needs data"))
              : storeAll([[name, data]])
            : remote
              ? Effect.succeed(notRelayed)
              : Effect.flatMap(data === undefined ? store.get(name) : Effect.succeed(Option.some(data)), (bytes) =>
                  Option.isNone(bytes)
                    ? Effect.succeed(failed(`no data named ${JSON.stringify(name)}`))
                    : ask(peer!, Tasks.sendData(name, { data: bytes.value }), options)
                )
        )
      case "SynchronizeData":
        return withArgs(TaskArgs.SynchronizeData, task, ({ peer, digest }) =>
          here(peer)
            ? digest === undefined
              ? Effect.succeed(invalid("SynchronizeData served by this node needs the requester's digest"))
              : serveSync(digest)
            : remote
              ? Effect.succeed(notRelayed)
              : pullSync(peer!, options)
        )
      case "SetLocalIdentifier":
        return withArgs(TaskArgs.SetLocalIdentifier, task, ({ identifier }) =>
          setIdentifier(identifier, remote ? "remote" : "local")
        )
      case "AssignIdentifierToPeer":
        return withArgs(TaskArgs.AssignIdentifierToPeer, task, ({ identifier, peer }) =>
          !here(peer)
            ? remote
              ? Effect.succeed(notRelayed)
              : ask(peer!, { taskType: "AssignIdentifierToPeer", taskData: { identifier } }, options)
            : remote
              ? setIdentifier(identifier, "remote")
              : Effect.succeed(
                  invalid("AssignIdentifierToPeer needs another node's id (SetLocalIdentifier sets this one's)")
                )
        )
      case "UpdateSettings":
      case "RequestVerifySignature":
        return Effect.succeed(
          Rejected.make({ code: "Unsupported", reason: `${type} has no defined meaning in this library` })
        )
      case "RequestVerifyHashRecord":
      case "RequestPublicKey":
      case "BootstrapInitialization":
      case "HeartbeatResponse":
        return hook.handle(task, source)
      default: {
        const unreachable: never = type
        return Effect.succeed(Rejected.make({ code: "UnknownTaskType", reason: `unknown task type ${unreachable}` }))
      }
    }
  }

  const runJob = (job: Job) =>
    Effect.gen(function* () {
      const actions = yield* Ref.make<ReadonlyArray<Effect.Effect<void>>>([])
      const outcome = yield* execute(job.task, job.source, job.options, (action) =>
        Ref.update(actions, (list) => [...list, action])
      ).pipe(
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.failCause(cause)
            : Effect.as(Effect.logError("task failed unexpectedly", cause), failed("internal error"))
        )
      )
      yield* countOutcome(outcome)
      const after = yield* Ref.get(actions)
      yield* job.complete(outcome, after.length > 0)
      yield* Effect.all(after, { discard: true })
    }).pipe(
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.logError("task outcome not delivered", cause)
      ),
      Effect.annotateLogs({ task: job.task.id, taskType: job.task.taskType })
    )

  const worker = (queue: Queue.Queue<Job>) => Effect.forever(Effect.flatMap(Queue.take(queue), runJob))
  yield* Effect.forkScoped(
    Effect.all(Array.from({ length: TASK_WORKERS }, () => [worker(localQueue), worker(remoteQueue)]).flat(), {
      concurrency: "unbounded",
      discard: true
    }).pipe(Effect.annotateLogs({ category: Category.Peers }))
  )

  const submit = (request: TaskRequest, options: SubmitOptions = {}): Effect.Effect<TaskOutcome> =>
    Effect.gen(function* () {
      const valid = decodeRequest(request)
      if (Either.isLeft(valid)) {
        yield* count("rejected")
        return invalid(describeParseError(valid.left))
      }
      const task = yield* newTask(valid.right)
      const outcome = yield* Deferred.make<TaskOutcome>()
      const job: Job = { task, source: TaskSource.Local(), options, complete: (o) => Deferred.succeed(outcome, o) }
      return yield* Effect.race(
        Effect.zipRight(Queue.offer(localQueue, job), Deferred.await(outcome)),
        Effect.as(Deferred.await(stopped), failed("the network task handler has stopped"))
      )
    }).pipe(Effect.withSpan("NetworkTaskHandler.submit", { attributes: { taskType: request.taskType } }))

  // ---- tasks and replies from peers ----

  const refuse = (
    channel: PeerChannel,
    error: MalformedTask | UnknownTaskType | TaskForbidden,
    taskId: string | undefined
  ) =>
    Effect.gen(function* () {
      const [counter, code] =
        error._tag === "MalformedTask"
          ? (["malformed", "Malformed"] as const)
          : error._tag === "UnknownTaskType"
            ? (["unknownType", "UnknownTaskType"] as const)
            : (["forbidden", "Forbidden"] as const)
      yield* count("rejected", counter)
      yield* Effect.logWarning(`task from a peer rejected: ${error.message}`)
      // "fail" rather than wait: the packet dispatcher must not stall on one peer's full outbox
      if (taskId !== undefined)
        yield* reply(channel, taskId as TaskId, Rejected.make({ code, reason: error.message }), "fail")
    })

  const admit = (task: NetworkTask, channel: PeerChannel) =>
    Effect.gen(function* () {
      if (!(yield* policy.allows(task, channel))) {
        return yield* refuse(channel, new TaskForbidden({ taskType: task.taskType, peer: channel.remoteId }), task.id)
      }
      const job: Job = {
        task,
        source: TaskSource.Remote({ channel }),
        options: {},
        complete: (outcome, thenActions) => reply(channel, task.id, outcome, thenActions ? "written" : "wait")
      }
      if (!(yield* Effect.sync(() => Queue.unsafeOffer(remoteQueue, job)))) {
        yield* count("rejected", "busy")
        yield* reply(channel, task.id, Rejected.make({ code: "Busy", reason: "the task queue is full" }), "fail")
      }
    })

  const resolve = (taskReply: TaskReply, channel: PeerChannel) =>
    Effect.flatMap(
      Ref.modify(pending, (m) => {
        const entry = HashMap.get(m, taskReply.id as string)
        // only the peer the task was sent to may answer it
        return Option.isSome(entry) && entry.value.peer === channel.remoteId
          ? [entry, HashMap.remove(m, taskReply.id as string)]
          : [Option.none<Pending>(), m]
      }),
      Option.match({
        onNone: () =>
          Effect.zipRight(count("ignoredReplies"), Effect.logDebug(`ignored a reply to task ${taskReply.id}`)),
        onSome: (entry) => Deferred.succeed(entry.reply, taskReply.outcome)
      })
    )

  const incoming = ({ channel, packet }: Received<"DataTransmission">): Effect.Effect<void> =>
    Either.match(decodeTaskPayload(packet.data), {
      onLeft: (error) => refuse(channel, error, error.taskId),
      onRight: (payload) => (payload._tag === "TaskReply" ? resolve(payload, channel) : admit(payload, channel))
    }).pipe(Effect.annotateLogs({ category: Category.Peers, peer: channel.remoteId, address: channel.label }))

  const stats = Effect.gen(function* () {
    const c = yield* Ref.get(counters)
    const size = (q: Queue.Queue<Job>) =>
      // size counts waiting workers as negative
      Effect.flatMap(Queue.isShutdown(q), (down) =>
        down ? Effect.succeed(0) : Effect.map(Queue.size(q), (n) => Math.max(0, n))
      )
    return {
      ...c,
      pending: HashMap.size(yield* Ref.get(pending)),
      queued: (yield* size(localQueue)) + (yield* size(remoteQueue))
    } satisfies TaskStats
  })

  return NetworkTaskHandler.of({ incoming, submit, submitTo, stats })
})
