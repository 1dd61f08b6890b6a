/**
 * BootstrapStore: one behaviour suite run against the in-memory store and the SQLite store (a fresh database file in
 * a temporary directory per test); then what only SQLite has: data that outlives the process, durability settings
 * that hold on every connection, and no acknowledged write lost to a SIGKILL of a real writer process.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Exit, Layer, Option, Queue } from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { BootstrapStore } from "../src/layers/BootstrapStore.js"
import type { PeerRecord, StoreError } from "../src/layers/BootstrapStore.js"
import { sqliteClient } from "../src/layers/BootstrapStoreSql.js"
import { spawnScript } from "./support/child.js"

const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "p2p-store-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const peer = (id: string, at: number, overrides: Partial<PeerRecord> = {}): PeerRecord => ({
  id,
  address: "203.0.113.7",
  port: 8523,
  publicKey: `key-of-${id}`,
  registeredAt: at,
  lastSeenAt: at,
  ...overrides
})

const ids = (peers: ReadonlyArray<{ readonly id: string }>) => peers.map((p) => p.id)
const range = (n: number) => Array.from({ length: n }, (_, i) => i)

type Store = BootstrapStore["Type"]
/** How a suite gets a fresh, empty store for one test (its resources live in the test's scope). */
type Fresh = Effect.Effect<Layer.Layer<BootstrapStore, StoreError>, never, Scope.Scope>

