/** Child processes for tests: test/support scripts run with tsx, scoped, talking JSON lines on stdout. */
import { Effect, Queue } from "effect"
import * as cp from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"

export interface ChildNode {
  readonly lines: Queue.Dequeue<Record<string, any>>
  readonly kill: Effect.Effect<void>
  readonly exited: Effect.Effect<number | null>
}

const nodeEntry = path.resolve(import.meta.dirname, "child-node.ts")

/** Runs test/support/child-node.ts with these P2P_* variables (on 127.0.0.1, warnings only unless given). */
export const spawnChildNode = (env: Record<string, string>) => spawnScript(nodeEntry, env)

/** Runs a script of test/support in a child process, scoped: closing the scope kills it. Reads its JSON lines. */
export const spawnScript = (entry: string, env: Record<string, string>) =>
  Effect.gen(function* () {
    const lines = yield* Queue.unbounded<Record<string, any>>()
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        cp.spawn(process.execPath, ["--import", "tsx", entry], {
          env: { ...process.env, P2P_HOST: "127.0.0.1", P2P_LOG_LEVEL: "Warning", ...env },
          stdio: ["pipe", "pipe", "inherit"]
        })
      ),
      (c) => Effect.sync(() => c.kill("SIGKILL"))
    )
    const exitCode = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
    readline.createInterface({ input: child.stdout! }).on("line", (l) => {
      try {
        lines.unsafeOffer(JSON.parse(l))
      } catch {
        // not ours (a stray log line)
      }
    })
    return {
      lines,
      kill: Effect.sync(() => child.kill("SIGKILL")).pipe(
        Effect.zipRight(Effect.promise(() => exitCode)),
        Effect.asVoid
      ),
      exited: Effect.promise(() => exitCode)
    } satisfies ChildNode
  })

/** The next line with the given key (lines without it are skipped). */
export const nextLine = (child: ChildNode, key: string): Effect.Effect<any> =>
  Effect.flatMap(Queue.take(child.lines), (l) => (key in l ? Effect.succeed(l[key]) : nextLine(child, key)))
