/**
 * The bootstrap server: the handlers of BootstrapApi (schema/bootstrap.ts) built with HttpApiBuilder, served by the
 * Node HTTP server with the OpenAPI document (/openapi.json), a docs page (/docs) and the dashboard's static files.
 * Peers are registered under their verified identity and the TCP source address (B26); admin endpoints need the admin
 * token (B25); every failure answers with a JSON body naming the problem (never an empty 500). State lives in the
 * BootstrapStore; signing in the BootstrapAuthority.
 */
import {
  HttpApiBuilder,
  HttpApiScalar,
  HttpIncomingMessage,
  HttpServer,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import type { HttpApp } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Cause, Clock, Config, Context, Effect, Encoding, Layer, Option, Redacted, Ref, Schema, Duration } from "effect"
import * as crypto from "node:crypto"
import * as http from "node:http"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { BootstrapMode, RegisterRequest, SignedTask, TaskWire } from "../schema/bootstrap.js"
import {
  AdminAuth,
  BootstrapApi,
  heartbeatBytes,
  IdMismatch,
  InternalError,
  InvalidSignature,
  LengthRequired,
  MalformedRequest,
  NotFound,
  PayloadTooLarge,
  PeerBlocked,
  RateLimited,
  registrationBytes,
  SignedTask as SignedTaskSchema,
  StaleRequest,
  Unauthorized,
  UnknownPeer,
  WrongNetwork
} from "../schema/bootstrap.js"
import type { NodeId } from "../schema/ids.js"
import type { TaskType } from "../schema/packets.js"
import { BootstrapAuthority } from "./BootstrapAuthority.js"
import type { StoreError } from "./BootstrapStore.js"
import { BootstrapStore } from "./BootstrapStore.js"
import { LegacyBootstrapRegistry, legacyRoutes } from "./LegacyBootstrapServer.js"
import { nodeIdFromPublicKey, verifySignature } from "./NodeIdentity.js"

// ---------------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------------

export interface BootstrapSettings {
  readonly mode: BootstrapMode
  readonly network: string
  readonly host: string
  /** 0 picks a free port. */
  readonly port: number
  readonly dataDir: string
  readonly privateKeyFile: string
  readonly publicKeyFile: string
  /** From configuration; when absent one is generated at first start (its hash kept in the store) and printed once. */
  readonly adminToken: Option.Option<Redacted.Redacted<string>>
  readonly peerListSize: number
  readonly idleExpiry: Duration.Duration
  readonly expiryCheckInterval: Duration.Duration
  /** Addresses whose X-Forwarded-For is believed (reverse proxies); nobody else's is. */
  readonly trustedProxies: ReadonlyArray<string>
  readonly maxBodyBytes: number
  /** Registrations (and, separately, heartbeats) per minute per source address; 0 turns rate limiting off. */
  readonly rateLimitPerMinute: number
  /** Requests an address may make at once before the per-minute rate applies. */
  readonly rateLimitBurst: number
  /** How far a request's sentAt may be from the server clock. */
  readonly maxClockSkew: Duration.Duration
  /** Directory of the dashboard's static files. */
  readonly dashboardDir: string
  /** Also serve the original P2PNet (.NET) API, `/api/Bootstrap/*` (LegacyBootstrapServer.ts); off by default. */
  readonly legacy: boolean
}

const here = path.dirname(fileURLToPath(import.meta.url))
export const DEFAULT_DASHBOARD_DIR = path.resolve(here, "../programs/dashboard")

/** The defaults, with key paths inside the data directory. */
export const bootstrapSettings = (
  overrides: Partial<BootstrapSettings> & { readonly dataDir?: string } = {}
): BootstrapSettings => {
  const dataDir = overrides.dataDir ?? "./bootstrap-data"
  return {
    mode: "trustless",
    network: "p2pnet",
    host: "0.0.0.0",
    port: 8080,
    adminToken: Option.none(),
    peerListSize: 100,
    idleExpiry: Duration.minutes(30),
    expiryCheckInterval: Duration.seconds(60),
    trustedProxies: [],
    maxBodyBytes: 64 * 1024,
    rateLimitPerMinute: 120,
    rateLimitBurst: 30,
    maxClockSkew: Duration.minutes(5),
    dashboardDir: DEFAULT_DASHBOARD_DIR,
    legacy: false,
    ...overrides,
    dataDir,
    privateKeyFile: overrides.privateKeyFile ?? path.join(dataDir, "authority-key.pem"),
    publicKeyFile: overrides.publicKeyFile ?? path.join(dataDir, "authority-key.pub.pem")
  }
}

