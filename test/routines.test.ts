import { assert, describe, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option, Ref, Stream, TestClock } from "effect"
import { DISCERN_PEER_CHANNELS, ROTATE_BROADCAST_PORT } from "../src/layers/DefaultRoutines.js"
import { networkLayerWith } from "../src/layers/Network.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { RoutineScheduler } from "../src/layers/RoutineScheduler.js"
import { fastSettings, message, startNode } from "./support/nodes.js"

const withScheduler = <A, E>(self: Effect.Effect<A, E, RoutineScheduler>) =>
  Effect.provide(self, Layer.fresh(RoutineScheduler.layer))

/** Adds a routine that counts its runs; returns the count. */
const counting = (scheduler: RoutineScheduler["Type"], name: string, interval: Duration.DurationInput) =>
  Effect.tap(Ref.make(0), (count) =>
    scheduler.add(
      name,
      Ref.update(count, (n) => n + 1),
      interval
    )
  )

const info = (name: string) =>
  Effect.flatMap(RoutineScheduler, (s) => Effect.map(s.list, (all) => all.find((r) => r.name === name)!))

describe("RoutineScheduler (TestClock)", () => {
  it.effect("a started routine runs once per interval; stop halts it; start resumes it", () =>
    withScheduler(
      Effect.gen(function* () {
        const scheduler = yield* RoutineScheduler
        const count = yield* counting(scheduler, "tick", "10 seconds")
        yield* TestClock.adjust("30 seconds")
        assert.strictEqual(yield* Ref.get(count), 0, "added routines are not started")
        yield* scheduler.start("tick")
        yield* TestClock.adjust("35 seconds")
        assert.strictEqual(yield* Ref.get(count), 3)
        const running = yield* info("tick")
        assert.isTrue(running.running)
        assert.strictEqual(running.runs, 3)
        assert.deepStrictEqual(running.lastRunAt, Option.some(60_000))
        yield* scheduler.stop("tick")
        yield* TestClock.adjust("60 seconds")
        assert.strictEqual(yield* Ref.get(count), 3)
        assert.isFalse((yield* info("tick")).running)
        yield* scheduler.start("tick")
        yield* TestClock.adjust("10 seconds")
        assert.strictEqual(yield* Ref.get(count), 4)
      })
    )
  )

  it.effect("a new interval takes effect at the next tick", () =>
    withScheduler(
      Effect.gen(function* () {
        const scheduler = yield* RoutineScheduler
        const count = yield* counting(scheduler, "tick", "10 seconds")
        yield* scheduler.start("tick")
        yield* TestClock.adjust("1 second")
        yield* scheduler.setInterval("tick", "2 seconds")
        // the sleep in progress keeps its 10 s; from then on every 2 s
        yield* TestClock.adjust("9 seconds")
        assert.strictEqual(yield* Ref.get(count), 1)
        yield* TestClock.adjust("6 seconds")
        assert.strictEqual(yield* Ref.get(count), 4)
        assert.strictEqual((yield* info("tick")).intervalMillis, 2_000)
      })
    )
  )

  it.effect("a failing run is recorded and the schedule goes on, unless the routine stops on failure", () =>
    withScheduler(
      Effect.gen(function* () {
        const scheduler = yield* RoutineScheduler
        const count = yield* Ref.make(0)
        const flaky = Effect.flatMap(
          Ref.updateAndGet(count, (n) => n + 1),
          (n) => (n === 1 ? Effect.fail("first run fails") : Effect.void)
        )
        yield* scheduler.add("flaky", flaky, "1 second")
        yield* scheduler.add("fragile", Effect.fail("boom"), "1 second", { stopOnFailure: true })
        yield* scheduler.start("flaky")
        yield* scheduler.start("fragile")
        yield* TestClock.adjust("3 seconds")
        assert.strictEqual(yield* Ref.get(count), 3)
        const flakyInfo = yield* info("flaky")
        assert.isTrue(flakyInfo.running)
        assert.isTrue(Option.isSome(flakyInfo.lastError) && flakyInfo.lastError.value.includes("first run fails"))
        const fragileInfo = yield* info("fragile")
        assert.isFalse(fragileInfo.running)
        assert.strictEqual(fragileInfo.runs, 1)
      })
    )
  )

  it.effect("names are unique; unknown names are typed errors; remove forgets and stops", () =>
    withScheduler(
      Effect.gen(function* () {
        const scheduler = yield* RoutineScheduler
        const count = yield* counting(scheduler, "a", "1 second")
        assert.strictEqual((yield* Effect.flip(scheduler.add("a", Effect.void, "1 second")))._tag, "RoutineExists")
        assert.strictEqual((yield* Effect.flip(scheduler.start("nope")))._tag, "RoutineNotFound")
        yield* scheduler.start("a")
        yield* scheduler.remove("a")
        yield* TestClock.adjust("5 seconds")
        assert.strictEqual(yield* Ref.get(count), 0)
        assert.deepStrictEqual(yield* scheduler.list, [])
      })
    )
  )

  it.effect("closing the scheduler's scope stops every routine", () =>
    Effect.gen(function* () {
      const count = yield* Ref.make(0)
      yield* withScheduler(
        Effect.gen(function* () {
          const scheduler = yield* RoutineScheduler
          yield* scheduler.add(
            "tick",
            Ref.update(count, (n) => n + 1),
            "1 second"
          )
          yield* scheduler.start("tick")
          yield* TestClock.adjust("2 seconds")
        })
      )
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* Ref.get(count), 2)
    })
  )
})

