/**
 * The driver's handle on the receiving process (bench/peer.ts): forks it with an IPC channel, sends it commands and
 * waits, with a bound, for its reports. Closing the scope tells it to quit and kills it if it lingers.
 */
import { Data, Effect, Queue } from "effect"
import type { Scope } from "effect"
import { fork } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { FromPeer, ToPeer } from "./shared.js"

export class BenchFailed extends Data.TaggedError("BenchFailed")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

/** A report from the receiver, stamped with the driver's clock when it arrived. */
export type Arrived = FromPeer & { readonly at: number }
export type Ready = Extract<FromPeer, { _tag: "Ready" }>

export interface Receiver {
  readonly ready: Ready
  readonly tell: (m: ToPeer) => Effect.Effect<void>
  /** The next report with this tag (others are skipped); fails on a Failed report, an exit, or after `within`. */
  readonly expect: <T extends FromPeer["_tag"]>(
    tag: T,
    within?: number
  ) => Effect.Effect<Extract<Arrived, { _tag: T }>, BenchFailed>
}

const DEFAULT_WAIT_MILLIS = 60_000

export const spawnReceiver: Effect.Effect<Receiver, BenchFailed, Scope.Scope> = Effect.gen(function* () {
  const inbox = yield* Queue.unbounded<Arrived>()
  const child = yield* Effect.acquireRelease(
    Effect.sync(() => {
      // inherit the tsx loader (and flags such as --cpu-prof) from this process
      const execArgv = process.execArgv.some((a) => a.includes("tsx"))
        ? process.execArgv
        : [...process.execArgv, "--import", "tsx"]
      const child = fork(fileURLToPath(new URL("./peer.ts", import.meta.url)), [], {
        execArgv,
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      child.on("message", (m) => inbox.unsafeOffer({ ...(m as FromPeer), at: performance.now() }))
      child.on("exit", (code, signal) =>
        inbox.unsafeOffer({ _tag: "Failed", detail: `receiver exited (${code ?? signal})`, at: performance.now() })
      )
      return child
    }),
    quit
  )
  const expect = <T extends FromPeer["_tag"]>(tag: T, within = DEFAULT_WAIT_MILLIS) =>
    Effect.gen(function* () {
      while (true) {
        const m = yield* Queue.take(inbox)
        if (m._tag === tag) return m as Extract<Arrived, { _tag: T }>
        if (m._tag === "Failed") return yield* new BenchFailed({ detail: `receiver: ${m.detail}` })
      }
    }).pipe(
      Effect.timeoutFail({
        duration: within,
        onTimeout: () => new BenchFailed({ detail: `no ${tag} from the receiver` })
      })
    )
  const ready = yield* expect("Ready")
  return { ready, expect, tell: (m) => Effect.sync(() => child.send(m)) }
})

const quit = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    if (child.connected) child.send({ _tag: "Quit" } satisfies ToPeer)
    else child.kill()
  }).pipe(
    Effect.timeout("5 seconds"),
    Effect.catchAll(() => Effect.sync(() => child.kill("SIGKILL")))
  )
