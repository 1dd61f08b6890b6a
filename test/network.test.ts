import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Fiber, Option, Scope, Stream } from "effect"
import * as net from "node:net"
import { message, packetsFrom, startNode, waitFor } from "./support/nodes.js"

describe("PeerNetwork", () => {
  it.scoped("three nodes connect, become trusted, and exchange every packet kind", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const b = yield* startNode()
      const c = yield* startNode()
      const bPackets = yield* b.registry.subscribePackets
      const cPackets = yield* c.registry.subscribePackets
      const ab = yield* a.dial("127.0.0.1", b.port)
      const ac = yield* a.dial("127.0.0.1", c.port)
      const bc = yield* b.dial("127.0.0.1", c.port)
      yield* Effect.all([ab.awaitTrusted, ac.awaitTrusted, bc.awaitTrusted])
      assert.strictEqual(ab.remoteId, b.id)
      assert.strictEqual(ac.remoteId, c.id)
      assert.strictEqual(bc.remoteId, c.id)
      // the remote side sees the same channel, trusted
      const ba = yield* b.awaitChannel(a.id)
      yield* ba.awaitTrusted
      const sent = packetsFrom(a.id)
      for (const p of sent) yield* ab.send(p)
      const got = yield* bPackets.pipe(Stream.take(sent.length), Stream.runCollect)
      assert.deepStrictEqual(
        [...got].map((r) => r.packet),
        [...sent]
      )
      for (const r of got) assert.strictEqual(r.channel.remoteId, a.id)
      // the Disconnect closed a-b; b-c still works
      yield* bc.send(message(b.id, "still here"))
      const fromB = yield* cPackets.pipe(
        Stream.filter((r) => r.channel.remoteId === b.id),
        Stream.runHead
      )
      assert.strictEqual(Option.getOrThrow(fromB).packet._tag, "PureMessage")
      const reason = yield* ab.awaitClosed
      assert.strictEqual(reason._tag, "LocalClose")
    })
  )

  it.scoped("publishes peer added and channel state events", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const b = yield* startNode()
      const events = yield* a.registry.subscribeEvents
      yield* a.dial("127.0.0.1", b.port)
      const added = yield* waitFor(events, (e) => (e._tag === "PeerAdded" ? Option.some(e.peer) : Option.none()))
      assert.strictEqual(added.id, b.id)
      assert.strictEqual(added.port, b.port)
    })
  )
  it.scoped("many packets queued together go out in a few socket writes, not one write each", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const b = yield* startNode()
      const packets = yield* b.registry.subscribePackets
      const channel = yield* a.dial("127.0.0.1", b.port)
      yield* channel.awaitTrusted
      const before = yield* channel.stats
      const batch = Array.from({ length: 2000 }, (_, i) => message(a.id, `m${i}`))
      yield* channel.sendAll(batch)
      const got = yield* packets.pipe(Stream.take(2000), Stream.runCollect)
      assert.strictEqual(got.length, 2000)
      const after = yield* channel.stats
      assert.strictEqual(after.framesOut - before.framesOut, 2000)
      // the writer takes up to 1024 queued packets per write
      assert.isAtMost(after.writesOut - before.writesOut, 4)
    })
  )

  it.scoped("a dial interrupted before the peer answers ends its attempt: its socket closes, no channel remains", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const silent = yield* silentPeer
      const dialing = yield* Effect.fork(a.dial("127.0.0.1", silent.port))
      yield* Deferred.await(silent.accepted)
      yield* Fiber.interrupt(dialing)
      // the node's handshake deadline runs on the TestClock here, so only the interruption can close the socket
      yield* Deferred.await(silent.closed)
      assert.lengthOf(yield* a.channels, 0)
    })
  )

  it.scoped("a dial still waiting when its network closes fails with LocalClose instead of waiting for ever", () =>
    Effect.gen(function* () {
      const network = yield* Scope.make()
      const a = yield* startNode().pipe(Scope.extend(network))
      const silent = yield* silentPeer
      const dialing = yield* Effect.fork(Effect.either(a.dial("127.0.0.1", silent.port)))
      yield* Deferred.await(silent.accepted)
      yield* Scope.close(network, Exit.void)
      const result = yield* Fiber.join(dialing)
      assert.isTrue(Either.isLeft(result) && result.left._tag === "LocalClose", String(result))
      yield* Deferred.await(silent.closed)
    })
  )
})

/** A peer that accepts one connection and never answers its handshake; tells when it accepted and when it closed. */
const silentPeer = Effect.gen(function* () {
  const accepted = yield* Deferred.make<void>()
  const closed = yield* Deferred.make<void>()
  const server = yield* Effect.acquireRelease(
    Effect.async<net.Server>((resume) => {
      const server = net.createServer((socket) => {
        socket.on("error", () => {})
        socket.on("close", () => Deferred.unsafeDone(closed, Effect.void))
        Deferred.unsafeDone(accepted, Effect.void)
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.sync(() => server.close())
  )
  return { port: (server.address() as net.AddressInfo).port, accepted, closed }
})
