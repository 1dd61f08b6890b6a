/**
 * The SQL implementation of BootstrapStore (`BootstrapStore.layerSql`) and its SQLite client (`sqliteClient`, used by
 * `BootstrapStore.layerSqlite`). Queries are portable between SQLite and PostgreSQL (ON CONFLICT upserts, RETURNING,
 * ORDER BY RANDOM(), BIGINT epoch millis); only the autoincrement columns of the migration differ by dialect.
 */
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { LibsqlClient } from "@effect/sql-libsql"
import { Cause, Effect, Layer, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import type { AuditRecord, PeerRecord, QueuedTask, SigningRecord } from "./BootstrapStore.js"
import { BootstrapStore, StoreError } from "./BootstrapStore.js"

/** Where the migrator records what it ran (its own name, so the database can host other migrated schemas). */
export const MIGRATIONS_TABLE = "bootstrap_migrations"

/** Rows inserted by one statement in `enqueueTaskForAll` (3 parameters each: well under SQLite's and PostgreSQL's limits). */
const INSERT_CHUNK = 500

/** The schema, as @effect/sql migrations (run by `layerSql`; a PostgreSQL deployment can run them with PgMigrator). */
export const migrations = Migrator.fromRecord({
  "1_bootstrap_store": Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const serial = sql.onDialectOrElse({
      pg: () => sql.literal("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
      orElse: () => sql.literal("INTEGER PRIMARY KEY AUTOINCREMENT")
    })
    yield* sql`CREATE TABLE peers (
      id TEXT PRIMARY KEY,
      address TEXT NOT NULL,
      port INTEGER NOT NULL,
      public_key TEXT NOT NULL,
      registered_at BIGINT NOT NULL,
      last_seen_at BIGINT NOT NULL
    )`
    yield* sql`CREATE INDEX peers_last_seen_at ON peers (last_seen_at)`
    yield* sql`CREATE TABLE tasks (
      seq ${serial},
      peer TEXT NOT NULL,
      task_json TEXT NOT NULL,
      created_at BIGINT NOT NULL
    )`
    yield* sql`CREATE INDEX tasks_peer ON tasks (peer)`
    yield* sql`CREATE TABLE signatures (
      hash TEXT PRIMARY KEY,
      signature TEXT NOT NULL,
      task_json TEXT NOT NULL,
      key_fingerprint TEXT NOT NULL,
      signed_at BIGINT NOT NULL
    )`
    yield* sql`CREATE INDEX signatures_signed_at ON signatures (signed_at)`
    yield* sql`CREATE TABLE audit (
      id ${serial},
      at BIGINT NOT NULL,
      action TEXT NOT NULL,
      detail TEXT NOT NULL
    )`
    yield* sql`CREATE INDEX audit_at ON audit (at)`
    yield* sql`CREATE TABLE settings (
      key TEXT PRIMARY KEY,
      value TEXT NOT NULL
    )`
  })
})

const toStoreError = (operation: string) => (error: SqlError | Migrator.MigrationError) =>
  new StoreError({
    operation,
    detail: error.cause instanceof Error ? `${error.message}: ${error.cause.message}` : error.message
  })

/** Runs one store operation: SqlError becomes StoreError, and the operation gets a span. */
const op = <A>(operation: string, effect: Effect.Effect<A, SqlError>): Effect.Effect<A, StoreError> =>
  effect.pipe(Effect.mapError(toStoreError(operation)), Effect.withSpan(`BootstrapStore.${operation}`))

// BIGINT columns come back as numbers from SQLite and as strings from PostgreSQL: `Number` reads both.
type Row = Record<string, unknown>
const peerOf = (r: Row): PeerRecord => ({
  id: String(r.id),
  address: String(r.address),
  port: Number(r.port),
  publicKey: String(r.public_key),
  registeredAt: Number(r.registered_at),
  lastSeenAt: Number(r.last_seen_at)
})
const taskOf = (r: Row): QueuedTask => ({
  seq: Number(r.seq),
  peer: String(r.peer),
  taskJson: String(r.task_json),
  createdAt: Number(r.created_at)
})
const signatureOf = (r: Row): SigningRecord => ({
  hash: String(r.hash),
  signature: String(r.signature),
  taskJson: String(r.task_json),
  keyFingerprint: String(r.key_fingerprint),
  signedAt: Number(r.signed_at)
})
const auditOf = (r: Row): AuditRecord => ({ at: Number(r.at), action: String(r.action), detail: String(r.detail) })

const wholeLimit = (limit: number) => Math.max(0, Math.floor(limit))