const int = (name: string, fallback: number) =>
  Config.integer(name).pipe(
    Config.validate({ message: `${name} must be 0 or more`, validation: (n) => n >= 0 }),
    Config.withDefault(fallback)
  )

/** BOOTSTRAP_* variables (README.md, "Bootstrap server"); unset ones take the defaults of `bootstrapSettings`. */
export const BootstrapSettingsConfig: Config.Config<BootstrapSettings> = Config.all({
  mode: Config.literal("trustless", "authority")("BOOTSTRAP_MODE").pipe(Config.withDefault("trustless" as const)),
  network: Config.string("BOOTSTRAP_NETWORK").pipe(Config.withDefault("p2pnet")),
  host: Config.string("BOOTSTRAP_HOST").pipe(Config.withDefault("0.0.0.0")),
  port: Config.integer("BOOTSTRAP_PORT").pipe(
    Config.validate({ message: "BOOTSTRAP_PORT must be 0 to 65535", validation: (n) => n >= 0 && n <= 65535 }),
    Config.withDefault(8080)
  ),
  dataDir: Config.string("BOOTSTRAP_DATA_DIR").pipe(Config.withDefault("./bootstrap-data")),
  privateKeyFile: Config.option(Config.string("BOOTSTRAP_PRIVATE_KEY_FILE")),
  publicKeyFile: Config.option(Config.string("BOOTSTRAP_PUBLIC_KEY_FILE")),
  adminToken: Config.option(Config.redacted("BOOTSTRAP_ADMIN_TOKEN")),
  peerListSize: int("BOOTSTRAP_PEER_LIST_SIZE", 100),
  idleExpirySeconds: int("BOOTSTRAP_IDLE_EXPIRY_SECONDS", 1800),
  expiryCheckSeconds: int("BOOTSTRAP_EXPIRY_CHECK_SECONDS", 60),
  trustedProxies: Config.array(Config.string(), "BOOTSTRAP_TRUSTED_PROXIES").pipe(Config.withDefault([])),
  maxBodyBytes: int("BOOTSTRAP_MAX_BODY_BYTES", 64 * 1024),
  rateLimitPerMinute: int("BOOTSTRAP_RATE_LIMIT_PER_MINUTE", 120),
  rateLimitBurst: int("BOOTSTRAP_RATE_LIMIT_BURST", 30),
  maxClockSkewSeconds: int("BOOTSTRAP_MAX_CLOCK_SKEW_SECONDS", 300),
  dashboardDir: Config.string("BOOTSTRAP_DASHBOARD_DIR").pipe(Config.withDefault(DEFAULT_DASHBOARD_DIR)),
  legacy: Config.boolean("BOOTSTRAP_LEGACY").pipe(Config.withDefault(false))
}).pipe(
  Config.map((c) =>
    bootstrapSettings({
      mode: c.mode,
      network: c.network,
      host: c.host,
      port: c.port,
      dataDir: c.dataDir,
      ...Option.match(c.privateKeyFile, { onNone: () => ({}), onSome: (privateKeyFile) => ({ privateKeyFile }) }),
      ...Option.match(c.publicKeyFile, { onNone: () => ({}), onSome: (publicKeyFile) => ({ publicKeyFile }) }),
      adminToken: Option.filter(c.adminToken, (t) => Redacted.value(t) !== ""),
      peerListSize: c.peerListSize,
      idleExpiry: Duration.seconds(c.idleExpirySeconds),
      expiryCheckInterval: Duration.seconds(Math.max(1, c.expiryCheckSeconds)),
      trustedProxies: c.trustedProxies.map((p) => p.trim()).filter((p) => p !== ""),
      maxBodyBytes: c.maxBodyBytes,
      rateLimitPerMinute: c.rateLimitPerMinute,
      rateLimitBurst: c.rateLimitBurst,
      maxClockSkew: Duration.seconds(c.maxClockSkewSeconds),
      dashboardDir: c.dashboardDir,
      legacy: c.legacy
    })
  )
)

