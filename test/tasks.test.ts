/**
 * Network tasks between real nodes on 127.0.0.1: each task type does its job, peers may ask only for what the
 * RemoteTaskPolicy allows, bad task payloads are rejected and counted without harming the node (B4, B5), and replies
 * are correlated by id, taken only from the asked peer, and given up on after a timeout.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Exit, Fiber, Layer, Option, Queue, Scope, Stream, TestClock } from "effect"
import {
  BootstrapTaskHook,
  defaultRemoteTaskTypes,
  LocalIdentifier,
  RemoteTaskPolicy
} from "../src/layers/TaskPolicy.js"
import type { NodeId } from "../src/schema/ids.js"
import type { TaskType } from "../src/schema/packets.js"
import { DataTransmission } from "../src/schema/packets.js"
import type { TaskOutcome, TaskPayload } from "../src/schema/tasks.js"
import { decodeTaskPayload, Done, encodeTaskPayload, TaskReply, Tasks } from "../src/schema/tasks.js"
import { bounded, connect, startTaskNode } from "./support/task-nodes.js"
import type { TaskNode } from "./support/task-nodes.js"
import { message, now, waitState } from "./support/nodes.js"

const startNode = startTaskNode
type Node = TaskNode

/** The PureMessages a node receives, subscribed now. */
const messagesOf = (node: Node): Effect.Effect<Queue.Dequeue<string>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const packets = yield* node.network.registry.subscribePackets
    const queue = yield* Queue.unbounded<string>()
    yield* Effect.forkScoped(
      Stream.runForEach(packets, ({ packet }) =>
        packet._tag === "PureMessage" ? Queue.offer(queue, packet.message) : Effect.void
      )
    )
    return queue
  })

/** The Task payloads a node receives (replies included), subscribed now. */
const taskPayloadsOf = (node: Node) =>
  Effect.gen(function* () {
    const packets = yield* node.network.registry.subscribePackets
    const queue = yield* Queue.unbounded<TaskPayload>()
    yield* Effect.forkScoped(
      Stream.runForEach(packets, ({ packet }) =>
        packet._tag === "DataTransmission" && packet.format === "Task"
          ? Either.match(decodeTaskPayload(packet.data), {
              onLeft: () => Effect.void,
              onRight: (p) => Queue.offer(queue, p)
            })
          : Effect.void
      )
    )
    return queue
  })

const taskPacket = (origin: NodeId, data: Uint8Array) =>
  DataTransmission.make({ format: "Task", data, origin, sentAt: now })
const jsonBytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value))

const done = (result: Record<string, string>) => Done.make({ result })
const assertDone: (outcome: TaskOutcome) => asserts outcome is Done = (outcome) =>
  assert.strictEqual(outcome._tag, "Done", JSON.stringify(outcome))
const assertRejected = (outcome: TaskOutcome, code: string) => {
  assert.strictEqual(outcome._tag, "Rejected", JSON.stringify(outcome))
  if (outcome._tag === "Rejected") assert.strictEqual(outcome.code, code, outcome.reason)
}
const allowing = (...extra: ReadonlyArray<TaskType>) => ({
  taskPolicy: RemoteTaskPolicy.layerAllowing([...defaultRemoteTaskTypes, ...extra])
})

