/**
 * sharedAttempts (src/actors/Connection.ts), the de-duplication of dials to one endpoint used by PeerNetwork.dial and
 * the compatibility profile's dial: callers for a key in progress share its one attempt and its outcome; a finished
 * key is free again; an interrupted attempt interrupts its waiters instead of leaving them waiting.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { sharedAttempts } from "../src/actors/Connection.js"

describe("sharedAttempts", () => {
  it.effect("callers of a key in progress share one attempt and its outcome; a finished key runs a new one", () =>
    Effect.gen(function* () {
      const shared = yield* sharedAttempts<number, string>()
      const gate = yield* Deferred.make<void>()
      let runs = 0
      const attempt = Effect.gen(function* () {
        runs++
        yield* Deferred.await(gate)
        return runs
      })
      const first = yield* Effect.fork(shared("a:1", attempt))
      const second = yield* Effect.fork(shared("a:1", attempt))
      const other = yield* Effect.fork(shared("b:2", Effect.fail("refused")))
      yield* Effect.yieldNow()
      yield* Deferred.succeed(gate, undefined)
      assert.deepStrictEqual([yield* Fiber.join(first), yield* Fiber.join(second)], [1, 1])
      assert.deepStrictEqual(yield* Fiber.await(other), Exit.fail("refused"))
      assert.strictEqual(yield* shared("a:1", attempt), 2)
    })
  )

  it.effect("an interrupted attempt interrupts the callers waiting on it, and frees its key", () =>
    Effect.gen(function* () {
      const shared = yield* sharedAttempts<number, never>()
      const started = yield* Deferred.make<void>()
      const runner = yield* Effect.fork(
        shared("a:1", Effect.zipRight(Deferred.succeed(started, undefined), Effect.never))
      )
      yield* Deferred.await(started)
      const waiter = yield* Effect.fork(shared("a:1", Effect.succeed(7)))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(runner)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(waiter)))
      assert.strictEqual(yield* shared("a:1", Effect.succeed(8)), 8)
    })
  )
})
