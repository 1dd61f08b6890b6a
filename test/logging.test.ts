import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Category, loggingLayer } from "../src/layers/Logging.js"
import { startNode } from "./support/nodes.js"

describe("logging", () => {
  it.live("writes JSON lines with the category, peer and address annotations to the log file", () =>
    Effect.gen(function* () {
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "p2p-log-")), "node.log")
      yield* Effect.scoped(
        Effect.gen(function* () {
          const a = yield* startNode()
          const b = yield* startNode()
          const channel = yield* a.dial("127.0.0.1", b.port)
          yield* channel.awaitTrusted
        }).pipe(Effect.provide(Layer.fresh(loggingLayer({ format: "json", level: "Info", file }))))
      )
      const lines = fs
        .readFileSync(file, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l))
      const trusted = lines.filter((l) => l.message === "channel trusted")
      assert.strictEqual(trusted.length, 2, "each side logs the event once")
      for (const l of trusted) {
        assert.strictEqual(l.annotations.category, Category.Peers)
        assert.match(l.annotations.peer, /^[0-9a-f]{40}$/)
        assert.match(l.annotations.address, /^127\.0\.0\.1:\d+$/)
      }
    })
  )

  it.effect("a level above Info hides info lines", () =>
    Effect.gen(function* () {
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "p2p-log-")), "node.log")
      yield* Effect.scoped(
        Effect.all([Effect.logInfo("hidden"), Effect.logWarning("shown")]).pipe(
          Effect.provide(Layer.fresh(loggingLayer({ level: "Warning", file })))
        )
      )
      const messages = fs
        .readFileSync(file, "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l).message)
      assert.deepStrictEqual(messages, ["shown"])
    })
  )
})
