import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, TestClock } from "effect"
import { networkLayerWith } from "../src/layers/Network.js"
import { PeerConnector } from "../src/layers/PeerConnector.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { IpAddress, PeerAddress, Port } from "../src/schema/ids.js"
import type { NodeId } from "../src/schema/ids.js"
import type { NetworkSettings } from "../src/schema/settings.js"
import { PeerGroup } from "../src/schema/packets.js"
import { fastSettings, now, startNode } from "./support/nodes.js"

const startWithConnector = (settings: Partial<ConstructorParameters<typeof NetworkSettings>[0]> = {}) =>
  Layer.build(networkLayerWith({ ...fastSettings, ...settings })).pipe(
    Effect.map((ctx) => ({ network: Context.get(ctx, PeerNetwork), connector: Context.get(ctx, PeerConnector) })),
    Effect.orDie
  )

const at = (port: number, id: NodeId | null = null) =>
  PeerAddress.make({ address: IpAddress.make("127.0.0.1"), port: Port.make(port), id })

const hasChannel = (network: PeerNetwork["Type"], id: NodeId) =>
  Effect.map(Effect.either(network.channel(id)), (e) => e._tag === "Right")

describe("PeerConnector", () => {
  it.scopedLive("a PeerGroup makes the node dial the listed peers, never itself or implausible ones", () =>
    Effect.gen(function* () {
      const { network: b, connector } = yield* startWithConnector({ connectsPerSecond: 1000 })
      const a = yield* startNode()
      const listed = yield* Effect.all([startNode(), startNode()])
      const channel = yield* a.dial("127.0.0.1", b.port)
      yield* channel.awaitTrusted
      yield* channel.send(
        PeerGroup.make({
          peers: [...listed.map((n) => at(n.port, n.id)), at(b.port, b.id), at(0), at(9)].map((p, i) =>
            i === 4 ? PeerAddress.make({ ...p, address: IpAddress.make("not-an-ip") }) : p
          ),
          origin: a.id,
          sentAt: now
        })
      )
      for (const n of listed) {
        const dialled = yield* b.awaitChannel(n.id)
        assert.strictEqual(dialled.direction, "outbound")
      }
      // the node itself, port 0 and a non-IP address were turned down before any dial
      assert.strictEqual((yield* connector.stats).refused, 3)
    })
  )

  it.scoped("dials at most connectsPerSecond, driven by the clock", () =>
    Effect.gen(function* () {
      const { network: b, connector } = yield* startWithConnector({ connectsPerSecond: 1 })
      const [c, d, e] = yield* Effect.all([startNode(), startNode(), startNode()])
      assert.strictEqual(yield* connector.offer([c, d, e].map((n) => at(n.port, n.id))), 3)
      yield* b.awaitChannel(c.id)
      assert.isFalse(yield* hasChannel(b, d.id))
      assert.isFalse(yield* hasChannel(b, e.id))
      yield* TestClock.adjust("1 second")
      yield* b.awaitChannel(d.id)
      assert.isFalse(yield* hasChannel(b, e.id))
      yield* TestClock.adjust("1 second")
      yield* b.awaitChannel(e.id)
    })
  )

  it.scoped("skips peers already connected or offered recently, and drops what does not fit its queue", () =>
    Effect.gen(function* () {
      const { network: b, connector } = yield* startWithConnector({ connectsPerSecond: 1, connectQueueCapacity: 2 })
      const c = yield* startNode()
      yield* b.dial("127.0.0.1", c.port)
      const queued = yield* connector.offer([at(c.port, c.id), at(c.port, c.id)])
      assert.strictEqual(queued, 0)
      // five unreachable candidates: the queue holds two, the worker may already have taken one
      const more = yield* connector.offer([1, 2, 3, 4, 5].map((p) => at(p)))
      const again = yield* connector.offer([at(1)])
      const stats = yield* connector.stats
      assert.strictEqual(stats.duplicates, 3)
      assert.strictEqual(more + stats.dropped, 5)
      assert.isAtLeast(stats.dropped, 2)
      assert.strictEqual(again, 0)
    })
  )

  it.scoped("with autoConnect off, offered peers become known but are not dialled", () =>
    Effect.gen(function* () {
      const { network: b, connector } = yield* startWithConnector({ autoConnect: false })
      const c = yield* startNode()
      assert.strictEqual(yield* connector.offer([at(c.port, c.id)]), 0)
      const known = yield* b.registry.known
      assert.isTrue(known.some((p) => p.id === c.id))
      assert.isFalse(yield* hasChannel(b, c.id))
      assert.strictEqual((yield* connector.stats).dialled, 0)
    })
  )
})
