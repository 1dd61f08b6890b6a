/**
 * Bootstrap server throughput on loopback: the bootstrap program (SQLite store, rate limiting off) runs in a child
 * process; this process drives it with a client derived from BootstrapApi, 32 requests in flight, every request signed
 * beforehand so the figures are the server's. Registrations per second, heartbeats per second, and latency percentiles
 * at that load. Part of `npm run bench` (BENCH_ONLY=bootstrap); also runnable alone: `tsx bench/bootstrap.ts`.
 */
import { FetchHttpClient, HttpApiClient } from "@effect/platform"
import { Cause, Console, Data, Effect, Encoding, Layer } from "effect"
import type { Scope } from "effect"
import { BootstrapConfig, serverLayer, serverUrl } from "../src/layers/BootstrapServer.js"
import { BootstrapStore } from "../src/layers/BootstrapStore.js"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { generateKeys } from "../src/layers/NodeIdentity.js"
import type { NodeKeys } from "../src/layers/NodeIdentity.js"
import type { HeartbeatRequest, RegisterRequest } from "../src/schema/bootstrap.js"
import { BootstrapApi, heartbeatBytes, registrationBytes } from "../src/schema/bootstrap.js"
import type { Port } from "../src/schema/ids.js"
import { spawnBootstrapProgram } from "../test/support/bootstrap-program.js"

export class BootstrapBenchFailed extends Data.TaggedError("BootstrapBenchFailed")<{ readonly detail: string }> {}

export const IN_FLIGHT = 32
export const REGISTRATIONS = Number(process.env["BENCH_BOOTSTRAP_REGISTRATIONS"] ?? "2000")
export const HEARTBEATS = Number(process.env["BENCH_BOOTSTRAP_HEARTBEATS"] ?? "4000")
/** Peers registered before the heartbeat run; each sends HEARTBEATS / HEARTBEAT_PEERS heartbeats. */
const HEARTBEAT_PEERS = 500

export interface LoadResult {
  readonly count: number
  readonly perSecond: number
  readonly p50Millis: number
  readonly p99Millis: number
}

const registration = (keys: NodeKeys, sentAt: number): RegisterRequest => {
  const unsigned = {
    id: keys.id,
    port: 9000 as Port,
    publicKey: Encoding.encodeBase64(keys.publicKey),
    network: "p2pnet",
    sentAt
  }
  return { ...unsigned, signature: Encoding.encodeBase64(keys.sign(registrationBytes(unsigned))) }
}

const heartbeat = (keys: NodeKeys, sentAt: number): HeartbeatRequest => ({
  id: keys.id,
  sentAt,
  signature: Encoding.encodeBase64(keys.sign(heartbeatBytes({ id: keys.id, sentAt })))
})

/** A fresh data directory, removed when the scope closes. */
const dataDirectory = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "p2p-bootstrap-bench-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** The bootstrap program in a child process for the life of the scope (SIGTERM at the end); its URL. */
const spawnServer = Effect.gen(function* () {
  const dataDir = yield* dataDirectory
  const { url } = yield* spawnBootstrapProgram(
    ["--port", "0", "--host", "127.0.0.1"],
    { BOOTSTRAP_DATA_DIR: dataDir, BOOTSTRAP_RATE_LIMIT_PER_MINUTE: "0", BOOTSTRAP_ADMIN_TOKEN: "bench" },
    "SIGTERM"
  ).pipe(
    Effect.mapError(
      (e) =>
        new BootstrapBenchFailed({
          detail: e._tag === "TimeoutException" ? "server did not start" : `server ${e.message}`
        })
    )
  )
  return url
})

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0

/** Runs every request, IN_FLIGHT at a time; wall-clock rate and per-request latency. */
const load = <A>(requests: ReadonlyArray<A>, send: (a: A) => Effect.Effect<unknown, unknown>) =>
  Effect.gen(function* () {
    const latencies: Array<number> = []
    const start = performance.now()
    yield* Effect.forEach(
      requests,
      (r) =>
        Effect.suspend(() => {
          const t = performance.now()
          return Effect.tap(send(r), () => Effect.sync(() => latencies.push(performance.now() - t)))
        }),
      { concurrency: IN_FLIGHT, discard: true }
    )
    const seconds = (performance.now() - start) / 1000
    latencies.sort((a, b) => a - b)
    return {
      count: requests.length,
      perSecond: requests.length / seconds,
      p50Millis: percentile(latencies, 0.5),
      p99Millis: percentile(latencies, 0.99)
    } satisfies LoadResult
  })

