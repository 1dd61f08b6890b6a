/**
 * The node program (src/programs/node.ts) as a child process, the way a user starts it: flags and environment
 * variables in, one JSON line per event out (with `--log-format json`).
 */
import { Command } from "@effect/platform"
import { Effect, Stream, SubscriptionRef } from "effect"
import * as path from "node:path"

const entry = path.resolve(import.meta.dirname, "../../src/programs/node.ts")

/** The node program run with tsx, with these flags and exactly these variables on top of the inherited ones. */
export const nodeProgram = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Command.make(process.execPath, "--import", "tsx", entry, ...args).pipe(Command.env(env))

/** Starts the node program; `waitFor` the first JSON line on its stdout that matches (within 30 s). */
export const startNodeProgram = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.gen(function* () {
    const proc = yield* Command.start(nodeProgram(args, env))
    const lines = yield* SubscriptionRef.make<ReadonlyArray<any>>([])
    yield* proc.stdout.pipe(
      Stream.decodeText(),
      Stream.splitLines,
      Stream.filter((l) => l.startsWith("{")),
      Stream.runForEach((l) => SubscriptionRef.update(lines, (ls) => [...ls, JSON.parse(l)])),
      Effect.forkScoped
    )
    const waitFor = (what: (e: any) => boolean) =>
      lines.changes.pipe(
        Stream.map((ls) => ls.find(what)),
        Stream.filter((e) => e !== undefined),
        Stream.runHead,
        Effect.flatten,
        Effect.timeout("30 seconds")
      )
    return { proc, waitFor }
  })