const behaviour = (name: string, fresh: Fresh) =>
  describe(`BootstrapStore (${name})`, () => {
    const withStore = <A, E>(body: (store: Store) => Effect.Effect<A, E>) =>
      Effect.flatMap(fresh, (layer) => Effect.provide(Effect.flatMap(BootstrapStore, body), layer))

    it.scoped(
      "upsert registers a peer; registering again updates address, port, key and last-seen, not registeredAt",
      () =>
        withStore((store) =>
          Effect.gen(function* () {
            yield* store.upsertPeer(peer("a", 1_000))
            assert.deepStrictEqual(yield* store.getPeer("a"), Option.some(peer("a", 1_000)))
            yield* store.upsertPeer(
              peer("a", 5_000, { address: "198.51.100.1", port: 9000, publicKey: "new-key", lastSeenAt: 6_000 })
            )
            assert.deepStrictEqual(
              yield* store.getPeer("a"),
              Option.some(
                peer("a", 1_000, { address: "198.51.100.1", port: 9000, publicKey: "new-key", lastSeenAt: 6_000 })
              )
            )
            assert.strictEqual(yield* store.countPeers, 1)
            assert.isTrue(Option.isNone(yield* store.getPeer("nobody")))
          })
        )
    )

    it.scoped("touch sets last-seen of a registered peer and answers false for an unknown one", () =>
      withStore((store) =>
        Effect.gen(function* () {
          yield* store.upsertPeer(peer("a", 1_000))
          assert.isTrue(yield* store.touchPeer("a", 2_500))
          assert.isFalse(yield* store.touchPeer("nobody", 2_500))
          assert.deepStrictEqual(yield* store.getPeer("a"), Option.some(peer("a", 1_000, { lastSeenAt: 2_500 })))
          assert.strictEqual(yield* store.countPeers, 1)
        })
      )
    )

    it.scoped("a sample excludes the requester and holds at most `limit` peers", () =>
      withStore((store) =>
        Effect.gen(function* () {
          yield* Effect.forEach(["a", "b", "c", "d", "e"], (id, i) => store.upsertPeer(peer(id, i)))
          assert.sameMembers(ids(yield* store.samplePeers({ excluding: "a", limit: 10 })), ["b", "c", "d", "e"])
          assert.sameMembers(ids(yield* store.samplePeers({ limit: 10 })), ["a", "b", "c", "d", "e"])
          assert.sameMembers(ids(yield* store.samplePeers({ excluding: "nobody", limit: 10 })), [
            "a",
            "b",
            "c",
            "d",
            "e"
          ])
          const two = yield* store.samplePeers({ excluding: "c", limit: 2 })
          assert.strictEqual(two.length, 2)
          assert.notInclude(ids(two), "c")
          assert.deepStrictEqual(yield* store.samplePeers({ limit: 0 }), [])
          assert.deepStrictEqual(
            (yield* store.samplePeers({ excluding: "a", limit: 10 })).find((p) => p.id === "b"),
            peer("b", 1)
          )
        })
      )
    )

    it.scoped("a sample of 10 out of 50 is random: 20 samples show more than 10 distinct peers", () =>
      withStore((store) =>
        Effect.gen(function* () {
          yield* Effect.forEach(range(50), (i) => store.upsertPeer(peer(`p${i}`, i)))
          const seen = new Set<string>()
          for (let i = 0; i < 20; i++) {
            const sample = ids(yield* store.samplePeers({ excluding: "p0", limit: 10 }))
            assert.strictEqual(new Set(sample).size, 10)
            assert.notInclude(sample, "p0")
            sample.forEach((id) => seen.add(id))
          }
          // the first 10 every time would be 10; a uniform sample covers nearly all 49 (fewer than 11: p < 1e-60)
          assert.isAbove(seen.size, 10)
        })
      )
    )

    it.scoped("peers are listed in registration order, counted, and removed with their queued tasks", () =>
      withStore((store) =>
        Effect.gen(function* () {
          yield* store.upsertPeer(peer("b", 2))
          yield* store.upsertPeer(peer("a", 1))
          yield* store.upsertPeer(peer("c", 3))
          assert.deepStrictEqual(ids(yield* store.listPeers), ["a", "b", "c"])
          assert.strictEqual(yield* store.countPeers, 3)
          yield* store.enqueueTask("b", "for-b", 10)
          yield* store.enqueueTask("c", "for-c", 10)
          assert.isTrue(yield* store.removePeer("b"))
          assert.isFalse(yield* store.removePeer("b"))
          assert.deepStrictEqual(ids(yield* store.listPeers), ["a", "c"])
          assert.deepStrictEqual(yield* store.takeTasks("b"), [])
          assert.deepStrictEqual(
            (yield* store.takeTasks("c")).map((t) => t.taskJson),
            ["for-c"]
          )
        })
      )
    )

    it.scoped("expiry removes the peers last seen before the cutoff, and their queued tasks", () =>
      withStore((store) =>
        Effect.gen(function* () {
          yield* store.upsertPeer(peer("old", 1_000))
          yield* store.upsertPeer(peer("touched", 1_000))
          yield* store.upsertPeer(peer("new", 5_000))
          yield* store.touchPeer("touched", 4_000)
          yield* store.enqueueTask("old", "for-old", 1_500)
          yield* store.enqueueTask("new", "for-new", 1_500)
          assert.strictEqual(yield* store.expirePeers(3_000), 1)
          assert.deepStrictEqual(ids(yield* store.listPeers), ["touched", "new"])
          assert.deepStrictEqual(yield* store.takeTasks("old"), [])
          assert.deepStrictEqual(
            (yield* store.takeTasks("new")).map((t) => t.taskJson),
            ["for-new"]
          )
          // the cutoff is exclusive: last seen exactly at it stays
          assert.strictEqual(yield* store.expirePeers(4_000), 0)
          assert.strictEqual(yield* store.expirePeers(10_000), 2)
          assert.strictEqual(yield* store.countPeers, 0)
        })
      )
    )

    it.scoped("queued tasks are taken oldest first, by their peer only, and only once", () =>
      withStore((store) =>
        Effect.gen(function* () {
          yield* store.upsertPeer(peer("a", 1))
          yield* store.upsertPeer(peer("b", 1))
          yield* store.enqueueTask("a", "a1", 100)
          yield* store.enqueueTask("b", "b1", 101)
          yield* store.enqueueTask("a", "a2", 102)
          yield* store.enqueueTask("a", "a3", 103)
          const taken = yield* store.takeTasks("a")
          assert.deepStrictEqual(
            taken.map((t) => [t.peer, t.taskJson, t.createdAt]),
            [
              ["a", "a1", 100],
              ["a", "a2", 102],
              ["a", "a3", 103]
            ]
          )
          assert.isTrue(taken[0]!.seq < taken[1]!.seq && taken[1]!.seq < taken[2]!.seq)
          assert.deepStrictEqual(yield* store.takeTasks("a"), [])
          yield* store.enqueueTask("a", "a4", 104)
          const later = yield* store.takeTasks("a")
          assert.deepStrictEqual(
            later.map((t) => t.taskJson),
            ["a4"]
          )
          assert.isAbove(later[0]!.seq, taken[2]!.seq)
          assert.deepStrictEqual(
            (yield* store.takeTasks("b")).map((t) => t.taskJson),
            ["b1"]
          )
        })
      )
    )

    it.scoped("concurrent takes and enqueues hand out every task exactly once", () =>
      withStore((store) =>
        Effect.gen(function* () {
          yield* store.upsertPeer(peer("a", 1))
          const enqueued = range(60).map((i) => `t${i}`)
          const [, takes] = yield* Effect.all(
            [
              Effect.forEach(enqueued, (t, i) => store.enqueueTask("a", t, i), { concurrency: 6 }),
              Effect.forEach(range(20), () => store.takeTasks("a"), { concurrency: 6 })
            ],
            { concurrency: 2 }
          )
          const handedOut = [...takes.flat(), ...(yield* store.takeTasks("a"))].map((t) => t.taskJson)
          assert.strictEqual(handedOut.length, enqueued.length)
          assert.sameMembers(handedOut, enqueued)
          // each take is in queue order
          for (const take of takes) {
            assert.deepStrictEqual(
              take.map((t) => t.seq),
              take.map((t) => t.seq).sort((x, y) => x - y)
            )
          }
        })
      )
    )

    it.scoped("a task for all queues one task per registered peer, built for that peer", () =>
      withStore((store) =>
        Effect.gen(function* () {
          assert.strictEqual(yield* store.enqueueTaskForAll((p) => `to ${p}`, 10), 0)
          yield* Effect.forEach(["a", "b", "c"], (id) => store.upsertPeer(peer(id, 1)))
          yield* store.enqueueTask("b", "earlier", 5)
          assert.strictEqual(yield* store.enqueueTaskForAll((p) => `block x, told to ${p}`, 10), 3)
          assert.deepStrictEqual(
            (yield* store.takeTasks("a")).map((t) => [t.taskJson, t.createdAt]),
            [["block x, told to a", 10]]
          )
          assert.deepStrictEqual(
            (yield* store.takeTasks("b")).map((t) => t.taskJson),
            ["earlier", "block x, told to b"]
          )
          assert.deepStrictEqual(
            (yield* store.takeTasks("c")).map((t) => t.taskJson),
            ["block x, told to c"]
          )
        })
      )
    )

    it.scoped("a task for all is all or nothing: a failure building one peer's task queues none", () =>
      withStore((store) =>
        Effect.gen(function* () {
          yield* Effect.forEach(["a", "b", "c"], (id) => store.upsertPeer(peer(id, 1)))
          const exit = yield* Effect.exit(
            store.enqueueTaskForAll((p) => {
              if (p === "c") throw new Error("cannot sign")
              return `to ${p}`
            }, 10)
          )
          assert.isTrue(Exit.isFailure(exit))
          assert.deepStrictEqual(yield* store.takeTasks("a"), [])
          assert.deepStrictEqual(yield* store.takeTasks("b"), [])
        })
      )
    )

    it.scoped("signatures are found by hash and listed newest first, up to the limit", () =>
      withStore((store) =>
        Effect.gen(function* () {
          const sig = (hash: string, signedAt: number) => ({
            hash,
            signature: `sig-${hash}`,
            taskJson: `{"task":"${hash}"}`,
            keyFingerprint: "00ff",
            signedAt
          })
          yield* store.recordSignature(sig("h2", 200))
          yield* store.recordSignature(sig("h1", 100))
          yield* store.recordSignature(sig("h3", 300))
          assert.deepStrictEqual(yield* store.findSignature("h1"), Option.some(sig("h1", 100)))
          assert.isTrue(Option.isNone(yield* store.findSignature("unknown")))
          assert.deepStrictEqual(
            (yield* store.listSignatures(10)).map((s) => s.hash),
            ["h3", "h2", "h1"]
          )
          assert.deepStrictEqual(
            (yield* store.listSignatures(2)).map((s) => s.hash),
            ["h3", "h2"]
          )
          // the same bytes signed again: one record, the latest
          yield* store.recordSignature({ ...sig("h1", 400), keyFingerprint: "rotated" })
          assert.deepStrictEqual(
            (yield* store.listSignatures(10)).map((s) => [s.hash, s.keyFingerprint]),
            [
              ["h1", "rotated"],
              ["h3", "00ff"],
              ["h2", "00ff"]
            ]
          )
        })
      )
    )

    it.scoped("the audit log is listed newest first, up to the limit", () =>
      withStore((store) =>
        Effect.gen(function* () {
          yield* store.recordAudit({ at: 100, action: "login", detail: "from 127.0.0.1" })
          yield* store.recordAudit({ at: 200, action: "block", detail: "peer x" })
          yield* store.recordAudit({ at: 200, action: "disconnect", detail: "peer y" })
          yield* store.recordAudit({ at: 150, action: "rotate-key", detail: "" })
          assert.deepStrictEqual(
            (yield* store.listAudit(10)).map((a) => a.action),
            ["disconnect", "block", "rotate-key", "login"]
          )
          assert.deepStrictEqual(yield* store.listAudit(1), [{ at: 200, action: "disconnect", detail: "peer y" }])
        })
      )
    )

    it.scoped("settings are read back, replaced, and absent until set", () =>
      withStore((store) =>
        Effect.gen(function* () {
          assert.isTrue(Option.isNone(yield* store.getSetting("keyPath")))
          yield* store.setSetting("keyPath", "/data/keys/a")
          yield* store.setSetting("keyPath", "/data/keys/b")
          yield* store.setSetting("adminTokenHash", "abc")
          assert.deepStrictEqual(yield* store.getSetting("keyPath"), Option.some("/data/keys/b"))
          assert.deepStrictEqual(yield* store.getSetting("adminTokenHash"), Option.some("abc"))
        })
      )
    )
  })