/** The same server in this process with the in-memory store: no SQLite, but the client shares its thread. */
const inProcessMemoryServer = Effect.gen(function* () {
  const dataDir = yield* dataDirectory
  const config = BootstrapConfig.layer({ host: "127.0.0.1", port: 0, dataDir, rateLimitPerMinute: 0 })
  const context = yield* Layer.build(serverLayer.pipe(Layer.provide(Layer.merge(config, BootstrapStore.layerMemory))))
  return yield* Effect.provide(serverUrl, context)
})

const run = (server: Effect.Effect<string, BootstrapBenchFailed | unknown, Scope.Scope>) =>
  Effect.gen(function* () {
    const url = yield* server
    const client = yield* HttpApiClient.make(BootstrapApi, { baseUrl: url })
    const now = Date.now()
    const registrations = Array.from({ length: REGISTRATIONS }, (_, i) =>
      registration(generateKeys(), now + (i % 1000))
    )
    const peers = Array.from({ length: HEARTBEAT_PEERS }, () => generateKeys())
    const rounds = Math.ceil(HEARTBEATS / HEARTBEAT_PEERS)
    // per peer, each heartbeat later than the last (the server refuses replays)
    const heartbeats = Array.from({ length: rounds }, (_, r) => peers.map((p) => heartbeat(p, now + 1 + r))).flat()
    const fail = (what: string) => (e: unknown) => new BootstrapBenchFailed({ detail: `${what}: ${String(e)}` })

    // warm-up: JIT, SQLite pages, connections
    yield* load(registrations.slice(0, 200), (r) => client.bootstrap.register({ payload: r })).pipe(
      Effect.mapError(fail("warm-up"))
    )
    const register = yield* load(registrations.slice(200), (r) => client.bootstrap.register({ payload: r })).pipe(
      Effect.mapError(fail("registration"))
    )
    yield* load(
      peers.map((p) => registration(p, now)),
      (r) => client.bootstrap.register({ payload: r })
    ).pipe(Effect.mapError(fail("heartbeat peers")))
    const beat = yield* load(heartbeats, (h) => client.bootstrap.heartbeat({ payload: h })).pipe(
      Effect.mapError(fail("heartbeat"))
    )
    return { register, heartbeat: beat, registeredPeers: REGISTRATIONS + HEARTBEAT_PEERS }
  }).pipe(Effect.scoped, Effect.provide(FetchHttpClient.layer))

/**
 * `sqlite`: the bootstrap program in a child process (the figure to report); `memory`: the server in this process with
 * the in-memory store, to show how much of the time is the database.
 */
export const bootstrapBench = Effect.gen(function* () {
  const sqlite = yield* run(spawnServer)
  const memory = yield* run(inProcessMemoryServer)
  return { sqlite, memory }
})

const line = (name: string, r: LoadResult) =>
  `${name}: ${r.perSecond.toFixed(0)}/s, p50 ${r.p50Millis.toFixed(2)} ms, p99 ${r.p99Millis.toFixed(2)} ms`

/** One line per figure. */
export const describe = (r: Effect.Effect.Success<typeof bootstrapBench>) => [
  line(`registrations (SQLite, child process, ${IN_FLIGHT} in flight)`, r.sqlite.register),
  line(`heartbeats    (SQLite, child process, ${IN_FLIGHT} in flight)`, r.sqlite.heartbeat),
  line(`registrations (memory store, same process as the client)`, r.memory.register),
  line(`heartbeats    (memory store, same process as the client)`, r.memory.heartbeat)
]

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (isMain) {
  Effect.runPromiseExit(
    Effect.flatMap(bootstrapBench, (r) => Console.log([...describe(r), JSON.stringify(r)].join("\n")))
  ).then((exit) => {
    if (exit._tag === "Failure") {
      process.stderr.write(`bootstrap benchmark failed: ${Cause.pretty(exit.cause)}\n`)
      process.exitCode = 1
    }
  })
}
