/**
 * BootstrapStore: what a bootstrap server keeps across restarts (registered peers and when they were last seen, tasks
 * queued for them, the signing history, the admin audit log, and small settings such as where the key pair lives).
 * The SQL implementation (SqlClient from @effect/sql, SQLite through @effect/sql-libsql by default, portable SQL so a
 * PostgreSQL client can replace it) is the default; every write is committed before the call returns.
 */
import { Chunk, Context, Effect, Layer, Option, Random, Ref, Schema } from "effect"
import type { SqlClient } from "@effect/sql/SqlClient"
import { makeSql, sqliteClient } from "./BootstrapStoreSql.js"

export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `bootstrap store: ${this.operation} failed: ${this.detail}`
  }
}

/** A registered peer: its verified identity and the address the server saw it connect from. */
export interface PeerRecord {
  readonly id: string
  readonly address: string
  readonly port: number
  /** Base64 of the raw Ed25519 public key the registration was signed with. */
  readonly publicKey: string
  readonly registeredAt: number
  readonly lastSeenAt: number
}

/** A task waiting for its peer's next heartbeat: its JSON as it will be handed out (signed in authority mode). */
export interface QueuedTask {
  readonly seq: number
  readonly peer: string
  readonly taskJson: string
  readonly createdAt: number
}

/** One signature the server made. */
export interface SigningRecord {
  /** Hex SHA-256 of the canonical encoding that was signed. */
  readonly hash: string
  /** Base64 Ed25519 signature. */
  readonly signature: string
  readonly taskJson: string
  /** Fingerprint of the key that signed (hex SHA-256 of the raw public key, first 16 bytes). */
  readonly keyFingerprint: string
  readonly signedAt: number
}

export interface AuditRecord {
  readonly at: number
  readonly action: string
  readonly detail: string
}

export class BootstrapStore extends Context.Tag("effect-p2pnet/BootstrapStore")<
  BootstrapStore,
  {
    /** Inserts or replaces a peer (same id: address, port, key and lastSeenAt are updated; registeredAt kept). */
    readonly upsertPeer: (peer: PeerRecord) => Effect.Effect<void, StoreError>
    /** Sets lastSeenAt; false when the peer is not registered. */
    readonly touchPeer: (id: string, at: number) => Effect.Effect<boolean, StoreError>
    readonly getPeer: (id: string) => Effect.Effect<Option.Option<PeerRecord>, StoreError>
    /** Up to `limit` peers other than `excluding`, a random sample when more are registered. */
    readonly samplePeers: (options: {
      readonly excluding?: string
      readonly limit: number
    }) => Effect.Effect<ReadonlyArray<PeerRecord>, StoreError>
    readonly listPeers: Effect.Effect<ReadonlyArray<PeerRecord>, StoreError>
    readonly countPeers: Effect.Effect<number, StoreError>
    readonly removePeer: (id: string) => Effect.Effect<boolean, StoreError>
    /** Removes peers last seen before `before` (and their queued tasks); returns how many. */
    readonly expirePeers: (before: number) => Effect.Effect<number, StoreError>
    readonly enqueueTask: (peer: string, taskJson: string, at: number) => Effect.Effect<void, StoreError>
    /** Queues one task for every registered peer (one transaction); returns how many peers got it. */
    readonly enqueueTaskForAll: (taskJson: (peer: string) => string, at: number) => Effect.Effect<number, StoreError>
    /** Removes and returns the peer's queued tasks, oldest first, atomically (two takes never share a task). */
    readonly takeTasks: (peer: string) => Effect.Effect<ReadonlyArray<QueuedTask>, StoreError>
    readonly recordSignature: (record: SigningRecord) => Effect.Effect<void, StoreError>
    readonly findSignature: (hash: string) => Effect.Effect<Option.Option<SigningRecord>, StoreError>
    /** Newest first. */
    readonly listSignatures: (limit: number) => Effect.Effect<ReadonlyArray<SigningRecord>, StoreError>
    readonly recordAudit: (record: AuditRecord) => Effect.Effect<void, StoreError>
    /** Newest first. */
    readonly listAudit: (limit: number) => Effect.Effect<ReadonlyArray<AuditRecord>, StoreError>
    readonly getSetting: (key: string) => Effect.Effect<Option.Option<string>, StoreError>
    readonly setSetting: (key: string, value: string) => Effect.Effect<void, StoreError>
  }
>() {
  /**
   * Over the SqlClient of the context (SQLite or PostgreSQL); runs the migrations first.
   *
   * @example
   * const store = BootstrapStore.layerSql.pipe(Layer.provide(PgClient.layer({ url: Redacted.make(url) })))
   */
  static readonly layerSql: Layer.Layer<BootstrapStore, StoreError, SqlClient> = Layer.effect(
    this,
    Effect.suspend(() => makeSql)
  )
  /**
   * A SQLite database file (created with its directory), through @effect/sql-libsql, in WAL mode with
   * synchronous=FULL: a write that returned survives SIGKILL and power loss (see BootstrapStoreSql.ts).
   *
   * @example
   * const store = BootstrapStore.layerSqlite(path.join(dataDirectory, "bootstrap.db"))
   */
  static readonly layerSqlite = (file: string): Layer.Layer<BootstrapStore, StoreError> =>
    this.layerSql.pipe(Layer.provide(sqliteClient(file)))
  /** In memory, same behaviour as the SQL store (for tests of the components that use it). */
  static readonly layerMemory: Layer.Layer<BootstrapStore> = Layer.effect(
    this,
    Effect.suspend(() => makeMemory)
  )
}

