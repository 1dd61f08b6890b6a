/**
 * withDeadline (src/actors/Connection.ts), the one timer that bounds a connection's opening: on the TestClock, an
 * opening that outlives it ends with the timeout error and its stream destroyed; one that finishes first keeps its
 * result, its stream, and leaves no timer behind. makeDeadlines, the same bound kept for many openings by one fiber:
 * the same outcomes, a deadline that moves, and no timer left once none is pending.
 */
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Clock, Deferred, Effect, Either, Fiber, TestClock } from "effect"
import { makeDeadlines, readPrefix, withDeadline } from "../src/actors/Connection.js"
import type { ByteStream } from "../src/actors/Connection.js"
import { memoryStream } from "./support/noise-streams.js"
import { awaitSleepUntil } from "./support/test-clock.js"

class TimedOut {
  readonly _tag = "TimedOut"
}

type Bound = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | TimedOut, R>

/**
 * Starts an opening step that only the peer can finish (four bytes read from a memory stream) under the one-second
 * deadline `bound` sets on its stream.
 */
const stepUnder = (bound: (stream: ByteStream) => Bound) =>
  Effect.gen(function* () {
    const m = memoryStream()
    const fiber = yield* readPrefix(
      m.stream,
      () => 4,
      (bytes) => bytes.toString("hex")
    ).pipe(bound(m.stream), Effect.either, Effect.fork)
    return { m, fiber }
  })

/** The step under withDeadline, once the deadline's timer sleeps. */
const boundedStep = Effect.tap(
  stepUnder((stream) => withDeadline(stream, 1_000, () => new TimedOut())),
  () => awaitSleepUntil(1_000)
)

/** The step is still waiting at 999 ms; at one second it fails with the timeout error and its stream is destroyed. */
const expiresAtOneSecond = (step: Effect.Effect.Success<ReturnType<typeof stepUnder>>) =>
  Effect.gen(function* () {
    yield* TestClock.adjust("999 millis")
    assert.isFalse(step.m.destroyed(), "not before the deadline")
    yield* TestClock.adjust("1 millis")
    const result = yield* Fiber.join(step.fiber)
    assert.isTrue(Either.isLeft(result) && result.left instanceof TimedOut)
    assert.isTrue(step.m.destroyed())
  })

describe("withDeadline", () => {
  it.scoped("a step still waiting when the time is up fails with the timeout error, and its stream is destroyed", () =>
    Effect.gen(function* () {
      const step = yield* boundedStep
      step.m.feed(Buffer.from([1, 2]))
      yield* expiresAtOneSecond(step)
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

describe("makeDeadlines", () => {
  /** The step under a deadline kept by makeDeadlines. */
  const keptStep = Effect.flatMap(makeDeadlines(50), (deadlines) =>
    stepUnder((stream) => deadlines.bound(stream, 1_000, () => new TimedOut()))
  )

  it.scoped("an opening still waiting at its deadline fails with the timeout error, its stream destroyed", () =>
    Effect.gen(function* () {
      const step = yield* keptStep
      yield* awaitSleepUntil(50)
      yield* expiresAtOneSecond(step)
    })
  )

  it.scoped(
    "an opening that finishes first keeps its result and its stream; the keeper then waits without a timer",
    () =>
      Effect.gen(function* () {
        const { m, fiber } = yield* keptStep
        // the keeper is ticking for the pending deadline when the opening finishes
        yield* awaitSleepUntil(50)
        m.feed(Buffer.from([0xca, 0xfe, 0xba, 0xbe]))
        assert.deepStrictEqual(yield* Fiber.join(fiber), Either.right("cafebabe"))
        yield* TestClock.adjust("2 seconds")
        assert.isFalse(m.destroyed())
        assert.strictEqual(Chunk.size(yield* TestClock.sleeps()), 0, "no timer once nothing is pending")
      })
  )

  it.scoped("a deadline that moves is met where it moved to", () =>
    Effect.gen(function* () {
      const deadlines = yield* makeDeadlines(50)
      let due = 1_000
      const fired = yield* Deferred.make<number>()
      deadlines.add(
        () => due,
        Effect.flatMap(Clock.currentTimeMillis, (now) => Deferred.succeed(fired, now))
      )
      yield* awaitSleepUntil(50)
      // moved earlier (as a dial's deadline does once it connects): met within one tick of the new time
      due = 300
      yield* TestClock.adjust("350 millis")
      assert.strictEqual(yield* Deferred.await(fired), 300)
    })
  )
})