describe("default routines", () => {
  const startWithRoutines = (settings: Parameters<typeof networkLayerWith>[0] = {}) =>
    Layer.build(networkLayerWith({ ...fastSettings, ...settings })).pipe(
      Effect.map((ctx) => ({ network: Context.get(ctx, PeerNetwork), routines: Context.get(ctx, RoutineScheduler) })),
      Effect.orDie
    )

  it.scoped("DiscernPeerChannels and RotateBroadcastPort are registered, not started", () =>
    Effect.gen(function* () {
      const { routines } = yield* startWithRoutines()
      const all = yield* routines.list
      assert.deepStrictEqual(
        all.map((r) => [r.name, r.intervalMillis, r.running]),
        [
          [DISCERN_PEER_CHANNELS, 60_000, false],
          [ROTATE_BROADCAST_PORT, 30_000, false]
        ]
      )
    })
  )

  it.scoped("DiscernPeerChannels closes a channel silent for longer than the limit and leaves an active one", () =>
    Effect.gen(function* () {
      const { network: hub, routines } = yield* startWithRoutines({ inactivityLimitMillis: 60 * 60 * 1000 })
      const quiet = yield* startNode()
      const chatty = yield* startNode()
      const toQuiet = yield* quiet.dial("127.0.0.1", hub.port)
      const toChatty = yield* chatty.dial("127.0.0.1", hub.port)
      const quietOnHub = yield* hub.awaitChannel(quiet.id)
      const chattyOnHub = yield* hub.awaitChannel(chatty.id)
      yield* routines.start(DISCERN_PEER_CHANNELS)
      yield* TestClock.adjust("40 minutes")
      // the chatty peer speaks at minute 40; the quiet one has said nothing since the handshake at minute 0
      const packets = yield* hub.registry.subscribePackets
      yield* toChatty.send(message(chatty.id, "still here"))
      yield* packets.pipe(Stream.take(1), Stream.runDrain)
      yield* TestClock.adjust("21 minutes")
      const reason = yield* quietOnHub.awaitClosed
      assert.include(reason.message, "inactive")
      assert.strictEqual((yield* toQuiet.awaitClosed)._tag, "RemoteDisconnected")
      assert.isFalse(chattyOnHub.isClosed())
      assert.isTrue((yield* hub.channels).includes(chattyOnHub))
    })
  )
})
