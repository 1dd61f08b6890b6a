import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Fiber, Layer, Option, Scope, Stream } from "effect"
import { TrustHandshake, Verdict } from "../src/layers/TrustHandshake.js"
import { IncomingPeerTrustPolicy } from "../src/schema/settings.js"
import * as net from "node:net"
import { nextTurn } from "./support/test-clock.js"
import { message, startNode, waitFor } from "./support/nodes.js"

/** Open TCP handles of this process (sockets and servers). */
const tcpHandles = () => process.getActiveResourcesInfo().filter((r) => r.startsWith("TCP")).length
const tcpSockets = () => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length

/** Lets the event loop run until `f` holds, at most `turns` times (closing a socket completes on a later turn). */
const settle = (f: () => boolean, turns = 200) =>
  Effect.gen(function* () {
    for (let i = 0; i < turns && !f(); i++) yield* nextTurn
    return f()
  })

const bindOnce = (port: number) =>
  Effect.async<void, Error>((resume) => {
    const server = net.createServer()
    server.once("error", (e) => resume(Effect.fail(e)))
    server.listen(port, "127.0.0.1", () => server.close(() => resume(Effect.void)))
  })

describe("channel lifecycle", () => {
  it.scoped("closing the network's scope closes every socket and fiber; the port can be bound again at once", () =>
    Effect.gen(function* () {
      assert.isTrue(yield* settle(() => tcpSockets() === 0))
      const before = tcpHandles()
      const remote = yield* startNode()
      const remoteEvents = yield* remote.registry.subscribeEvents
      const scope = yield* Scope.make()
      const node = yield* startNode().pipe(Scope.extend(scope))
      const out = yield* node.dial("127.0.0.1", remote.port)
      yield* out.awaitTrusted
      yield* out.send(message(node.id, "x"))
      assert.isAbove(tcpHandles(), before)
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual((yield* out.awaitClosed)._tag, "LocalClose")
      // the remote sees its side close
      yield* waitFor(remoteEvents, (e) =>
        e._tag === "ChannelStateChanged" && e.state === "closed" && e.channel.remoteId === node.id
          ? Option.some(e)
          : Option.none()
      )
      yield* bindOnce(node.port)
      assert.isTrue(yield* settle(() => tcpHandles() === before + 1), "only the remote's listener is left")
    })
  )

  it.scoped("two nodes dialling each other at once keep exactly one channel, the same one on both sides", () =>
    Effect.gen(function* () {
      for (let round = 0; round < 5; round++) {
        const scope = yield* Scope.make()
        const [a, b] = yield* Effect.all([startNode(), startNode()]).pipe(Scope.extend(scope))
        // sockets of earlier tests and rounds finish closing on later event-loop turns
        assert.isTrue(yield* settle(() => tcpSockets() === 0))
        const [ab, ba] = yield* Effect.all([a.dial("127.0.0.1", b.port), b.dial("127.0.0.1", a.port)], {
          concurrency: 2
        })
        const winnerInitiator = a.id < b.id ? a.id : b.id
        // both dials return the surviving channel, the same connection seen from each side
        const onA = yield* a.channel(b.id)
        const onB = yield* b.channel(a.id)
        assert.strictEqual(ab, onA)
        assert.strictEqual(ba, onB)
        yield* Effect.all([onA.awaitTrusted, onB.awaitTrusted])
        assert.strictEqual(onA.initiatorId, winnerInitiator)
        assert.strictEqual(onB.initiatorId, winnerInitiator)
        assert.strictEqual((yield* a.channels).length, 1)
        assert.strictEqual((yield* b.channels).length, 1)
        // two sockets for the one surviving connection: the loser's were closed
        assert.isTrue(yield* settle(() => tcpSockets() === 2), `round ${round}: ${tcpSockets()} sockets`)
        yield* Scope.close(scope, Exit.void)
      }
    })
  )

  it.scoped("dialling a connected peer again returns the existing channel", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const b = yield* startNode()
      const first = yield* a.dial("127.0.0.1", b.port)
      const [second, third] = yield* Effect.all([a.dial("127.0.0.1", b.port), a.dial("127.0.0.1", b.port)], {
        concurrency: 2
      })
      assert.strictEqual(second, first)
      assert.strictEqual(third, first)
    })
  )

  it.scoped("dialling a port where nothing listens fails with DialFailed naming the address", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const scope = yield* Scope.make()
      const gone = yield* startNode().pipe(Scope.extend(scope))
      yield* Scope.close(scope, Exit.void)
      const error = yield* Effect.flip(a.dial("127.0.0.1", gone.port))
      assert.strictEqual(error._tag, "DialFailed")
      assert.include(error.message, `127.0.0.1:${gone.port}`)
    })
  )

  it.scoped("a node refuses to connect to itself", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const result = yield* Effect.either(a.dial("127.0.0.1", a.port))
      assert.isTrue(Either.isLeft(result) && result.left.message.includes("itself"))
      assert.strictEqual((yield* a.channels).length, 0)
    })
  )

  it.scoped("blocked addresses and identifiers are refused at accept and at dial, and their channels closed", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const b = yield* startNode()
      const c = yield* startNode()
      const ab = yield* a.dial("127.0.0.1", b.port)
      yield* ab.awaitTrusted
      yield* b.registry.blockId(a.id)
      yield* ab.awaitClosed
      assert.isTrue(Either.isLeft(yield* Effect.either(a.dial("127.0.0.1", b.port))), "b refuses a by identifier")
      assert.isTrue(Option.isNone(Option.fromNullable((yield* b.registry.known).find((p) => p.id === a.id))))
      // c is still welcome at b
      yield* Effect.flatMap(c.dial("127.0.0.1", b.port), (ch) => ch.awaitTrusted)
      yield* b.registry.unblockId(a.id)
      yield* Effect.flatMap(a.dial("127.0.0.1", b.port), (ch) => ch.awaitTrusted)
      // by address: every peer on 127.0.0.1 is refused and closed
      yield* c.registry.blockAddress("127.0.0.1")
      const refused = yield* Effect.either(c.dial("127.0.0.1", a.port))
      assert.isTrue(Either.isLeft(refused) && refused.left._tag === "PeerBlocked")
      assert.isTrue(Either.isLeft(yield* Effect.either(a.dial("127.0.0.1", c.port))), "c refuses inbound")
      assert.strictEqual((yield* c.channels).length, 0)
    })
  )

  it.scoped("a peer blocked while its handshake runs is refused when the handshake ends", () =>
    Effect.gen(function* () {
      const release = yield* Deferred.make<void>()
      const started = yield* Deferred.make<void>()
      const Slow = Layer.succeed(
        TrustHandshake,
        TrustHandshake.of({
          run: () =>
            Deferred.succeed(started, undefined).pipe(
              Effect.zipRight(Deferred.await(release)),
              Effect.as(Verdict.Trusted())
            )
        })
      )
      const b = yield* startNode({}, { handshake: Slow })
      const a = yield* startNode({}, { handshake: Slow })
      const dial = yield* Effect.fork(a.dial("127.0.0.1", b.port))
      yield* Deferred.await(started)
      yield* b.registry.blockId(a.id)
      yield* Deferred.succeed(release, undefined)
      // b decides after its own handshake: a's dial fails with b's Reject, or, when a's side finished first, the
      // channel it returned is closed by that Reject
      const result = yield* Effect.either(Fiber.join(dial))
      const why = Either.isLeft(result) ? result.left.message : (yield* result.right.awaitClosed).message
      assert.include(why, "blocked")
      assert.strictEqual((yield* b.channels).length, 0)
    })
  )

  it.scoped("queue-based placement holds inbound peers until the application accepts or rejects them", () =>
    Effect.gen(function* () {
      const gate = yield* startNode({
        trust: IncomingPeerTrustPolicy.make({ incomingPeerPlacement: "QueueAndEventBased", incomingQueueCapacity: 1 })
      })
      const events = yield* gate.registry.subscribeEvents
      const [a, b, c] = yield* Effect.all([startNode(), startNode(), startNode()])
      // a dial completes only once the application has decided
      const fromA = yield* Effect.fork(a.dial("127.0.0.1", gate.port))
      const pending = yield* gate.incoming
      assert.strictEqual(pending.id, a.id)
      const fromB = yield* Effect.fork(b.dial("127.0.0.1", gate.port))
      yield* waitFor(events, (e) => (e._tag === "IncomingPeer" && e.id === b.id ? Option.some(e) : Option.none()))
      // b holds the only queue slot, so c is refused at once
      const refused = yield* Effect.either(c.dial("127.0.0.1", gate.port))
      assert.isTrue(Either.isLeft(refused) && refused.left.message.includes("inbound queue full"))
      yield* pending.accept
      const channel = yield* Fiber.join(fromA)
      yield* channel.awaitTrusted
      const held = yield* gate.incoming
      assert.strictEqual(held.id, b.id)
      yield* held.reject("not today")
      const rejected = yield* Effect.either(Fiber.join(fromB))
      assert.isTrue(Either.isLeft(rejected) && rejected.left._tag === "RemoteRejected")
      assert.include(Either.isLeft(rejected) ? rejected.left.message : "", "not today")
      assert.deepStrictEqual(
        (yield* gate.channels).map((ch) => ch.remoteId),
        [a.id]
      )
    })
  )

  it.scopedLive("packets queued on a channel that gives up are failed back to their senders", () =>
    Effect.gen(function* () {
      const a = yield* startNode({ reconnectRetries: 2, reconnectDelayMillis: 20 })
      const scope = yield* Scope.make()
      const b = yield* startNode().pipe(Scope.extend(scope))
      const channel = yield* a.dial("127.0.0.1", b.port)
      yield* channel.awaitTrusted
      yield* Scope.close(scope, Exit.void)
      yield* channel.stateChanges.pipe(
        Stream.filter((s) => s === "reconnecting"),
        Stream.runHead
      )
      // trusted before the drop, but not now: awaitTrusted waits for the next trust (or the close)
      const trustedAgain = yield* Effect.either(channel.awaitTrusted).pipe(Effect.fork)
      const result = yield* Effect.either(channel.sendAndAwait(message(a.id, "never")))
      assert.isTrue(Either.isLeft(result) && result.left._tag === "ChannelClosed")
      assert.strictEqual((yield* channel.awaitClosed)._tag, "ConnectionLost")
      const waited = yield* Fiber.join(trustedAgain)
      assert.isTrue(Either.isLeft(waited) && waited.left._tag === "ChannelClosed")
    })
  )
})