/** Runs the migrations, then builds the store over the SqlClient of the context. */
export const makeSql = Effect.gen(function* () {
  yield* Migrator.make({})({ loader: migrations, table: MIGRATIONS_TABLE }).pipe(
    Effect.mapError(toStoreError("migrate"))
  )
  const sql = yield* SqlClient.SqlClient
  const peerColumns = sql.literal("id, address, port, public_key, registered_at, last_seen_at")
  const signatureColumns = sql.literal("hash, signature, task_json, key_fingerprint, signed_at")

  return BootstrapStore.of({
    upsertPeer: (peer) =>
      op(
        "upsertPeer",
        sql`INSERT INTO peers (id, address, port, public_key, registered_at, last_seen_at)
          VALUES (${peer.id}, ${peer.address}, ${peer.port}, ${peer.publicKey}, ${peer.registeredAt}, ${peer.lastSeenAt})
          ON CONFLICT (id) DO UPDATE SET address = excluded.address, port = excluded.port,
            public_key = excluded.public_key, last_seen_at = excluded.last_seen_at`
      ),
    touchPeer: (id, at) =>
      op(
        "touchPeer",
        Effect.map(sql`UPDATE peers SET last_seen_at = ${at} WHERE id = ${id} RETURNING id`, (rows) => rows.length > 0)
      ),
    getPeer: (id) =>
      op(
        "getPeer",
        Effect.map(sql<Row>`SELECT ${peerColumns} FROM peers WHERE id = ${id}`, (rows) =>
          Option.map(Option.fromNullable(rows[0]), peerOf)
        )
      ),
    samplePeers: ({ excluding, limit }) =>
      op(
        "samplePeers",
        Effect.map(
          sql<Row>`SELECT ${peerColumns} FROM peers
            ${excluding === undefined ? sql`` : sql`WHERE id <> ${excluding}`}
            ORDER BY RANDOM() LIMIT ${wholeLimit(limit)}`,
          (rows) => rows.map(peerOf)
        )
      ),
    listPeers: op(
      "listPeers",
      Effect.map(sql<Row>`SELECT ${peerColumns} FROM peers ORDER BY registered_at, id`, (rows) => rows.map(peerOf))
    ),
    countPeers: op(
      "countPeers",
      Effect.map(sql<Row>`SELECT COUNT(*) AS n FROM peers`, (rows) => Number(rows[0]?.n ?? 0))
    ),
    // Tasks go with their peer; a peer that registered again in between keeps the ones queued since.
    removePeer: (id) =>
      op(
        "removePeer",
        Effect.gen(function* () {
          const removed = yield* sql`DELETE FROM peers WHERE id = ${id} RETURNING id`
          yield* sql`DELETE FROM tasks WHERE peer = ${id} AND NOT EXISTS (SELECT 1 FROM peers WHERE id = ${id})`
          return removed.length > 0
        })
      ),
    // Two statements, no transaction: the second removes every task whose peer is gone, so it also clears tasks a
    // racing `enqueueTaskForAll` queued for a peer removed meanwhile, and it is idempotent if the process dies between.
    expirePeers: (before) =>
      op(
        "expirePeers",
        Effect.gen(function* () {
          const removed = yield* sql`DELETE FROM peers WHERE last_seen_at < ${before} RETURNING id`
          yield* sql`DELETE FROM tasks WHERE NOT EXISTS (SELECT 1 FROM peers WHERE peers.id = tasks.peer)`
          return removed.length
        })
      ),
    enqueueTask: (peer, taskJson, at) =>
      op("enqueueTask", sql`INSERT INTO tasks (peer, task_json, created_at) VALUES (${peer}, ${taskJson}, ${at})`),
    enqueueTaskForAll: (taskJson, at) =>
      op(
        "enqueueTaskForAll",
        sql.withTransaction(
          Effect.gen(function* () {
            const peers = yield* sql<Row>`SELECT id FROM peers ORDER BY id`
            const rows = peers.map((p) => ({ peer: String(p.id), task_json: taskJson(String(p.id)), created_at: at }))
            for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
              yield* sql`INSERT INTO tasks ${sql.insert(rows.slice(i, i + INSERT_CHUNK))}`
            }
            return rows.length
          })
        )
      ),
    // One statement, atomic on SQLite and PostgreSQL alike: two takes never hand out the same task. Not a
    // `withTransaction`: the libsql client opens a new SQLite connection for every transaction (and keeps the old
    // one, with its two file descriptors, until garbage collection): 5.5 ms instead of 0.2 ms, on every heartbeat.
    takeTasks: (peer) =>
      op(
        "takeTasks",
        Effect.map(
          sql<Row>`DELETE FROM tasks WHERE peer = ${peer} RETURNING seq, peer, task_json, created_at`,
          (rows) => rows.map(taskOf).sort((a, b) => a.seq - b.seq)
        )
      ),
    // Signing the same bytes again (same hash) keeps the latest signature, key and time.
    recordSignature: (r) =>
      op(
        "recordSignature",
        sql`INSERT INTO signatures (hash, signature, task_json, key_fingerprint, signed_at)
          VALUES (${r.hash}, ${r.signature}, ${r.taskJson}, ${r.keyFingerprint}, ${r.signedAt})
          ON CONFLICT (hash) DO UPDATE SET signature = excluded.signature, task_json = excluded.task_json,
            key_fingerprint = excluded.key_fingerprint, signed_at = excluded.signed_at`
      ),
    findSignature: (hash) =>
      op(
        "findSignature",
        Effect.map(sql<Row>`SELECT ${signatureColumns} FROM signatures WHERE hash = ${hash}`, (rows) =>
          Option.map(Option.fromNullable(rows[0]), signatureOf)
        )
      ),
    listSignatures: (limit) =>
      op(
        "listSignatures",
        Effect.map(
          sql<Row>`SELECT ${signatureColumns} FROM signatures ORDER BY signed_at DESC, hash DESC
            LIMIT ${wholeLimit(limit)}`,
          (rows) => rows.map(signatureOf)
        )
      ),
    recordAudit: (r) =>
      op("recordAudit", sql`INSERT INTO audit (at, action, detail) VALUES (${r.at}, ${r.action}, ${r.detail})`),
    listAudit: (limit) =>
      op(
        "listAudit",
        Effect.map(
          sql<Row>`SELECT at, action, detail FROM audit ORDER BY at DESC, id DESC LIMIT ${wholeLimit(limit)}`,
          (rows) => rows.map(auditOf)
        )
      ),
    getSetting: (key) =>
      op(
        "getSetting",
        Effect.map(sql<Row>`SELECT value FROM settings WHERE key = ${key}`, (rows) =>
          Option.map(Option.fromNullable(rows[0]), (r) => String(r.value))
        )
      ),
    setSetting: (key, value) =>
      op(
        "setSetting",
        sql`INSERT INTO settings (key, value) VALUES (${key}, ${value})
          ON CONFLICT (key) DO UPDATE SET value = excluded.value`
      )
  })
})

