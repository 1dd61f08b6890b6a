import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Queue, Stream } from "effect"
import { networkLayerWith } from "../src/layers/Network.js"
import type { NetworkOverrides } from "../src/layers/Network.js"
import { PacketDispatcher, PacketHandlers } from "../src/layers/PacketHandlers.js"
import { PeerRegistry } from "../src/layers/PeerRegistry.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { IpAddress, PeerAddress, Port } from "../src/schema/ids.js"
import type { NodeId } from "../src/schema/ids.js"
import { Identity, PeerGroup } from "../src/schema/packets.js"
import { fastSettings, message, now, startNode } from "./support/nodes.js"

const startWith = (overrides: NetworkOverrides = {}) =>
  Layer.build(networkLayerWith(fastSettings, overrides)).pipe(
    Effect.map((ctx) => ({ network: Context.get(ctx, PeerNetwork), dispatcher: Context.get(ctx, PacketDispatcher) })),
    Effect.orDie
  )

describe("packet handlers", () => {
  it.scoped(
    "a PureMessage handler given as a Layer replaces the default; one that fails leaves the channel working",
    () =>
      Effect.gen(function* () {
        const seen = yield* Queue.unbounded<string>()
        const { dispatcher, network: b } = yield* startWith({
          handlers: {
            PureMessage: ({ packet }) =>
              packet.message === "boom" ? Effect.fail("this handler refuses boom") : Queue.offer(seen, packet.message)
          }
        })
        const a = yield* startNode()
        const channel = yield* a.dial("127.0.0.1", b.port)
        yield* channel.awaitTrusted
        yield* channel.send(message(a.id, "first"))
        yield* channel.send(message(a.id, "boom"))
        yield* channel.send(message(a.id, "after"))
        assert.strictEqual(yield* Queue.take(seen), "first")
        assert.strictEqual(yield* Queue.take(seen), "after")
        assert.strictEqual(yield* dispatcher.failures, 1)
        assert.isFalse(channel.isClosed())
        assert.strictEqual(yield* (yield* b.channel(a.id)).state, "trusted")
      })
  )

  it.scoped("a whole PacketHandlers layer, built from the network's own services, replaces every default", () =>
    Effect.gen(function* () {
      const ignore = () => Effect.void
      const BlockOnRequest = Layer.effect(
        PacketHandlers,
        Effect.map(PeerRegistry, (registry) =>
          PacketHandlers.of({
            Identity: ignore,
            Disconnect: ignore,
            PeerGroup: ignore,
            DataTransmission: ignore,
            PureMessage: ({ channel, packet }) =>
              packet.message === "block me" ? registry.blockId(channel.remoteId) : Effect.void
          })
        )
      )
      const { network: b } = yield* startWith({ handlers: BlockOnRequest })
      const a = yield* startNode()
      const channel = yield* a.dial("127.0.0.1", b.port)
      yield* channel.awaitTrusted
      yield* channel.send(message(a.id, "block me"))
      const reason = yield* channel.awaitClosed
      assert.include(reason.message, "identifier blocked")
      assert.isTrue(yield* b.registry.isBlockedId(a.id))
    })
  )

  it.scoped("the default PeerGroup handler keeps plausible peers only, never this node itself", () =>
    Effect.gen(function* () {
      const { network: b } = yield* startWith({ handlers: {} })
      const a = yield* startNode()
      const events = yield* b.registry.subscribeEvents
      const channel = yield* a.dial("127.0.0.1", b.port)
      yield* channel.awaitTrusted
      const good = PeerAddress.make({ address: IpAddress.make("127.0.0.1"), port: Port.make(9100), id: null })
      const group = PeerGroup.make({
        peers: [
          good,
          PeerAddress.make({ address: IpAddress.make("127.0.0.1"), port: Port.make(9101), id: b.id }),
          PeerAddress.make({ address: IpAddress.make("127.0.0.1"), port: Port.make(0), id: null }),
          PeerAddress.make({ address: IpAddress.make("not-an-ip"), port: Port.make(9102), id: null })
        ],
        origin: a.id,
        sentAt: now
      })
      yield* channel.send(group)
      const added = yield* events.pipe(
        Stream.filterMap((e) => (e._tag === "PeerAdded" && e.peer.port === 9100 ? Option.some(e.peer) : Option.none())),
        Stream.runHead,
        Effect.map(Option.getOrThrow)
      )
      assert.deepStrictEqual(added, good)
      // the candidates are chosen before any is added: by now the others have been turned down
      const known = yield* b.registry.known
      assert.deepStrictEqual(known.map((p) => p.port).sort(), [a.port, 9100].sort())
    })
  )

  it.scoped("the default Identity handler records the channel's source address, not the one the packet claims", () =>
    Effect.gen(function* () {
      // handlers run in arrival order: a PureMessage sent after the Identity marks that the Identity was handled
      const handled = yield* Queue.unbounded<string>()
      const { network: b } = yield* startWith({
        handlers: { PureMessage: ({ packet }) => Queue.offer(handled, packet.message) }
      })
      const a = yield* startNode()
      const channel = yield* a.dial("127.0.0.1", b.port)
      yield* channel.awaitTrusted
      yield* channel.send(
        Identity.make({
          message: "discovery",
          address: IpAddress.make("192.0.2.1"),
          port: Port.make(9200),
          origin: a.id,
          sentAt: now
        })
      )
      yield* channel.send(message(a.id, "after identity"))
      assert.strictEqual(yield* Queue.take(handled), "after identity")
      const recorded = (yield* b.registry.known).find((p) => p.id === (a.id as NodeId))!
      assert.strictEqual(recorded.address, "127.0.0.1")
      assert.strictEqual(recorded.port, 9200)
    })
  )
})