export class BootstrapConfig extends Context.Tag("effect-p2pnet/BootstrapConfig")<
  BootstrapConfig,
  BootstrapSettings
>() {
  static readonly layer = (overrides: Partial<BootstrapSettings> = {}) =>
    Layer.succeed(this, bootstrapSettings(overrides))
  static readonly layerConfig = Layer.effect(this, BootstrapSettingsConfig)
}

// ---------------------------------------------------------------------------------------------------------------------
// Admin token: configured, or generated once and kept as a hash
// ---------------------------------------------------------------------------------------------------------------------

const sha256 = (text: string) => crypto.createHash("sha256").update(text, "utf8").digest()

export class AdminToken extends Context.Tag("effect-p2pnet/BootstrapAdminToken")<
  AdminToken,
  {
    /** SHA-256 of the token. */
    readonly hash: Uint8Array
    /** The token generated at this start (first start without a configured token): print it once. */
    readonly generated: Option.Option<Redacted.Redacted<string>>
    /** Constant-time check of a presented token (B25: on the server, never in the browser). */
    readonly check: (token: string) => boolean
  }
>() {
  static readonly layer = Layer.effect(
    this,
    Effect.gen(function* () {
      const settings = yield* BootstrapConfig
      const store = yield* BootstrapStore
      let generated = Option.none<Redacted.Redacted<string>>()
      let hash: Uint8Array
      if (Option.isSome(settings.adminToken)) {
        hash = sha256(Redacted.value(settings.adminToken.value))
        yield* store.setSetting("admin.tokenHash", Buffer.from(hash).toString("hex"))
      } else {
        const stored = yield* store.getSetting("admin.tokenHash")
        if (Option.isSome(stored) && /^[0-9a-f]{64}$/.test(stored.value)) {
          hash = Buffer.from(stored.value, "hex")
        } else {
          const token = crypto.randomBytes(32).toString("base64url")
          hash = sha256(token)
          yield* store.setSetting("admin.tokenHash", Buffer.from(hash).toString("hex"))
          generated = Option.some(Redacted.make(token))
        }
      }
      const expected = Buffer.from(hash)
      return AdminToken.of({
        hash,
        generated,
        check: (token) => token !== "" && crypto.timingSafeEqual(sha256(token), expected)
      })
    })
  )
}

// ---------------------------------------------------------------------------------------------------------------------
// Per-request state: rate limits, replay guard, counters
// ---------------------------------------------------------------------------------------------------------------------

/** Entries kept by the rate limiter and the replay guard; the oldest are dropped beyond this. */
const MAX_TRACKED = 100_000

interface Bucket {
  readonly tokens: number
  readonly at: number
}

export interface RequestCounters {
  readonly register: number
  readonly heartbeat: number
  readonly rejected: number
  readonly rateLimited: number
}

class ServerState extends Context.Tag("effect-p2pnet/BootstrapServerState")<
  ServerState,
  {
    readonly startedAt: number
    /** Takes a token of `kind` for `address`, or fails with RateLimited. */
    readonly limit: (kind: string, address: string) => Effect.Effect<void, RateLimited>
    /** Refuses a sentAt far from the clock, or not later than the last one of the same peer and kind (replays). */
    readonly fresh: (kind: string, id: string, sentAt: number) => Effect.Effect<void, StaleRequest>
    readonly count: (key: keyof RequestCounters) => Effect.Effect<void>
    readonly counters: Effect.Effect<RequestCounters>
  }