describe("NetworkTaskHandler: each task type", () => {
  it.scopedLive("PingPeer: this node pings a peer and gets Done with the round trip measured", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Effect.all([startNode(), startNode()])
      yield* connect(a, b)
      const viaTask = yield* bounded(a.tasks.submit(Tasks.ping(b.id)))
      assertDone(viaTask)
      assert.strictEqual(viaTask.result["reply"], "pong")
      assert.isAbove(viaTask.rttMillis ?? 0, 0)
      const direct = yield* bounded(a.tasks.submitTo(b.id, Tasks.ping()))
      assertDone(direct)
      assert.isAbove(direct.rttMillis ?? 0, 0)
      assert.strictEqual((yield* b.tasks.stats).done, 2, "b answered both pings")
      assert.strictEqual((yield* a.tasks.stats).pending, 0)
    })
  )

  it.scopedLive("Heartbeat: a peer answers alive", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Effect.all([startNode(), startNode()])
      yield* connect(a, b)
      const outcome = yield* bounded(a.tasks.submitTo(b.id, Tasks.heartbeat()))
      assertDone(outcome)
      assert.deepStrictEqual(outcome.result, { status: "alive" })
      assertDone(yield* bounded(a.tasks.submit(Tasks.heartbeat(b.id))))
    })
  )

  it.scopedLive("SendMessage sends a PureMessage to one peer or to every trusted peer, also when a peer asks", () =>
    Effect.gen(function* () {
      const [a, b, c] = yield* Effect.all([startNode(), startNode(), startNode()])
      const [atB, atC] = yield* Effect.all([messagesOf(b), messagesOf(c)])
      yield* connect(a, b)
      yield* connect(c, a)
      assert.deepStrictEqual(
        (yield* a.tasks.submit(Tasks.sendMessage("to b", b.id))) as TaskOutcome,
        done({ sent: "1" })
      )
      assert.deepStrictEqual(
        (yield* a.tasks.submit(Tasks.sendMessage("to all"))) as TaskOutcome,
        done({ sent: "2", refused: "0" })
      )
      assert.strictEqual(yield* bounded(Queue.take(atB)), "to b")
      assert.strictEqual(yield* bounded(Queue.take(atB)), "to all")
      assert.strictEqual(yield* bounded(Queue.take(atC)), "to all")
      // c asks a to pass a message on to b
      assertDone(yield* bounded(c.tasks.submitTo(a.id, Tasks.sendMessage("from c, via a", b.id))))
      assert.strictEqual(yield* bounded(Queue.take(atB)), "from c, via a")
    })
  )

  it.scopedLive("BlockAndRemovePeer blocks the identifier, closes the channel and forgets the peer", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Effect.all([startNode(), startNode()])
      const channel = yield* connect(a, b)
      assertDone(yield* a.tasks.submit(Tasks.blockAndRemovePeer(b.id)))
      yield* bounded(channel.awaitClosed)
      assert.isTrue(yield* a.network.registry.isBlockedId(b.id))
      assert.isFalse((yield* a.network.registry.known).some((p) => p.id === b.id))
      assert.isTrue(Either.isLeft(yield* bounded(Effect.either(a.network.dial("127.0.0.1", b.network.port)))))
    })
  )

  it.scopedLive("BlockIP blocks the address and closes its channels", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Effect.all([startNode(), startNode()])
      const channel = yield* connect(a, b)
      assertDone(yield* a.tasks.submit(Tasks.blockIP("127.0.0.1")))
      yield* bounded(channel.awaitClosed)
      assert.isTrue(yield* a.network.registry.isBlockedAddress("127.0.0.1"))
    })
  )

  it.scopedLive("DisconnectPeer closes the channel; the peer learns the reason", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Effect.all([startNode(), startNode()])
      yield* connect(a, b)
      const atB = yield* b.network.channel(a.id)
      assertDone(yield* a.tasks.submit(Tasks.disconnectPeer(b.id, "the task says bye")))
      const reason = yield* bounded(atB.awaitClosed)
      assert.include(reason.message, "the task says bye")
      assert.strictEqual((yield* a.tasks.submit(Tasks.disconnectPeer(b.id)))._tag, "Failed", "no channel any more")
    })
  )

  it.scopedLive("AuthorizePeer and RevokePeerAuthorization change the channel's trust", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Effect.all([startNode(), startNode()])
      const channel = yield* connect(a, b)
      assertDone(yield* a.tasks.submit(Tasks.revokePeerAuthorization(b.id)))
      assert.strictEqual(yield* channel.state, "untrusted")
      assertDone(yield* a.tasks.submit(Tasks.authorizePeer(b.id)))
      assert.strictEqual(yield* channel.state, "trusted")
    })
  )

  it.scopedLive("RequestData, SendData and SynchronizeData move named entries between the peers' stores", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Effect.all([startNode(), startNode()])
      yield* connect(a, b)
      const bytes = (...xs: Array<number>) => new Uint8Array(xs)
      const stored = (node: Node, name: string) =>
        Effect.map(
          node.store.get(name),
          Option.map((d) => [...d])
        )
      yield* a.store.put("report", bytes(1, 2, 3))

      assertDone(yield* bounded(b.tasks.submit(Tasks.requestData("report", a.id))))
      assert.deepStrictEqual(yield* stored(b, "report"), Option.some([1, 2, 3]))
      assert.strictEqual((yield* bounded(b.tasks.submit(Tasks.requestData("missing", a.id))))._tag, "Failed")

      assertDone(yield* bounded(a.tasks.submit(Tasks.sendData("notes", { data: bytes(9), to: b.id }))))
      assert.deepStrictEqual(yield* stored(b, "notes"), Option.some([9]))
      assert.deepStrictEqual(yield* stored(a, "notes"), Option.none(), "sent, not kept")

      // a changes one entry and adds another; b has one of its own: a sync from b pulls exactly what differs
      yield* a.store.put("report", bytes(4, 5))
      yield* a.store.put("extra", bytes(6))
      yield* b.store.put("only-b", bytes(7))
      const sync = yield* bounded(b.tasks.submit(Tasks.synchronizeData(a.id)))
      assertDone(sync)
      assert.deepStrictEqual(Object.keys(sync.result).sort(), ["extra", "report"])
      const atB = yield* Effect.forEach(["report", "extra", "notes", "only-b"], (name) => stored(b, name))
      assert.deepStrictEqual(atB, [[4, 5], [6], [9], [7]].map(Option.some))
      assert.deepStrictEqual(yield* a.store.list, ["extra", "report"], "the peer's own entries are left alone")
    })
  )

  it.scopedLive("SetLocalIdentifier sets this node's alias; AssignIdentifierToPeer obeys the peer's policies", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const b = yield* startNode(allowing("AssignIdentifierToPeer"))
      const c = yield* startNode()
      const d = yield* startNode({
        ...allowing("AssignIdentifierToPeer"),
        localIdentifier: LocalIdentifier.layerAllowing(["local"])
      })
      yield* Effect.forEach([b, c, d], (peer) => connect(a, peer), { discard: true })
      assertDone(yield* a.tasks.submit(Tasks.setLocalIdentifier("alice")))
      assert.deepStrictEqual(yield* a.identifier.get, Option.some("alice"))
      assertRejected(yield* a.tasks.submit(Tasks.setLocalIdentifier("")), "InvalidTaskData")

      assertDone(yield* bounded(a.tasks.submit(Tasks.assignIdentifierToPeer(b.id, "bob"))))
      assert.deepStrictEqual(yield* b.identifier.get, Option.some("bob"))
      assertRejected(yield* bounded(a.tasks.submit(Tasks.assignIdentifierToPeer(c.id, "carol"))), "Forbidden")
      assertRejected(yield* bounded(a.tasks.submit(Tasks.assignIdentifierToPeer(d.id, "dave"))), "Refused")
      assert.isTrue(Option.isNone(yield* c.identifier.get))
      assert.isTrue(Option.isNone(yield* d.identifier.get))
    })
  )

  it.scopedLive("types without a meaning are Unsupported; bootstrap-only types go to the BootstrapTaskHook", () =>
    Effect.gen(function* () {
      const plain = yield* startNode()
      for (const type of ["UpdateSettings", "RequestVerifySignature"] as const) {
        assertRejected(yield* plain.tasks.submit(Tasks.make(type)), "Unsupported")
      }
      const noAuthority = yield* plain.tasks.submit(Tasks.make("RequestPublicKey"))
      assertRejected(noAuthority, "Unsupported")
      assert.include(noAuthority._tag === "Rejected" ? noAuthority.reason : "", "no bootstrap authority configured")

      const seen = yield* Queue.unbounded<string>()
      const hook = Layer.succeed(
        BootstrapTaskHook,
        BootstrapTaskHook.of({
          handle: (task, source) =>
            Effect.as(Queue.offer(seen, `${task.taskType} ${source._tag} ${task.taskData["k"]}`), done({ ok: "yes" }))
        })
      )
      const withHook = yield* startNode({ bootstrapTasks: hook })
      for (const type of [
        "RequestVerifyHashRecord",
        "RequestPublicKey",
        "BootstrapInitialization",
        "HeartbeatResponse"
      ] as const) {
        assert.deepStrictEqual(
          (yield* withHook.tasks.submit(Tasks.make(type, { k: "v" }))) as TaskOutcome,
          done({ ok: "yes" })
        )
        assert.strictEqual(yield* Queue.take(seen), `${type} Local v`)
      }
    })
  )
})

