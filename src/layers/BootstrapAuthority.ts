/**
 * The bootstrap server's signing authority. In authority mode it owns an Ed25519 key pair (PEM files created with mode
 * 0600 on first start, loaded after), signs every task the server hands out over the canonical encoding of
 * schema/bootstrap.ts (`taskBytes`), records each signature in the store's signing history, and can rotate its key.
 * In trustless mode nothing is signed (tasks still carry their hash). Replaces the original's PGP/MD5 scheme (B27).
 */
import { Clock, Context, Effect, Encoding, Layer, Option, SynchronizedRef } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type { BootstrapMode, SignedTask, TaskWire } from "../schema/bootstrap.js"
import { NotAuthority, taskBytes } from "../schema/bootstrap.js"
import { KeyFileError } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import type { StoreError } from "./BootstrapStore.js"
import { BootstrapStore } from "./BootstrapStore.js"
import { keysFromPem, nodeIdFromPublicKey, verifySignature } from "./NodeIdentity.js"
import type { NodeKeys } from "./NodeIdentity.js"

/** The `origin` of tasks from a trustless server, which has no key: a NodeId no key derives to in practice. */
export const TRUSTLESS_ORIGIN = "0".repeat(40) as NodeId

export interface AuthorityOptions {
  readonly mode: BootstrapMode
  /** PKCS#8 PEM of the private key (mode 0600). */
  readonly privateKeyFile: string
  /** SPKI PEM of the public key, for operators and clients (mode 0600 too; it is public, but written alongside). */
  readonly publicKeyFile: string
}

export interface AuthorityKey {
  readonly keys: NodeKeys
  readonly publicKeyBase64: string
  /** Hex SHA-256 of the raw public key, first 16 bytes. */
  readonly fingerprint: string
}

export const fingerprintOf = (rawPublicKey: Uint8Array): string =>
  crypto.createHash("sha256").update(rawPublicKey).digest("hex").slice(0, 32)

export const taskHash = (task: TaskWire): string => crypto.createHash("sha256").update(taskBytes(task)).digest("hex")

/**
 * Checks a task handed out by an authority: the hash matches the task, and the signature is the authority's over it.
 * False for an unsigned task, or any byte of the task changed.
 */
export const verifySignedTask = (rawPublicKey: Uint8Array, signed: SignedTask): boolean => {
  if (signed.signature === undefined) return false
  const bytes = taskBytes(signed.task)
  if (crypto.createHash("sha256").update(bytes).digest("hex") !== signed.hash) return false
  const signature = Encoding.decodeBase64(signed.signature)
  return signature._tag === "Right" && verifySignature(rawPublicKey, bytes, signature.right)
}

const toAuthorityKey = (keys: NodeKeys): AuthorityKey => ({
  keys,
  publicKeyBase64: Encoding.encodeBase64(keys.publicKey),
  fingerprint: fingerprintOf(keys.publicKey)
})

const publicPem = (keys: NodeKeys) =>
  crypto.createPublicKey(keys.privateKeyPem).export({ format: "pem", type: "spki" }).toString()

/** Writes a file atomically (temp file, then rename) with mode 0600. */
const writeSecret = (file: string, text: string) => {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const tmp = `${file}.tmp-${process.pid}`
  fs.writeFileSync(tmp, text, { mode: 0o600 })
  fs.renameSync(tmp, file)
}

const keyFileError = (file: string) => (e: unknown) =>
  new KeyFileError({ path: file, detail: e instanceof Error ? e.message : String(e) })

const loadOrCreate = (options: AuthorityOptions) =>
  Effect.try({
    try: () => {
      if (fs.existsSync(options.privateKeyFile)) {
        const keys = keysFromPem(fs.readFileSync(options.privateKeyFile, "utf8"))
        if (!fs.existsSync(options.publicKeyFile)) writeSecret(options.publicKeyFile, publicPem(keys))
        return { keys, created: false }
      }
      const keys = keysFromPem(
        crypto.generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString()
      )
      writeSecret(options.privateKeyFile, keys.privateKeyPem)
      writeSecret(options.publicKeyFile, publicPem(keys))
      return { keys, created: true }
    },
    catch: keyFileError(options.privateKeyFile)
  })

