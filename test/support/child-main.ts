/**
 * The common frame of the scripts tests run in child processes (child-node.ts, file-sender.ts): JSON lines on
 * stdout, a network configured from P2P_* variables, and an exit when the parent closes stdin.
 */
import { Effect, Layer, Logger, LogLevel } from "effect"
import type { Scope } from "effect"
import type { NetworkServices } from "../../src/layers/Network.js"
import { networkLayerConfig } from "../../src/layers/Network.js"

/** Prints one JSON line on stdout. */
export const say = (o: unknown) => Effect.sync(() => process.stdout.write(JSON.stringify(o) + "\n"))

/** Waits until the parent closes stdin (it exited or closed the child's scope). */
export const untilStdinEnds = Effect.async<void>((resume) => {
  process.stdin.on("end", () => resume(Effect.void))
  process.stdin.on("close", () => resume(Effect.void))
  process.stdin.resume()
})

/** Runs `program` with a network from P2P_* variables, warnings and worse logged; exits 0 when it ends, 1 on failure. */
export const runChild = <E>(program: Effect.Effect<void, E, NetworkServices | Scope.Scope>) =>
  Effect.runPromise(
    Effect.scoped(program).pipe(
      Effect.provide(networkLayerConfig().pipe(Layer.provide(Logger.minimumLogLevel(LogLevel.Warning)))),
      Effect.provide(Logger.minimumLogLevel(LogLevel.Warning))
    )
  ).then(
    () => process.exit(0),
    (e) => {
      process.stderr.write(String(e) + "\n")
      process.exit(1)
    }
  )
