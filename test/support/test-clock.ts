/**
 * Driving the TestClock while real I/O runs: let the event loop turn, and wait until a fiber has gone to sleep until a
 * given instant before adjusting the clock past it.
 */
import { assert } from "@effect/vitest"
import { Chunk, Effect, TestClock } from "effect"
import { afterPendingIo } from "../../src/actors/Connection.js"

/** One turn of the event loop, so HTTP I/O can progress while the TestClock stands still. */
export const nextTurn = afterPendingIo

/** TestClock: waits (bounded in event-loop turns) until some fiber sleeps until `at`. */
export const awaitSleepUntil = (at: number) =>
  Effect.gen(function* () {
    for (let i = 0; i < 1_000_000; i++) {
      if (Chunk.some(yield* TestClock.sleeps(), (t) => t === at)) return
      yield* nextTurn
    }
    assert.fail(`no fiber sleeps until ${at}`)
  })