behaviour("memory", Effect.succeed(BootstrapStore.layerMemory))
behaviour(
  "sqlite",
  Effect.map(tempDir, (dir) => BootstrapStore.layerSqlite(path.join(dir, "data", "bootstrap.db")))
)

const writerEntry = path.resolve(import.meta.dirname, "support", "store-writer.ts")

/** A guard on a wait: a hang becomes a failure. */
const within = <A, E>(wait: Effect.Effect<A, E>): Effect.Effect<A> =>
  wait.pipe(Effect.timeout("60 seconds"), Effect.orDie)

describe("BootstrapStore (sqlite file)", () => {
  it.scoped("what was written is there after the database is closed and opened again", () =>
    Effect.gen(function* () {
      const file = path.join(yield* tempDir, "bootstrap.db")
      yield* Effect.gen(function* () {
        const store = yield* BootstrapStore
        yield* store.upsertPeer(peer("a", 1_000))
        yield* store.enqueueTask("a", "queued", 1_100)
        yield* store.recordSignature({ hash: "h", signature: "s", taskJson: "{}", keyFingerprint: "f", signedAt: 1 })
        yield* store.recordAudit({ at: 2, action: "login", detail: "" })
        yield* store.setSetting("keyPath", "/k")
      }).pipe(Effect.provide(BootstrapStore.layerSqlite(file)))
      yield* Effect.gen(function* () {
        const store = yield* BootstrapStore
        assert.deepStrictEqual(yield* store.getPeer("a"), Option.some(peer("a", 1_000)))
        assert.deepStrictEqual(
          (yield* store.takeTasks("a")).map((t) => t.taskJson),
          ["queued"]
        )
        assert.isTrue(Option.isSome(yield* store.findSignature("h")))
        assert.strictEqual((yield* store.listAudit(10)).length, 1)
        assert.deepStrictEqual(yield* store.getSetting("keyPath"), Option.some("/k"))
      }).pipe(Effect.provide(BootstrapStore.layerSqlite(file)))
    })
  )

  it.scoped("every connection runs in WAL mode with synchronous FULL, also the ones opened after a transaction", () =>
    Effect.gen(function* () {
      const file = path.join(yield* tempDir, "bootstrap.db")
      yield* Effect.gen(function* () {
        const store = yield* BootstrapStore
        const sql = yield* SqlClient.SqlClient
        const settings = Effect.map(Effect.all([sql`PRAGMA journal_mode`, sql`PRAGMA synchronous`]), ([[j], [s]]) => [
          j?.journal_mode,
          s?.synchronous
        ])
        assert.deepStrictEqual(yield* settings, ["wal", 2])
        yield* store.upsertPeer(peer("a", 1))
        // the libsql client hands its connection to a transaction and opens a new one for what follows
        assert.strictEqual(yield* store.enqueueTaskForAll(() => "t", 2), 1)
        assert.deepStrictEqual(yield* settings, ["wal", 2])
      }).pipe(Effect.provide(BootstrapStore.layerSql.pipe(Layer.provideMerge(sqliteClient(file)))))
    })
  )

  it.scoped("a file that cannot be a database fails with a StoreError naming the step", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      fs.writeFileSync(path.join(dir, "a-file"), "not a directory")
      const underFile = yield* Effect.flip(
        Effect.provide(BootstrapStore, BootstrapStore.layerSqlite(path.join(dir, "a-file", "bootstrap.db")))
      )
      assert.strictEqual(underFile._tag, "StoreError")
      assert.strictEqual(underFile.operation, "open")
      const aDirectory = yield* Effect.flip(Effect.provide(BootstrapStore, BootstrapStore.layerSqlite(dir)))
      assert.strictEqual(aDirectory._tag, "StoreError")
      assert.strictEqual(aDirectory.operation, "open")
    })
  )

  it.scoped(
    "no acknowledged registration or signature is lost when the writing process is SIGKILLed",
    () =>
      Effect.gen(function* () {
        const file = path.join(yield* tempDir, "bootstrap.db")
        const writer = yield* spawnScript(writerEntry, { P2P_STORE_FILE: file })
        const peers: Array<string> = []
        const signatures: Array<string> = []
        const record = (line: Record<string, any>) => {
          if (typeof line.peer === "string") peers.push(line.peer)
          if (typeof line.signature === "string") signatures.push(line.signature)
        }
        // kill it in the middle of its loop, after 300 acknowledged writes
        yield* within(
          Effect.iterate(0, {
            while: (n) => n < 300,
            body: (n) =>
              Effect.map(Queue.take(writer.lines), (line) => {
                record(line)
                return "ready" in line ? n : n + 1
              })
          })
        )
        yield* within(writer.kill)
        Chunk.forEach(yield* Queue.takeAll(writer.lines), record)

        yield* Effect.gen(function* () {
          const store = yield* BootstrapStore
          const missingPeers = yield* Effect.filter(peers, (id) => Effect.map(store.getPeer(id), Option.isNone))
          const missingSignatures = yield* Effect.filter(signatures, (hash) =>
            Effect.map(store.findSignature(hash), Option.isNone)
          )
          assert.deepStrictEqual(missingPeers, [])
          assert.deepStrictEqual(missingSignatures, [])
          assert.isAtLeast(peers.length + signatures.length, 300)
          // and the database is usable after the crash
          yield* store.upsertPeer(peer("after-restart", 1))
          assert.isAtLeast(yield* store.countPeers, peers.length + 1)
        }).pipe(Effect.provide(BootstrapStore.layerSqlite(file)))
      }),
    120_000
  )
})