export class BootstrapAuthority extends Context.Tag("effect-p2pnet/BootstrapAuthority")<
  BootstrapAuthority,
  {
    readonly mode: BootstrapMode
    /** The current key (authority mode), None in trustless mode. */
    readonly key: Effect.Effect<Option.Option<AuthorityKey>>
    /** The origin of tasks this server makes: the NodeId of its key, or TRUSTLESS_ORIGIN. */
    readonly origin: Effect.Effect<NodeId>
    /** Hashes the task and, in authority mode, signs it and records the signature (committed before it returns). */
    readonly sign: (task: TaskWire) => Effect.Effect<SignedTask, StoreError>
    /** Whether the task is signed by the current key and unchanged. */
    readonly verify: (signed: SignedTask) => Effect.Effect<boolean>
    /** A new key pair replaces the current one (the old files are kept as `*.retired-<fingerprint>`); audit-logged. */
    readonly rotate: Effect.Effect<
      { readonly publicKey: string; readonly fingerprint: string; readonly previousFingerprint: string },
      NotAuthority | KeyFileError | StoreError
    >
  }
>() {
  static readonly layer = (options: AuthorityOptions) => Layer.effect(this, make(options))
}

const make = (options: AuthorityOptions) =>
  Effect.gen(function* () {
    const store = yield* BootstrapStore
    const initial =
      options.mode === "authority"
        ? Option.some(yield* loadOrCreate(options))
        : Option.none<{ keys: NodeKeys; created: boolean }>()
    const current = yield* SynchronizedRef.make(Option.map(initial, ({ keys }) => toAuthorityKey(keys)))
    if (Option.isSome(initial)) {
      const k = toAuthorityKey(initial.value.keys)
      if (initial.value.created) {
        yield* store.recordAudit({
          at: yield* Clock.currentTimeMillis,
          action: "key-created",
          detail: `fingerprint ${k.fingerprint}`
        })
      }
      yield* store.setSetting("authority.fingerprint", k.fingerprint)
      yield* store.setSetting("authority.privateKeyFile", options.privateKeyFile)
      yield* Effect.logInfo("authority key loaded").pipe(Effect.annotateLogs({ fingerprint: k.fingerprint }))
    }

    const sign = Effect.fn("BootstrapAuthority.sign")(function* (task: TaskWire) {
      const bytes = taskBytes(task)
      const hash = crypto.createHash("sha256").update(bytes).digest("hex")
      const key = yield* SynchronizedRef.get(current)
      if (Option.isNone(key)) return { task, hash } satisfies SignedTask
      const signature = Encoding.encodeBase64(key.value.keys.sign(bytes))
      yield* store.recordSignature({
        hash,
        signature,
        taskJson: JSON.stringify(task),
        keyFingerprint: key.value.fingerprint,
        signedAt: task.sentAt
      })
      return { task, hash, signature, keyFingerprint: key.value.fingerprint } satisfies SignedTask
    })

    const rotate = SynchronizedRef.modifyEffect(current, (key) =>
      Effect.gen(function* () {
        if (Option.isNone(key)) {
          return yield* new NotAuthority({ message: "not in authority mode: a trustless server has no key to rotate" })
        }
        const previous = key.value
        const next = toAuthorityKey(
          keysFromPem(
            crypto.generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }).toString()
          )
        )
        yield* Effect.try({
          try: () => {
            const suffix = `.retired-${previous.fingerprint}`
            fs.copyFileSync(options.privateKeyFile, options.privateKeyFile + suffix)
            fs.chmodSync(options.privateKeyFile + suffix, 0o600)
            writeSecret(options.privateKeyFile, next.keys.privateKeyPem)
            writeSecret(options.publicKeyFile, publicPem(next.keys))
          },
          catch: keyFileError(options.privateKeyFile)
        })
        yield* store.setSetting("authority.fingerprint", next.fingerprint)
        yield* store.recordAudit({
          at: yield* Clock.currentTimeMillis,
          action: "rotate-key",
          detail: `${previous.fingerprint} -> ${next.fingerprint}`
        })
        const result = {
          publicKey: next.publicKeyBase64,
          fingerprint: next.fingerprint,
          previousFingerprint: previous.fingerprint
        }
        return [result, Option.some(next)] as const
      })
    )

    return BootstrapAuthority.of({
      mode: options.mode,
      key: SynchronizedRef.get(current),
      origin: Effect.map(SynchronizedRef.get(current), (k) =>
        Option.match(k, { onNone: () => TRUSTLESS_ORIGIN, onSome: (a) => nodeIdFromPublicKey(a.keys.publicKey) })
      ),
      sign,
      verify: (signed) =>
        Effect.map(SynchronizedRef.get(current), (k) =>
          Option.match(k, { onNone: () => false, onSome: (a) => verifySignedTask(a.keys.publicKey, signed) })
        ),
      rotate
    })
  })
