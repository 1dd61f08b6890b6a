import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { message, packetsFrom, startNode } from "./support/nodes.js"
import { nextLine, spawnChildNode } from "./support/child.js"

describe("nodes in separate processes", () => {
  it.scoped("a node in a child process handshakes and exchanges every packet kind both ways", () =>
    Effect.gen(function* () {
      const a = yield* startNode()
      const child = yield* spawnChildNode({ P2P_PORT: "0" })
      const ready = yield* nextLine(child, "ready")
      const packets = yield* a.registry.subscribePackets
      const channel = yield* a.dial("127.0.0.1", ready.port)
      assert.strictEqual(channel.remoteId, ready.id)
      yield* channel.awaitTrusted
      const sent = packetsFrom(a.id)
      for (const p of sent.slice(0, 4)) yield* channel.send(p)
      for (const p of sent.slice(0, 4)) {
        const r = yield* nextLine(child, "received")
        assert.strictEqual(r.tag, p._tag)
        assert.strictEqual(r.from, a.id)
      }
      const echoes = yield* packets.pipe(Stream.take(4), Stream.runCollect)
      assert.deepStrictEqual(
        [...echoes].map((e) => e.packet._tag),
        sent.slice(0, 4).map((p) => p._tag)
      )
      for (const e of echoes) assert.strictEqual(e.packet.origin, ready.id)
      yield* channel.send(sent[4]!)
      assert.strictEqual((yield* nextLine(child, "received")).tag, "Disconnect")
    })
  )

  it.scopedLive(
    "an outbound channel re-dials a killed peer restarted on the same port and delivers what was queued",
    () =>
      Effect.gen(function* () {
        const keyFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "p2p-")), "node.key")
        const a = yield* startNode({ reconnectDelayMillis: 100, reconnectRetries: 100 })
        const first = yield* spawnChildNode({ P2P_PORT: "0", P2P_KEY_FILE: keyFile })
        const ready = yield* nextLine(first, "ready")
        const channel = yield* a.dial("127.0.0.1", ready.port)
        yield* channel.awaitTrusted
        yield* channel.sendAndAwait(message(a.id, "before"))
        assert.strictEqual((yield* nextLine(first, "received")).text, "before")
        yield* first.kill
        yield* channel.stateChanges.pipe(
          Stream.filter((s) => s === "reconnecting"),
          Stream.runHead
        )
        // accepted while the peer is down: must arrive after the reconnect, in order
        const queued = Array.from({ length: 20 }, (_, i) => `queued-${i}`)
        for (const text of queued) yield* channel.send(message(a.id, text))
        const second = yield* spawnChildNode({ P2P_PORT: String(ready.port), P2P_KEY_FILE: keyFile })
        const again = yield* nextLine(second, "ready")
        assert.strictEqual(again.id, ready.id)
        const got: Array<string> = []
        for (let i = 0; i < queued.length; i++) got.push((yield* nextLine(second, "received")).text)
        assert.deepStrictEqual(got, queued)
        assert.strictEqual(yield* channel.state, "trusted")
        assert.strictEqual(channel.key, (yield* a.channel(ready.id)).key)
      }),
    60_000
  )
})
