/**
 * BootstrapStore: what a bootstrap server keeps across restarts (registered peers and when they were last seen, tasks
 * queued for them, the signing history, the admin audit log, and small settings such as where the key pair lives).
 * The SQL implementation (SqlClient from @effect/sql, SQLite through @effect/sql-libsql by default, portable SQL so a
 * PostgreSQL client can replace it) is the default; every write is committed before the call returns.
 */
import { Context, Schema } from "effect"
import type { Effect, Option } from "effect"

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
    /** Removes and returns the peer's queued tasks, oldest first, in one transaction. */
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
>() {}