>() {
  static readonly layer = Layer.effect(
    this,
    Effect.gen(function* () {
      const settings = yield* BootstrapConfig
      const startedAt = yield* Clock.currentTimeMillis
      const buckets = new Map<string, Bucket>()
      const lastSentAt = new Map<string, number>()
      const counters = yield* Ref.make<RequestCounters>({ register: 0, heartbeat: 0, rejected: 0, rateLimited: 0 })
      const count = (key: keyof RequestCounters) => Ref.update(counters, (c) => ({ ...c, [key]: c[key] + 1 }))
      const remember = <V>(map: Map<string, V>, key: string, value: V) => {
        map.delete(key)
        map.set(key, value)
        if (map.size > MAX_TRACKED) map.delete(map.keys().next().value as string)
      }
      const perMilli = settings.rateLimitPerMinute / 60_000
      const burst = Math.max(1, settings.rateLimitBurst)
      const skew = Duration.toMillis(settings.maxClockSkew)
      return ServerState.of({
        startedAt,
        limit: (kind, address) =>
          settings.rateLimitPerMinute === 0
            ? Effect.void
            : Effect.flatMap(Clock.currentTimeMillis, (now) => {
                const key = `${kind} ${address}`
                const old = buckets.get(key)
                const tokens = old === undefined ? burst : Math.min(burst, old.tokens + (now - old.at) * perMilli)
                if (tokens < 1) {
                  remember(buckets, key, { tokens, at: now })
                  return Effect.zipRight(
                    count("rateLimited"),
                    Effect.fail(RateLimited.of(Math.ceil((1 - tokens) / perMilli / 1000)))
                  )
                }
                remember(buckets, key, { tokens: tokens - 1, at: now })
                return Effect.void
              }),
        fresh: (kind, id, sentAt) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            if (Math.abs(now - sentAt) > skew) {
              return Effect.fail(StaleRequest.of(sentAt, now, `more than ${skew} ms from the server clock`))
            }
            const key = `${kind} ${id}`
            const last = lastSentAt.get(key)
            if (last !== undefined && sentAt <= last) {
              return Effect.fail(
                StaleRequest.of(sentAt, now, `not later than this peer's last request (${last}): a replay`)
              )
            }
            remember(lastSentAt, key, sentAt)
            return Effect.void
          }),
        count,
        counters: Ref.get(counters)
      })
    })
  )
}

// ---------------------------------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------------------------------

const normalize = (address: string) => (address.startsWith("::ffff:") ? address.slice(7) : address)

/**
 * The client's address: the TCP source address; when that is a trusted proxy, the right-most X-Forwarded-For entry that
 * is not a trusted proxy (entries left of it could be written by the client itself).
 */
export const clientAddress = (request: HttpServerRequest.HttpServerRequest, trustedProxies: ReadonlyArray<string>) => {
  const source = normalize(Option.getOrElse(request.remoteAddress, () => "unknown"))
  if (!trustedProxies.includes(source)) return source
  const forwarded = (request.headers["x-forwarded-for"] ?? "")
    .split(",")
    .map((s) => normalize(s.trim()))
    .filter((s) => s !== "")
  for (let i = forwarded.length - 1; i >= 0; i--) {
    if (!trustedProxies.includes(forwarded[i]!)) return forwarded[i]!
  }
  return forwarded[0] ?? source
}

// ---------------------------------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------------------------------

const internal = (e: StoreError) => new InternalError({ message: e.message })
const decodeSignedTask = Schema.decodeUnknownEither(Schema.parseJson(SignedTaskSchema))

const signatureOk = (publicKeyBase64: string, data: Uint8Array, signatureBase64: string) => {
  const key = Encoding.decodeBase64(publicKeyBase64)
  const signature = Encoding.decodeBase64(signatureBase64)
  return key._tag === "Right" && signature._tag === "Right" && verifySignature(key.right, data, signature.right)
}

