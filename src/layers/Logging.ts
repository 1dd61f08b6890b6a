/**
 * Logging for the node: pretty lines for people or JSON lines (`P2P_LOG_FORMAT=json`), a minimum level, and an
 * optional JSON-lines file. Subsystems annotate their logs with `category` (LAN, Bootstrap, Peers), `peer` and
 * `address`.
 */
import { PlatformLogger } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import { Effect, Exit, FiberRef, FiberSet, HashMap, Layer, Logger, LogLevel } from "effect"
import { LogSettings } from "../schema/settings.js"
import { logSettingsFromEnv } from "./Settings.js"

/** The log category annotation key and the original's categories. */
export const Category = { LAN: "LAN", Bootstrap: "Bootstrap", Peers: "Peers" } as const

/**
 * Annotates every later log line of the current fiber, for a fiber that runs one job to its end (an accepted
 * connection, a channel). Unlike Effect.annotateLogs it restores nothing afterwards, which makes it a single step
 * instead of twenty-odd on a connection's opening path.
 */
export const annotateFiber = (annotations: Readonly<Record<string, unknown>>): Effect.Effect<void> =>
  FiberRef.update(FiberRef.currentLogAnnotations, (current) => {
    let next = current
    for (const key in annotations) next = HashMap.set(next, key, annotations[key])
    return next
  })

/**
 * Times `self` as a span: made before it, ended after it, as Effect.withSpan does, but without making it the current
 * span inside `self` (so spans made inside are not its children; the openings it times make none). That is two steps
 * instead of withSpan's thirty-odd on the path every connection waits on. An interrupted `self` leaves it unended.
 */
export const timedSpan =
  (name: string, attributes: Readonly<Record<string, unknown>>) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.flatMap(Effect.makeSpan(name, { attributes, captureStackTrace: false }), (span) =>
      Effect.clockWith((clock) =>
        Effect.matchCauseEffect(self, {
          onFailure: (cause) => {
            span.end(clock.unsafeCurrentTimeNanos(), Exit.failCause(cause))
            return Effect.failCause(cause)
          },
          onSuccess: (a) => {
            span.end(clock.unsafeCurrentTimeNanos(), Exit.succeed(a))
            return Effect.succeed(a)
          }
        })
      )
    )

/**
 * A warning logger for plain callbacks (socket events), with the caller's log annotations. Each line is logged by a
 * fiber of the caller's scope, so closing the scope ends any that is still running.
 */
export const scopedWarn = Effect.map(FiberSet.makeRuntime<never>(), (run) => (text: string) => {
  run(Effect.logWarning(text))
})

export const loggingLayer = (
  settings: Partial<ConstructorParameters<typeof LogSettings>[0]> = {}
): Layer.Layer<never> => {
  const s = LogSettings.make(settings)
  const console = s.format === "json" ? Logger.json : Logger.pretty
  const level = Logger.minimumLogLevel(LogLevel.fromLiteral(s.level))
  if (s.file === "") return Layer.merge(console, level)
  const file = Logger.addScoped(Logger.jsonLogger.pipe(PlatformLogger.toFile(s.file))).pipe(
    Layer.provide(NodeFileSystem.layer),
    Layer.orDie
  )
  return Layer.mergeAll(console, level, file)
}

/** Logging configured from P2P_LOG_LEVEL, P2P_LOG_FORMAT and P2P_LOG_FILE. */
export const loggingLayerConfig: Layer.Layer<never> = Layer.unwrapEffect(
  Effect.map(logSettingsFromEnv, loggingLayer).pipe(Effect.orDie)
)
