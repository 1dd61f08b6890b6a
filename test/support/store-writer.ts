/**
 * Writes to a BootstrapStore (SQLite file P2P_STORE_FILE) in a loop, for the crash test of bootstrap-store.test.ts:
 * each iteration registers a peer and records a signature, and prints `{"peer":id}` / `{"signature":hash}` only once
 * that write has returned. The parent SIGKILLs it mid-loop.
 */
import { Clock, Effect } from "effect"
import { createHash } from "node:crypto"
import { BootstrapStore } from "../../src/layers/BootstrapStore.js"
const say = (o: unknown) => Effect.sync(() => process.stdout.write(JSON.stringify(o) + "\n"))

/** The loop ends by itself after this many iterations (the parent kills it long before). */
const MAX_ITERATIONS = 100_000

const program = Effect.gen(function* () {
  const store = yield* BootstrapStore
  yield* say({ ready: true })
  for (let i = 0; i < MAX_ITERATIONS; i++) {
    const now = yield* Clock.currentTimeMillis
    const id = `peer-${i}`
    yield* store.upsertPeer({
      id,
      address: `198.51.100.${i % 250}`,
      port: 9000 + (i % 1000),
      publicKey: Buffer.from(id).toString("base64"),
      registeredAt: now,
      lastSeenAt: now
    })
    yield* say({ peer: id })
    const taskJson = JSON.stringify({ task: i })
    const hash = createHash("sha256").update(taskJson).digest("hex")
    yield* store.recordSignature({ hash, signature: `sig-${i}`, taskJson, keyFingerprint: "writer", signedAt: now })
    yield* say({ signature: hash })
  }
})

Effect.runPromise(program.pipe(Effect.provide(BootstrapStore.layerSqlite(process.env.P2P_STORE_FILE!)))).then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(String(e) + "\n")
    process.exit(1)
  }
)