const BootstrapHandlers = HttpApiBuilder.group(BootstrapApi, "bootstrap", (handlers) =>
  Effect.gen(function* () {
    const settings = yield* BootstrapConfig
    const store = yield* BootstrapStore
    const authority = yield* BootstrapAuthority
    const state = yield* ServerState
    const addressOf = (request: HttpServerRequest.HttpServerRequest) => clientAddress(request, settings.trustedProxies)

    const register = Effect.fn("BootstrapServer.register")(function* ({
      payload,
      request
    }: {
      readonly payload: RegisterRequest
      readonly request: HttpServerRequest.HttpServerRequest
    }) {
      const address = addressOf(request)
      yield* state.limit("register", address)
      if (payload.network !== settings.network) {
        return yield* WrongNetwork.of(settings.network, payload.network)
      }
      const key = Encoding.decodeBase64(payload.publicKey)
      const derived = key._tag === "Right" ? nodeIdFromPublicKey(key.right) : ""
      if (derived !== payload.id) return yield* IdMismatch.of(payload.id, derived)
      if (!signatureOk(payload.publicKey, registrationBytes(payload), payload.signature)) {
        return yield* InvalidSignature.of("the registration is not signed by the given public key")
      }
      yield* state.fresh("register", payload.id, payload.sentAt)
      if (Option.isSome(yield* Effect.mapError(store.getSetting(`blocked.${payload.id}`), internal))) {
        return yield* PeerBlocked.of(payload.id)
      }
      const now = yield* Clock.currentTimeMillis
      yield* Effect.mapError(
        store.upsertPeer({
          id: payload.id,
          address,
          port: payload.port,
          publicKey: payload.publicKey,
          registeredAt: now,
          lastSeenAt: now
        }),
        internal
      )
      yield* state.count("register")
      const peers = yield* Effect.mapError(
        store.samplePeers({ excluding: payload.id, limit: settings.peerListSize }),
        internal
      )
      const key_ = yield* authority.key
      return {
        peers: peers.map((p) => ({
          id: p.id as NodeId,
          address: p.address,
          port: p.port as never,
          publicKey: p.publicKey
        })),
        network: settings.network,
        mode: settings.mode,
        observedAddress: address,
        ...(Option.isSome(key_) ? { serverPublicKey: key_.value.publicKeyBase64 } : {}),
        idleExpirySeconds: Duration.toSeconds(settings.idleExpiry)
      }
    })

    return handlers
      .handle("register", register)
      .handle("registerPost", register)
      .handle(
        "heartbeat",
        Effect.fn("BootstrapServer.heartbeat")(function* ({ payload, request }) {
          yield* state.limit("heartbeat", addressOf(request))
          const peer = yield* Effect.mapError(store.getPeer(payload.id), internal)
          if (Option.isNone(peer)) return yield* UnknownPeer.of(payload.id)
          if (!signatureOk(peer.value.publicKey, heartbeatBytes(payload), payload.signature)) {
            return yield* InvalidSignature.of("the heartbeat is not signed by the registered key")
          }
          yield* state.fresh("heartbeat", payload.id, payload.sentAt)
          const now = yield* Clock.currentTimeMillis
          yield* Effect.mapError(store.touchPeer(payload.id, now), internal)
          yield* state.count("heartbeat")
          const queued = yield* Effect.mapError(store.takeTasks(payload.id), internal)
          const tasks: Array<SignedTask> = []
          for (const q of queued) {
            const decoded = decodeSignedTask(q.taskJson)
            if (decoded._tag === "Right") tasks.push(decoded.right)
            else yield* Effect.logWarning("dropped an unreadable queued task").pipe(Effect.annotateLogs({ seq: q.seq }))
          }
          return { tasks }
        })
      )
      .handle("publicip", ({ request }) => Effect.succeed(addressOf(request)))
      .handle("verify", ({ payload }) =>
        Effect.map(Effect.mapError(store.findSignature(payload.hash), internal), (found) =>
          Option.match(found, {
            onNone: () => ({ hash: payload.hash, known: false }),
            onSome: (r) => ({
              hash: payload.hash,
              known: true,
              signature: r.signature,
              keyFingerprint: r.keyFingerprint,
              signedAt: r.signedAt
            })
          })
        )
      )
      .handle("info", () =>
        Effect.gen(function* () {
          const key = yield* authority.key
          return {
            network: settings.network,
            mode: settings.mode,
            ...(Option.isSome(key) ? { publicKey: key.value.publicKeyBase64, fingerprint: key.value.fingerprint } : {}),
            serverId: yield* authority.origin,
            apiVersion: 1 as const
          }
        })
      )
  })
)

