/**
 * withDeadline (src/actors/Connection.ts), the one timer that bounds a connection's opening: on the TestClock, an
 * opening that outlives it ends with the timeout error and its stream destroyed; one that finishes first keeps its
 * result, its stream, and leaves no timer behind.
 */
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Either, Fiber, TestClock } from "effect"
import { readPrefix, withDeadline } from "../src/actors/Connection.js"
import { memoryStream } from "./support/noise-streams.js"
import { awaitSleepUntil } from "./support/test-clock.js"

class TimedOut {
  readonly _tag = "TimedOut"
}

/**
 * Starts an opening step that only the peer can finish (four bytes read from a memory stream) under a one-second
 * deadline, and returns once the deadline's timer sleeps.
 */
const boundedStep = Effect.gen(function* () {
  const m = memoryStream()
  const fiber = yield* readPrefix(
    m.stream,
    () => 4,
    (bytes) => bytes.toString("hex")
  ).pipe(
    withDeadline(m.stream, 1_000, () => new TimedOut()),
    Effect.either,
    Effect.fork
  )
  yield* awaitSleepUntil(1_000)
  return { m, fiber }
})

describe("withDeadline", () => {
  it.scoped("a step still waiting when the time is up fails with the timeout error, and its stream is destroyed", () =>
    Effect.gen(function* () {
      const { m, fiber } = yield* boundedStep
      m.feed(Buffer.from([1, 2]))
      yield* TestClock.adjust("999 millis")
      assert.isFalse(m.destroyed(), "not before the deadline")
      yield* TestClock.adjust("1 millis")
      const result = yield* Fiber.join(fiber)
      assert.isTrue(Either.isLeft(result) && result.left instanceof TimedOut)
      assert.isTrue(m.destroyed())
    })
  )

  it.scoped("a step that finishes first keeps its result and its stream; no timer is left sleeping", () =>
    Effect.gen(function* () {
      const { m, fiber } = yield* boundedStep
      m.feed(Buffer.from([0xca, 0xfe, 0xba, 0xbe, 0xff]))
      const result = yield* Fiber.join(fiber)
      assert.deepStrictEqual(result, Either.right("cafebabe"))
      yield* TestClock.adjust("2 seconds")
      assert.isFalse(m.destroyed())
      assert.strictEqual(Chunk.size(yield* TestClock.sleeps()), 0)
    })
  )

  it.scoped("a step that fails first keeps its own error", () =>
    Effect.gen(function* () {
      const { m, fiber } = yield* boundedStep
      m.end("reset by peer")
      const result = yield* Fiber.join(fiber)
      assert.isTrue(Either.isLeft(result) && !(result.left instanceof TimedOut))
      if (Either.isLeft(result) && !(result.left instanceof TimedOut)) {
        assert.strictEqual(result.left._tag, "ConnectionLost")
        assert.include(result.left.message, "reset by peer")
      }
    })
  )
})
