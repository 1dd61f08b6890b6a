/**
 * The bootstrap program (`npm run bootstrap`, src/programs/bootstrap.ts) as a child process, the way an operator starts
 * it: flags and environment variables in, the URL from its "listening on" line out. Used by test/bootstrap.test.ts and
 * bench/bootstrap.ts.
 */
import { Data, Deferred, Effect, Exit } from "effect"
import * as child from "node:child_process"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "../..")
const entry = path.join(root, "src/programs/bootstrap.ts")

export class BootstrapProgramExited extends Data.TaggedError("BootstrapProgramExited")<{
  readonly code: number | null
  readonly stderr: string
}> {
  override get message() {
    return `exited ${this.code}: ${this.stderr}`
  }
}

/**
 * Starts the bootstrap program with these flags and these variables on top of the inherited ones; `stopSignal` is sent
 * when the scope closes. Succeeds with its printed URL (within 60 s), fails if it exits first.
 */
export const spawnBootstrapProgram = (
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  stopSignal: NodeJS.Signals
) =>
  Effect.gen(function* () {
    const ready = yield* Deferred.make<string, BootstrapProgramExited>()
    const proc = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const p = child.spawn(process.execPath, ["--import", "tsx", entry, ...args], {
          cwd: root,
          env: { ...process.env, ...env },
          stdio: ["ignore", "pipe", "pipe"]
        })
        let out = ""
        let err = ""
        p.stdout.on("data", (chunk) => {
          out += String(chunk)
          const url = /listening on (http:\/\/\S+)/.exec(out)?.[1]
          if (url !== undefined) Deferred.unsafeDone(ready, Exit.succeed(url))
        })
        p.stderr.on("data", (chunk) => (err += String(chunk)))
        p.on("exit", (code) => Deferred.unsafeDone(ready, Exit.fail(new BootstrapProgramExited({ code, stderr: err }))))
        return p
      }),
      (p) => Effect.sync(() => p.kill(stopSignal))
    )
    const url = yield* Deferred.await(ready).pipe(Effect.timeout("60 seconds"))
    return { url, process: proc }
  })