describe("NetworkTaskHandler: what peers may ask", () => {
  it.scopedLive("a task type a peer may not ask for is rejected, counted and answered; the channel keeps working", () =>
    Effect.gen(function* () {
      const [a, b] = yield* Effect.all([startNode(), startNode()])
      const atB = yield* messagesOf(b)
      const channel = yield* connect(a, b)
      assertRejected(yield* bounded(a.tasks.submitTo(b.id, Tasks.blockIP("127.0.0.1"))), "Forbidden")
      assertRejected(yield* bounded(a.tasks.submitTo(b.id, Tasks.revokePeerAuthorization(a.id))), "Forbidden")
      assertRejected(yield* bounded(a.tasks.submitTo(b.id, Tasks.setLocalIdentifier("mallory"))), "Forbidden")
      // allowed types are served by b itself: b does not contact another node for a
      assertRejected(yield* bounded(a.tasks.submitTo(b.id, Tasks.ping(a.id))), "NotRelayed")
      const stats = yield* b.tasks.stats
      assert.strictEqual(stats.forbidden, 3)
      assert.strictEqual(stats.rejected, 4)
      assert.isFalse(yield* b.network.registry.isBlockedAddress("127.0.0.1"))
      assert.isTrue(Option.isNone(yield* b.identifier.get))
      yield* channel.send(message(a.id, "still here"))
      assert.strictEqual(yield* bounded(Queue.take(atB)), "still here")
      assert.strictEqual(yield* (yield* b.network.channel(a.id)).state, "trusted")
    })
  )

  it.scopedLive(
    "unknown task types and malformed payloads are rejected and counted, answered when the id is readable",
    () =>
      Effect.gen(function* () {
        const [a, b] = yield* Effect.all([startNode(), startNode()])
        const atB = yield* messagesOf(b)
        const replies = yield* taskPayloadsOf(a)
        const channel = yield* connect(a, b)
        const task = (id: string, taskType: unknown, taskData: unknown) => ({
          _tag: "NetworkTask",
          id,
          taskType,
          taskData,
          origin: a.id,
          sentAt: 1_700_000_000_000
        })
        yield* channel.sendAll([
          taskPacket(a.id, jsonBytes(task("t-unknown", "Nonsense", {}))),
          taskPacket(a.id, new Uint8Array([0xff, 0xfe, 0x00, 0x80])),
          taskPacket(a.id, new TextEncoder().encode('{"_tag":"NetworkTask","id":')),
          taskPacket(a.id, jsonBytes({ _tag: "TaskReply", id: 7 })),
          taskPacket(a.id, jsonBytes(task("t-wrong", "PingPeer", { peer: 42 }))),
          // well formed, but its taskData does not fit the type: rejected by the worker
          taskPacket(a.id, jsonBytes(task("t-data", "PingPeer", { peer: "not a node id" })))
        ])
        const answered = new Map<string, TaskOutcome>()
        for (let i = 0; i < 3; i++) {
          const reply = yield* bounded(Queue.take(replies))
          if (reply._tag === "TaskReply") answered.set(reply.id, reply.outcome)
        }
        assertRejected(answered.get("t-unknown")!, "UnknownTaskType")
        assertRejected(answered.get("t-wrong")!, "Malformed")
        assertRejected(answered.get("t-data")!, "InvalidTaskData")
        const stats = yield* b.tasks.stats
        assert.deepStrictEqual(
          {
            rejected: stats.rejected,
            malformed: stats.malformed,
            unknownType: stats.unknownType,
            forbidden: stats.forbidden
          },
          { rejected: 6, malformed: 4, unknownType: 1, forbidden: 0 }
        )
        assert.strictEqual((yield* a.tasks.stats).ignoredReplies, 3, "nobody on a waited for these ids")
        yield* channel.send(message(a.id, "still here"))
        assert.strictEqual(yield* bounded(Queue.take(atB)), "still here")
        assertDone(yield* bounded(a.tasks.submitTo(b.id, Tasks.heartbeat())))
      })
  )

  it.scopedLive("a RemoteTaskPolicy given as a Layer changes what peers may ask for", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const b = yield* startNode({
        taskPolicy: RemoteTaskPolicy.layerAllowing(["Heartbeat", "RevokePeerAuthorization"])
      })
      yield* connect(a, b)
      assertRejected(yield* bounded(a.tasks.submitTo(b.id, Tasks.ping())), "Forbidden")
      assertDone(yield* bounded(a.tasks.submitTo(b.id, Tasks.heartbeat())))
      // a may even have b stop trusting a itself: the reply is written first, then b demotes the channel
      assertDone(yield* bounded(a.tasks.submitTo(b.id, Tasks.revokePeerAuthorization(a.id))))
      yield* bounded(waitState(yield* b.network.channel(a.id), "untrusted"))
    })
  )
})