interface MemoryState {
  readonly peers: ReadonlyMap<string, PeerRecord>
  readonly tasks: ReadonlyArray<QueuedTask>
  readonly nextSeq: number
  readonly signatures: ReadonlyMap<string, SigningRecord>
  readonly audit: ReadonlyArray<AuditRecord>
  readonly settings: ReadonlyMap<string, string>
}

const byRegistration = (a: PeerRecord, b: PeerRecord) =>
  a.registeredAt - b.registeredAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
const newestSignatureFirst = (a: SigningRecord, b: SigningRecord) =>
  b.signedAt - a.signedAt || (a.hash < b.hash ? 1 : a.hash > b.hash ? -1 : 0)
const wholeLimit = (limit: number) => Math.max(0, Math.floor(limit))

/** Every operation is one `Ref.modify` (or `get`): atomic, like the SQL statements and transactions it mirrors. */
const makeMemory = Effect.gen(function* () {
  const state = yield* Ref.make<MemoryState>({
    peers: new Map(),
    tasks: [],
    nextSeq: 1,
    signatures: new Map(),
    audit: [],
    settings: new Map()
  })

  return BootstrapStore.of({
    upsertPeer: (peer) =>
      Ref.update(state, (s) => {
        const known = s.peers.get(peer.id)
        const peers = new Map(s.peers)
        peers.set(peer.id, known === undefined ? peer : { ...peer, registeredAt: known.registeredAt })
        return { ...s, peers }
      }),
    touchPeer: (id, at) =>
      Ref.modify(state, (s) => {
        const known = s.peers.get(id)
        if (known === undefined) return [false, s]
        const peers = new Map(s.peers)
        peers.set(id, { ...known, lastSeenAt: at })
        return [true, { ...s, peers }]
      }),
    getPeer: (id) => Effect.map(Ref.get(state), (s) => Option.fromNullable(s.peers.get(id))),
    samplePeers: ({ excluding, limit }) =>
      Ref.get(state).pipe(
        Effect.flatMap((s) => Random.shuffle([...s.peers.values()].filter((p) => p.id !== excluding))),
        Effect.map((peers) => Chunk.toReadonlyArray(peers).slice(0, wholeLimit(limit)))
      ),
    listPeers: Effect.map(Ref.get(state), (s) => [...s.peers.values()].sort(byRegistration)),
    countPeers: Effect.map(Ref.get(state), (s) => s.peers.size),
    removePeer: (id) =>
      Ref.modify(state, (s) => {
        if (!s.peers.has(id)) return [false, s]
        const peers = new Map(s.peers)
        peers.delete(id)
        return [true, { ...s, peers, tasks: s.tasks.filter((t) => t.peer !== id) }]
      }),
    expirePeers: (before) =>
      Ref.modify(state, (s) => {
        const peers = new Map([...s.peers].filter(([, p]) => p.lastSeenAt >= before))
        // as the SQL store: every task whose peer is not registered goes
        return [s.peers.size - peers.size, { ...s, peers, tasks: s.tasks.filter((t) => peers.has(t.peer)) }]
      }),
    enqueueTask: (peer, taskJson, createdAt) =>
      Ref.update(state, (s) => ({
        ...s,
        tasks: [...s.tasks, { seq: s.nextSeq, peer, taskJson, createdAt }],
        nextSeq: s.nextSeq + 1
      })),
    enqueueTaskForAll: (taskJson, createdAt) =>
      Ref.modify(state, (s) => {
        const ids = [...s.peers.keys()].sort()
        const queued = ids.map((peer, i) => ({ seq: s.nextSeq + i, peer, taskJson: taskJson(peer), createdAt }))
        return [ids.length, { ...s, tasks: [...s.tasks, ...queued], nextSeq: s.nextSeq + ids.length }]
      }),
    takeTasks: (peer) =>
      Ref.modify(state, (s) => {
        const taken = s.tasks.filter((t) => t.peer === peer)
        return taken.length === 0 ? [taken, s] : [taken, { ...s, tasks: s.tasks.filter((t) => t.peer !== peer) }]
      }),
    recordSignature: (record) =>
      Ref.update(state, (s) => ({ ...s, signatures: new Map(s.signatures).set(record.hash, record) })),
    findSignature: (hash) => Effect.map(Ref.get(state), (s) => Option.fromNullable(s.signatures.get(hash))),
    listSignatures: (limit) =>
      Effect.map(Ref.get(state), (s) =>
        [...s.signatures.values()].sort(newestSignatureFirst).slice(0, wholeLimit(limit))
      ),
    recordAudit: (record) => Ref.update(state, (s) => ({ ...s, audit: [...s.audit, record] })),
    listAudit: (limit) =>
      Effect.map(Ref.get(state), (s) =>
        // newest first: by time, then the later recorded (a stable sort of the reversed log)
        [...s.audit]
          .reverse()
          .sort((a, b) => b.at - a.at)
          .slice(0, wholeLimit(limit))
      ),
    getSetting: (key) => Effect.map(Ref.get(state), (s) => Option.fromNullable(s.settings.get(key))),
    setSetting: (key, value) => Ref.update(state, (s) => ({ ...s, settings: new Map(s.settings).set(key, value) }))
  })
})
