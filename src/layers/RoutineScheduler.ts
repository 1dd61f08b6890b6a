/**
 * Named routines on intervals (the original's NetworkRoutines): add, start, stop, re-time, remove and list them at
 * run time. Each running routine is a fiber in a FiberMap owned by the scheduler's scope; it sleeps its interval
 * (read afresh before every sleep, so a new interval takes effect at the next tick), runs, and records the outcome.
 * A failing run is logged and the schedule goes on, unless the routine was added with `stopOnFailure`.
 */
import { Cause, Clock, Context, Duration, Effect, Exit, FiberMap, Layer, Option, Ref } from "effect"
import { RoutineExists, RoutineInfo, RoutineNotFound } from "../schema/routines.js"

interface Entry {
  readonly run: Effect.Effect<void, unknown>
  readonly stopOnFailure: boolean
  intervalMillis: number
  runs: number
  lastRunAt: Option.Option<number>
  lastError: Option.Option<string>
}

export interface RoutineOptions {
  /** Stop the routine after a failed run instead of running it again at the next tick. */
  readonly stopOnFailure?: boolean
}

export class RoutineScheduler extends Context.Tag("effect-p2pnet/RoutineScheduler")<
  RoutineScheduler,
  {
    /** Registers a routine, stopped. */
    readonly add: (
      name: string,
      run: Effect.Effect<void, unknown>,
      interval: Duration.DurationInput,
      options?: RoutineOptions
    ) => Effect.Effect<void, RoutineExists>
    /** Starts a routine: its first run comes one interval from now. Starting a running routine does nothing. */
    readonly start: (name: string) => Effect.Effect<void, RoutineNotFound>
    /** Stops a routine (a run in progress is interrupted). Stopping a stopped routine does nothing. */
    readonly stop: (name: string) => Effect.Effect<void, RoutineNotFound>
    /** Changes a routine's interval; a running routine uses it from its next tick. */
    readonly setInterval: (name: string, interval: Duration.DurationInput) => Effect.Effect<void, RoutineNotFound>
    /** Stops and forgets a routine. */
    readonly remove: (name: string) => Effect.Effect<void, RoutineNotFound>
    readonly list: Effect.Effect<ReadonlyArray<RoutineInfo>>
  }
>() {
  static readonly layer = Layer.scoped(
    this,
    Effect.suspend(() => make)
  )
}

const make = Effect.gen(function* () {
  const entries = yield* Ref.make(new Map<string, Entry>())
  const fibers = yield* FiberMap.make<string>()

  const find = (name: string) =>
    Effect.flatMap(Ref.get(entries), (m) => {
      const e = m.get(name)
      return e === undefined ? Effect.fail(new RoutineNotFound({ name })) : Effect.succeed(e)
    })

  const loop = (name: string, entry: Entry) =>
    Effect.gen(function* () {
      while (true) {
        yield* Effect.sleep(entry.intervalMillis)
        entry.lastRunAt = Option.some(yield* Clock.currentTimeMillis)
        entry.runs++
        const exit = yield* Effect.exit(entry.run)
        if (Exit.isFailure(exit)) {
          if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt
          const text = Cause.pretty(exit.cause)
          entry.lastError = Option.some(text)
          yield* Effect.logWarning(`routine failed: ${text}`)
          if (entry.stopOnFailure) return
        }
      }
    }).pipe(Effect.annotateLogs({ routine: name }))

  return RoutineScheduler.of({
    add: (name, run, interval, options = {}) =>
      Effect.flatMap(
        Ref.modify(entries, (m) => {
          if (m.has(name)) return [false, m] as const
          const entry: Entry = {
            run,
            stopOnFailure: options.stopOnFailure ?? false,
            intervalMillis: Duration.toMillis(interval),
            runs: 0,
            lastRunAt: Option.none(),
            lastError: Option.none()
          }
          return [true, new Map(m).set(name, entry)] as const
        }),
        (added) => (added ? Effect.void : Effect.fail(new RoutineExists({ name })))
      ),
    start: (name) =>
      Effect.flatMap(find(name), (entry) =>
        FiberMap.run(fibers, name, loop(name, entry), { onlyIfMissing: true }).pipe(
          Effect.zipRight(Effect.logInfo(`routine ${name} started`)),
          Effect.asVoid
        )
      ),
    stop: (name) => Effect.zipRight(find(name), FiberMap.remove(fibers, name)),
    setInterval: (name, interval) =>
      Effect.map(find(name), (entry) => {
        entry.intervalMillis = Duration.toMillis(interval)
      }),
    remove: (name) =>
      Effect.zipRight(
        find(name),
        Effect.zipRight(
          FiberMap.remove(fibers, name),
          Ref.update(entries, (m) => {
            const n = new Map(m)
            n.delete(name)
            return n
          })
        )
      ),
    list: Effect.gen(function* () {
      const m = yield* Ref.get(entries)
      const out: Array<RoutineInfo> = []
      for (const [name, e] of m) {
        out.push(
          RoutineInfo.make({
            name,
            intervalMillis: e.intervalMillis,
            running: yield* FiberMap.has(fibers, name),
            runs: e.runs,
            lastRunAt: e.lastRunAt,
            lastError: e.lastError
          })
        )
      }
      return out
    })
  })
})