const AdminHandlers = HttpApiBuilder.group(BootstrapApi, "admin", (handlers) =>
  Effect.gen(function* () {
    const settings = yield* BootstrapConfig
    const store = yield* BootstrapStore
    const authority = yield* BootstrapAuthority
    const state = yield* ServerState

    /** One task, signed once, queued for every registered peer. */
    const peerAction = (taskType: TaskType, peer: NodeId, reason: string | undefined) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const task: TaskWire = {
          id: crypto.randomUUID() as TaskWire["id"],
          taskType,
          taskData: reason === undefined ? { peer } : { peer, reason },
          origin: yield* authority.origin,
          sentAt: now
        }
        const signed = yield* authority.sign(task)
        if (taskType === "BlockAndRemovePeer") {
          // a blocked peer is forgotten and may not register again
          yield* store.setSetting(`blocked.${peer}`, String(now))
          yield* store.removePeer(peer)
        }
        const json = JSON.stringify(signed)
        const enqueued = yield* store.enqueueTaskForAll(() => json, now)
        yield* store.recordAudit({
          at: now,
          action: taskType === "BlockAndRemovePeer" ? "block" : "disconnect",
          detail: `peer ${peer}; task ${task.id} queued for ${enqueued} peers${reason === undefined ? "" : `; ${reason}`}`
        })
        return { task: signed, enqueued }
      }).pipe(Effect.mapError(internal))

    return handlers
      .handle("peers", () =>
        Effect.map(Effect.mapError(store.listPeers, internal), (peers) =>
          peers.map((p) => ({ ...p, id: p.id as NodeId, port: p.port as never }))
        )
      )
      .handle("disconnect", ({ path: { id }, payload }) => peerAction("DisconnectPeer", id, payload.reason))
      .handle("block", ({ path: { id }, payload }) => peerAction("BlockAndRemovePeer", id, payload.reason))
      .handle("signatures", ({ urlParams }) =>
        Effect.map(Effect.mapError(store.listSignatures(urlParams.limit ?? 100), internal), (rows) =>
          rows.map((r) => ({ ...r }))
        )
      )
      .handle("rotateKey", () =>
        authority.rotate.pipe(
          Effect.catchTags({
            KeyFileError: (e) => Effect.fail(new InternalError({ message: e.message })),
            StoreError: (e) => Effect.fail(internal(e))
          })
        )
      )
      .handle("status", () =>
        Effect.gen(function* () {
          const key = yield* authority.key
          const now = yield* Clock.currentTimeMillis
          return {
            network: settings.network,
            mode: settings.mode,
            ...(Option.isSome(key) ? { publicKey: key.value.publicKeyBase64, fingerprint: key.value.fingerprint } : {}),
            startedAt: state.startedAt,
            uptimeSeconds: Math.floor((now - state.startedAt) / 1000),
            peers: yield* Effect.mapError(store.countPeers, internal),
            requests: yield* state.counters
          }
        })
      )
      .handle("audit", ({ urlParams }) =>
        Effect.map(Effect.mapError(store.listAudit(urlParams.limit ?? 100), internal), (rows) =>
          rows.map((r) => ({ ...r }))
        )
      )
  })
)

const AdminAuthLive = Layer.effect(
  AdminAuth,
  Effect.map(AdminToken, (token) =>
    AdminAuth.of({
      bearer: (presented) =>
        token.check(Redacted.value(presented))
          ? Effect.void
          : Effect.fail(
              new Unauthorized({
                message:
                  Redacted.value(presented) === ""
                    ? "unauthorized: missing Authorization: Bearer <admin token>"
                    : "unauthorized: wrong admin token"
              })
            )
    })
  )
)

// ---------------------------------------------------------------------------------------------------------------------
// Dashboard files, error bodies, expiry
// ---------------------------------------------------------------------------------------------------------------------

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8"
}