/**
 * Durability. A write is acknowledged once its statement has committed. Surviving SIGKILL of the process needs no
 * more than that (the committed pages are in the OS page cache, which outlives the process); surviving a power loss
 * or kernel crash needs the commit to be fsynced, which is `synchronous = FULL`.
 * - journal_mode: libsql's default is DELETE; WAL commits with one fsync of the log instead of several (journal and
 *   database), and recovers the log when the database is next opened. The mode is stored in the database file, so
 *   it holds for every connection.
 * - synchronous: a per-connection setting, and the libsql client opens a new connection after every transaction.
 *   Its SQLite is compiled with SQLITE_DEFAULT_SYNCHRONOUS=2 and SQLITE_DEFAULT_WAL_SYNCHRONOUS=2 (FULL), so every
 *   connection starts at FULL; we set it anyway, and refuse to open if the first connection does not report FULL (a
 *   different build).
 */
const durability = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const mode = yield* sql<Row>`PRAGMA journal_mode = WAL`
  const journal = String(mode[0]?.journal_mode ?? "").toLowerCase()
  yield* sql`PRAGMA synchronous = FULL`
  const sync = Number((yield* sql<Row>`PRAGMA synchronous`)[0]?.synchronous)
  if (journal !== "wal" || sync !== 2) {
    return yield* new StoreError({
      operation: "open",
      detail: `durability settings did not take effect (journal_mode=${journal}, synchronous=${sync})`
    })
  }
}).pipe(Effect.mapError((e) => (e._tag === "StoreError" ? e : toStoreError("open")(e))))

/**
 * A SqlClient on the SQLite database `file` (libsql), its directory created, WAL journal and synchronous FULL.
 * `BootstrapStore.layerSqlite(file)` is `layerSql` over this client.
 */
export const sqliteClient = (
  file: string
): Layer.Layer<SqlClient.SqlClient | LibsqlClient.LibsqlClient, StoreError> => {
  const absolute = path.resolve(file)
  const client = Layer.unwrapEffect(
    Effect.try({
      try: () => fs.mkdirSync(path.dirname(absolute), { recursive: true }),
      catch: (e) => new StoreError({ operation: "open", detail: `cannot create ${path.dirname(absolute)}: ${e}` })
    }).pipe(Effect.as(LibsqlClient.layer({ url: pathToFileURL(absolute).href })))
  ).pipe(
    // The libsql client throws when it cannot open the file (not a database, no permission): a defect of the layer.
    Layer.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Layer.failCause(cause as Cause.Cause<never>)
        : Layer.fail(
            Cause.failureOption(cause).pipe(
              Option.getOrElse(
                () => new StoreError({ operation: "open", detail: `${absolute}: ${Cause.squash(cause)}` })
              )
            )
          )
    )
  )
  return Layer.effectDiscard(durability).pipe(Layer.provideMerge(client))
}