describe("NetworkTaskHandler: replies", () => {
  it.scoped("closing the network's scope stops the workers; a later submit is Failed, not stuck", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const a = yield* Scope.extend(startNode(), scope)
      assertDone(yield* a.tasks.submit(Tasks.heartbeat()))
      yield* Scope.close(scope, Exit.void)
      const after = yield* a.tasks.submit(Tasks.heartbeat())
      assert.strictEqual(after._tag, "Failed")
      assert.include(after._tag === "Failed" ? after.reason : "", "stopped")
    })
  )

  it.scoped("a reply that never comes ends in TaskTimeout and leaves no pending entry", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const b = yield* startNode({ handlers: { DataTransmission: () => Effect.void } })
      yield* connect(a, b)
      const fiber = yield* Effect.fork(a.tasks.submitTo(b.id, Tasks.heartbeat(), { timeout: "5 seconds" }))
      for (let i = 0; i < 1000 && (yield* a.tasks.stats).pending < 1; i++) yield* Effect.yieldNow()
      assert.strictEqual((yield* a.tasks.stats).pending, 1)
      yield* TestClock.adjust("5 seconds")
      const error = yield* Effect.flip(Fiber.join(fiber))
      assert.strictEqual(error._tag, "TaskTimeout")
      assert.include(error.message, "within 5000 ms")
      const stats = yield* a.tasks.stats
      assert.strictEqual(stats.pending, 0)
      assert.strictEqual(stats.timedOut, 1)
    })
  )

  it.scopedLive("a reply is taken only from the peer the task was sent to", () =>
    Effect.gen(function* () {
      // b hands received tasks to the test instead of carrying them out
      const captured = yield* Queue.unbounded<Uint8Array>()
      const a = yield* startNode()
      const b = yield* startNode({
        handlers: { DataTransmission: ({ packet }) => Queue.offer(captured, packet.data) }
      })
      const c = yield* startNode()
      yield* connect(a, b)
      yield* connect(c, a)
      const fiber = yield* Effect.fork(a.tasks.submitTo(b.id, Tasks.heartbeat()))
      const sent = decodeTaskPayload(yield* bounded(Queue.take(captured)))
      assert.isTrue(Either.isRight(sent) && sent.right._tag === "NetworkTask")
      const id = Either.getOrThrow(sent).id
      const replyFrom = (node: Node, outcome: TaskOutcome) =>
        Effect.flatMap(
          Effect.orDie(encodeTaskPayload(TaskReply.make({ id, outcome, origin: node.id, sentAt: now }))),
          (data) => node.network.send(a.id, taskPacket(node.id, data))
        )
      yield* replyFrom(c, done({ status: "forged" }))
      // a handles c's packets in order: once c's own task is answered, the forged reply has been seen
      assertDone(yield* bounded(c.tasks.submitTo(a.id, Tasks.heartbeat())))
      assert.strictEqual((yield* a.tasks.stats).ignoredReplies, 1)
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* replyFrom(b, done({ status: "from b" }))
      const outcome = yield* bounded(Fiber.join(fiber))
      assertDone(outcome)
      assert.strictEqual(outcome.result["status"], "from b")
      assert.strictEqual((yield* a.tasks.stats).pending, 0)
    })
  )
})