/** An error outside the API's own encoding, with the same JSON body HttpApiBuilder would write. */
const errorResponse = <A, I>(schema: Schema.Schema<A, I>, error: A, status: number) =>
  HttpServerResponse.unsafeJson(Schema.encodeSync(schema)(error), { status })

const notFound = (request: HttpServerRequest.HttpServerRequest) =>
  errorResponse(NotFound, NotFound.of(request.method, request.url.split("?")[0] ?? request.url), 404)

/**
 * The dashboard loads nothing from elsewhere and runs no inline script: a strict Content-Security-Policy keeps it that
 * way (an injected `<script>` or a foreign frame is refused by the browser), and the admin token cannot leak to
 * another origin through it.
 */
const DASHBOARD_HEADERS = {
  "cache-control": "no-cache",
  "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer"
}

/** GET / and /dashboard serve index.html; /dashboard/<file> the files beside it (never outside the directory). */
const DashboardRoutes = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function* () {
    const settings = yield* BootstrapConfig
    const root = path.resolve(settings.dashboardDir)
    const serveFile = (relative: string) =>
      Effect.gen(function* () {
        const request = yield* HttpServerRequest.HttpServerRequest
        const file = path.resolve(root, relative)
        if (file !== root && !file.startsWith(root + path.sep)) return notFound(request)
        const contentType = CONTENT_TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream"
        return yield* HttpServerResponse.file(file, { contentType, headers: DASHBOARD_HEADERS }).pipe(
          Effect.catchAll(() => Effect.succeed(notFound(request)))
        )
      })
    const index = serveFile("index.html")
    yield* router.get("/", index)
    yield* router.get("/dashboard", index)
    yield* router.get(
      "/dashboard/*",
      Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
        const encoded = (request.url.split("?")[0] ?? "").slice("/dashboard/".length)
        let rel: string
        try {
          rel = decodeURIComponent(encoded)
        } catch {
          return Effect.succeed(notFound(request))
        }
        return serveFile(rel === "" ? "index.html" : rel)
      })
    )
  })
)

/**
 * Around the whole app: refuses bodies over the limit before reading them (413), and turns what the API's own error
 * encoding does not cover (unknown path, unreadable JSON, defects) into JSON bodies instead of empty responses.
 */
const guard =
  (maxBodyBytes: number, count: (key: keyof RequestCounters) => Effect.Effect<void>) =>
  (app: HttpApp.Default): HttpApp.Default =>
    Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      const length = Number(request.headers["content-length"] ?? "0")
      const tooLarge = errorResponse(PayloadTooLarge, PayloadTooLarge.of(maxBodyBytes), 413)
      if (length > maxBodyBytes) return yield* Effect.as(count("rejected"), tooLarge)
      // bodies are small JSON: a chunked body (no length) is refused before reading, so an oversized one cannot cut
      // the connection mid-way (the size limit below still guards anything else)
      if (request.headers["transfer-encoding"] !== undefined && request.headers["content-length"] === undefined) {
        const e = new LengthRequired({
          message: "send the body with a Content-Length header (chunked bodies are refused)"
        })
        return yield* Effect.as(count("rejected"), errorResponse(LengthRequired, e, 411))
      }
      const response = yield* app.pipe(
        HttpIncomingMessage.withMaxBodySize(Option.some(maxBodyBytes)),
        Effect.catchAllCause((cause) => {
          if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause)
          const error = Cause.squash(cause)
          // typed failures of the API are encoded by HttpApiBuilder with their status
          const failure = Cause.failureOption(cause)
          if (Option.isSome(failure) && !HttpServerError.isServerError(failure.value)) {
            return Effect.zipRight(count("rejected"), Effect.failCause(cause))
          }
          if (HttpServerResponse.isServerResponse(error)) return Effect.succeed(error)
          if (HttpServerError.isServerError(error)) {
            if (error._tag === "RouteNotFound") return Effect.succeed(notFound(request))
            if (error._tag === "RequestError") {
              const detail = String((error.cause as Error | undefined)?.message ?? error.description ?? error.message)
              if (detail.includes("maxBytes exceeded")) {
                return Effect.succeed(tooLarge)
              }
              const e = MalformedRequest.of(`the body could not be read as JSON: ${detail}`)
              return Effect.succeed(errorResponse(MalformedRequest, e, 400))
            }
          }
          const e = new InternalError({ message: "internal error: unexpected failure; see the server log" })
          return Effect.as(Effect.logError("request failed", cause), errorResponse(InternalError, e, 500))
        })
      )
      if (response.status >= 400) yield* count("rejected")
      return response
    })

/** Drops registrations idle longer than the idle expiry, every check interval (Clock-driven, so TestClock moves it). */
const ExpiryLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const settings = yield* BootstrapConfig
    const store = yield* BootstrapStore
    const sweep = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const removed = yield* store.expirePeers(now - Duration.toMillis(settings.idleExpiry))
      if (removed > 0) yield* Effect.logInfo("expired idle registrations").pipe(Effect.annotateLogs({ removed }))
    }).pipe(Effect.catchAll((e) => Effect.logWarning("expiry sweep failed", e.message)))
    yield* Effect.forkScoped(Effect.forever(Effect.delay(sweep, settings.expiryCheckInterval)))
  })
)

// ---------------------------------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------------------------------

/** The authority of the configured mode and key files. */
export const authorityLayer = Layer.unwrapEffect(
  Effect.map(BootstrapConfig, (s) =>
    BootstrapAuthority.layer({ mode: s.mode, privateKeyFile: s.privateKeyFile, publicKeyFile: s.publicKeyFile })
  )
)

/** Services the handlers share, built once. */
export const serverServices = Layer.mergeAll(
  authorityLayer,
  AdminToken.layer,
  ServerState.layer,
  Layer.unwrapEffect(Effect.map(BootstrapConfig, (s) => LegacyBootstrapRegistry.layer({ idleExpiry: s.idleExpiry })))
)

/**
 * The app on a given HttpServer: the API, /openapi.json, /docs, the dashboard files and the expiry fiber. Needs the
 * BootstrapStore and BootstrapConfig; outputs the authority and the admin token (the program prints a generated one).
 */
export const httpLayer = Layer.unwrapEffect(
  Effect.gen(function* () {
    const settings = yield* BootstrapConfig
    return HttpApiBuilder.serve().pipe(
      Layer.provide(
        HttpApiBuilder.middleware(
          Effect.gen(function* () {
            const state = yield* ServerState
            const legacy = settings.legacy
              ? yield* legacyRoutes({
                  addressOf: (request) => clientAddress(request, settings.trustedProxies),
                  limit: state.limit,
                  count: state.count,
                  peerListSize: settings.peerListSize
                })
              : (app: HttpApp.Default) => app
            return (app: HttpApp.Default) => guard(settings.maxBodyBytes, state.count)(legacy(app))
          })
        )
      ),
      Layer.provide(HttpApiScalar.layer({ path: "/docs" })),
      Layer.provide(HttpApiBuilder.middlewareOpenApi()),
      Layer.provide(DashboardRoutes),
      Layer.provide(
        HttpApiBuilder.api(BootstrapApi).pipe(
          Layer.provide([BootstrapHandlers, AdminHandlers]),
          Layer.provide(AdminAuthLive)
        )
      ),
      Layer.merge(ExpiryLive)
    )
  })
).pipe(Layer.provideMerge(serverServices))

/** The whole server on Node's HTTP server at the configured host and port (0: a free one; see HttpServer.address). */
export const serverLayer = Layer.unwrapEffect(
  Effect.map(BootstrapConfig, (s) =>
    httpLayer.pipe(Layer.provideMerge(NodeHttpServer.layer(() => http.createServer(), { host: s.host, port: s.port })))
  )
)

/** The server's base URL, for 0.0.0.0 / :: as 127.0.0.1 (a connectable address). */
export const serverUrl = HttpServer.addressWith((address) =>
  Effect.succeed(
    address._tag === "TcpAddress"
      ? `http://${address.hostname === "0.0.0.0" || address.hostname === "::" ? "127.0.0.1" : address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname}:${address.port}`
      : `unix:${address.path}`
  )
)
