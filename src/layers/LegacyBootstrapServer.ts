/**
 * Legacy mode of the bootstrap server: the original P2PNet (.NET) API, `/api/Bootstrap/*` (reference spec §8.4),
 * served beside our own API when `legacy` is on, so unmodified .NET clients can bootstrap from us. It behaves as an
 * original server in trustless mode, with fixes that do not change the wire: the peer is registered at the request's
 * source address, not the IP written in the body (B26); peers are keyed by source address and identifier (B28); the
 * requester is not listed to itself; bad bodies get a 400 with a message instead of an empty 500.
 * Legacy peers live in memory (LegacyBootstrapRegistry), apart from our own peers, whose lists they never join.
 */
import type { HttpApp } from "@effect/platform"
import { HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Clock, Context, Duration, Effect, Either, Layer } from "effect"
import type { LegacyTime } from "../schema/legacy/index.js"
import {
  CollectionSharePacket,
  DataTransmissionPacket,
  decodeLegacyPacket,
  decodeLegacyTask,
  encodeLegacyJson,
  encodeLegacyTask,
  LegacyDataType,
  legacyDateTime,
  legacyOrigin,
  legacyTaskBytes,
  legacyTaskHash,
  LegacyTaskType,
  LegacyNetworkTask,
  PureMessagePacket,
  unwrapData,
  wrapData
} from "../schema/legacy/index.js"
import {
  LEGACY_PEER_LIST_DATA,
  LEGACY_TRUSTLESS_VERIFY_MESSAGE,
  LegacyBootstrapPaths,
  legacyHeartbeatMessages
} from "../schema/legacyBootstrap.js"

// ---------------------------------------------------------------------------------------------------------------------
// The registry of legacy peers
// ---------------------------------------------------------------------------------------------------------------------

/** A .NET client that registered through `/api/Bootstrap/peers`. */
export interface LegacyPeerRecord {
  /** The source address of its request (B26), not the IP it wrote. */
  readonly address: string
  /** Its TCP listening port (`IdentifierPacket.Data`). */
  readonly port: number
  /** Its `SourceOriginIdentifier`, free text (`""` by default in the original). */
  readonly identifier: string
  readonly registeredAt: number
  readonly lastSeenAt: number
}

export interface LegacyRegistryOptions {
  /** A peer without a registration or heartbeat for this long is dropped (the original: 30 min). */
  readonly idleExpiry: Duration.DurationInput
  /** At most this many peers; registering one more drops the least recently seen. Default 10 000. */
  readonly maxPeers?: number
  /** At most this many tasks wait per peer; older ones are dropped first. Default 100. */
  readonly maxTasksPerPeer?: number
}

export class LegacyBootstrapRegistry extends Context.Tag("effect-p2pnet/LegacyBootstrapRegistry")<
  LegacyBootstrapRegistry,
  {
    /** Registers or refreshes (same address and identifier) a peer. */
    readonly register: (peer: { address: string; port: number; identifier: string }) => Effect.Effect<void>
    /** Up to `limit` peers other than the given one, most recently seen first. */
    readonly sample: (
      excluding: { address: string; identifier: string },
      limit: number
    ) => Effect.Effect<ReadonlyArray<LegacyPeerRecord>>
    /** Marks the peer seen; false when it is not registered (or expired). */
    readonly touch: (address: string, identifier: string) => Effect.Effect<boolean>
    /** Every registered peer, least recently seen first. */
    readonly list: Effect.Effect<ReadonlyArray<LegacyPeerRecord>>
    /** Queues a task for every registered peer with this identifier; returns how many got it. */
    readonly enqueue: (identifier: string, task: LegacyNetworkTask) => Effect.Effect<number>
    /** Removes and returns the peer's queued tasks, oldest first. */
    readonly take: (address: string, identifier: string) => Effect.Effect<ReadonlyArray<LegacyNetworkTask>>
  }
>() {
  static readonly layer = (options: LegacyRegistryOptions) => Layer.sync(this, () => makeRegistry(options))
}

interface Entry {
  record: LegacyPeerRecord
  tasks: Array<LegacyNetworkTask>
}

const keyOf = (address: string, identifier: string) => `${address}\u0000${identifier}`

/** A Map in least-recently-seen order (refreshing deletes and re-inserts), so expiry and eviction look at the front. */
const makeRegistry = (options: LegacyRegistryOptions) => {
  const entries = new Map<string, Entry>()
  const idle = Duration.toMillis(Duration.decode(options.idleExpiry))
  const maxPeers = Math.max(1, options.maxPeers ?? 10_000)
  const maxTasks = Math.max(1, options.maxTasksPerPeer ?? 100)
  const expire = (now: number) => {
    for (const [key, entry] of entries) {
      if (now - entry.record.lastSeenAt < idle) break
      entries.delete(key)
    }
  }
  const withNow = <A>(f: (now: number) => A) =>
    Effect.map(Clock.currentTimeMillis, (now) => {
      expire(now)
      return f(now)
    })
  return LegacyBootstrapRegistry.of({
    register: (peer) =>
      withNow((now) => {
        const key = keyOf(peer.address, peer.identifier)
        const known = entries.get(key)
        entries.delete(key)
        entries.set(key, {
          record: { ...peer, registeredAt: known?.record.registeredAt ?? now, lastSeenAt: now },
          tasks: known?.tasks ?? []
        })
        if (entries.size > maxPeers) entries.delete(entries.keys().next().value as string)
      }),
    sample: (excluding, limit) =>
      withNow(() => {
        const skip = keyOf(excluding.address, excluding.identifier)
        const out: Array<LegacyPeerRecord> = []
        for (const [key, entry] of [...entries].reverse()) {
          if (out.length >= limit) break
          if (key !== skip) out.push(entry.record)
        }
        return out
      }),
    touch: (address, identifier) =>
      withNow((now) => {
        const key = keyOf(address, identifier)
        const entry = entries.get(key)
        if (entry === undefined) return false
        entries.delete(key)
        entries.set(key, { ...entry, record: { ...entry.record, lastSeenAt: now } })
        return true
      }),
    list: withNow(() => [...entries.values()].map((e) => e.record)),
    enqueue: (identifier, task) =>
      withNow(() => {
        let n = 0
        for (const entry of entries.values()) {
          if (entry.record.identifier !== identifier) continue
          entry.tasks.push(task)
          if (entry.tasks.length > maxTasks) entry.tasks.shift()
          n++
        }
        return n
      }),
    take: (address, identifier) =>
      withNow(() => {
        const entry = entries.get(keyOf(address, identifier))
        if (entry === undefined) return []
        return entry.tasks.splice(0, entry.tasks.length)
      })
  })
}

// ---------------------------------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------------------------------

export interface LegacyRoutesOptions {
  /** The caller's address (the TCP source address, or a trusted proxy's X-Forwarded-For). */
  readonly addressOf: (request: HttpServerRequest.HttpServerRequest) => string
  /** The server's rate limiter; fails when the address made too many requests of this kind. */
  readonly limit: (kind: string, address: string) => Effect.Effect<void, { readonly message: string }>
  /** Counts a served registration or heartbeat (the server's request counters). */
  readonly count?: (kind: "register" | "heartbeat") => Effect.Effect<void>
  /** Peers per list handed out. */
  readonly peerListSize: number
}

/** A refusal: status and the message the client gets (in a PureMessagePacket, as the original's error answers). */
class Refusal {
  constructor(
    readonly status: number,
    readonly reason: string
  ) {}
}

const encoder = new TextEncoder()
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false })
const JSON_UTF8 = "application/json; charset=utf-8"
/** The server's own identifier: the original server's `PeerNetwork.Identifier` is `""`. */
const SERVER_IDENTIFIER = ""

const legacyJson = (json: string, status = 200) => HttpServerResponse.text(json, { status, contentType: JSON_UTF8 })

const messageResponse = (message: string, time: LegacyTime, status: number) =>
  legacyJson(
    encodeLegacyJson(new PureMessagePacket({ Message: message, ...legacyOrigin(SERVER_IDENTIFIER, time) })),
    status
  )

const refuse = (status: number, reason: string) => Either.left(new Refusal(status, reason))

type Answer = Either.Either<HttpServerResponse.HttpServerResponse, Refusal>

/** The request body as a DataTransmissionPacket with data; a Refusal names what is wrong. */
const readPacket = (body: string, what: string) =>
  Either.gen(function* () {
    const packet = yield* Either.mapLeft(
      decodeLegacyPacket("DataTransmit", body),
      (e) => new Refusal(400, `${what}: the body is not a DataTransmissionPacket (${e.message})`)
    )
    if (packet._tag !== "DataTransmissionPacket" || packet.Data === null) {
      return yield* refuse(400, `${what}: the DataTransmissionPacket has no Data`)
    }
    return { packet, data: packet.Data }
  })

const decodeUtf8 = (bytes: Uint8Array, what: string) =>
  Either.try({ try: () => utf8.decode(bytes), catch: () => new Refusal(400, `${what}: Data is not UTF-8`) })

/**
 * A task with its `Signature`: the MD5 hash of the task without it, bare, as the original writes when it has no key
 * to sign with (§8.6). We have no PGP key, so this is the only form we can give.
 */
const withHashSignature = (task: LegacyNetworkTask) => {
  const { Signature: _, ...data } = task.TaskData ?? {}
  const unsigned = new LegacyNetworkTask({ TaskType: task.TaskType, TaskData: data })
  return new LegacyNetworkTask({ TaskType: task.TaskType, TaskData: { ...data, Signature: legacyTaskHash(unsigned) } })
}

/** Which legacy endpoint a path is (case-insensitive, as ASP.NET routes; a trailing slash allowed). */
const routeOf = (url: string): keyof typeof LegacyBootstrapPaths | undefined => {
  const path = (url.split("?")[0] ?? "").replace(/\/$/, "").toLowerCase()
  for (const [name, p] of Object.entries(LegacyBootstrapPaths)) {
    if (p.toLowerCase() === path) return name as keyof typeof LegacyBootstrapPaths
  }
  return undefined
}

/**
 * The legacy routes as a middleware around the server's app: requests to `/api/Bootstrap/*` are answered here, all
 * others pass through. Install it inside the server's guard, so the body limit and error bodies apply.
 */
export const legacyRoutes = (options: LegacyRoutesOptions) =>
  Effect.map(LegacyBootstrapRegistry, (registry) => {
    const count = options.count ?? (() => Effect.void)

    const peers = (address: string, body: string, time: LegacyTime): Effect.Effect<Answer> =>
      Effect.gen(function* () {
        const what = "invalid bootstrap request"
        const parsed = Either.gen(function* () {
          const { data, packet } = yield* readPacket(body, what)
          const inner = yield* Either.mapLeft(
            unwrapData(packet.DataType, data),
            (e) => new Refusal(400, `${what}: ${e.message}`)
          )
          const identity = yield* Either.mapLeft(
            decodeLegacyPacket("Identity", yield* decodeUtf8(inner, what)),
            (e) => new Refusal(400, `${what}: Data is not an IdentifierPacket (${e.message})`)
          )
          if (identity._tag !== "IdentifierPacket") return yield* refuse(400, `${what}: not an IdentifierPacket`)
          if (identity.Data < 1 || identity.Data > 65535) {
            return yield* refuse(400, `${what}: Data (the listening port) must be 1 to 65535, got ${identity.Data}`)
          }
          const identifier = identity.SourceOriginIdentifier ?? ""
          if (identifier.length > 256) {
            return yield* refuse(400, `${what}: SourceOriginIdentifier is over 256 characters`)
          }
          return { port: identity.Data, identifier, writtenIp: identity.IP }
        })
        if (Either.isLeft(parsed)) return Either.left(parsed.left)
        const { identifier, port, writtenIp } = parsed.right
        yield* registry.register({ address, port, identifier })
        yield* count("register")
        yield* Effect.logInfo("legacy peer registered").pipe(
          Effect.annotateLogs({ address, port, identifier, ...(writtenIp !== address ? { writtenIp } : {}) })
        )
        const others = yield* registry.sample({ address, identifier }, options.peerListSize)
        const list = new CollectionSharePacket({
          Data: LEGACY_PEER_LIST_DATA,
          peers: others.map((p) => ({ Port: p.port, Address: p.address, Identifier: p.identifier })),
          ...legacyOrigin(SERVER_IDENTIFIER, time)
        })
        // untagged, as the original trustless server answers: the .NET client does not unwrap this one (B21)
        const answer = new DataTransmissionPacket({
          Data: encoder.encode(encodeLegacyJson(list)),
          DataType: LegacyDataType.MiscData,
          ...legacyOrigin(SERVER_IDENTIFIER, time)
        })
        return Either.right(legacyJson(encodeLegacyJson(answer)))
      })

    const heartbeat = (address: string, body: string, time: LegacyTime): Effect.Effect<Answer> =>
      Effect.gen(function* () {
        const what = legacyHeartbeatMessages.invalidPacket
        const parsed = Either.gen(function* () {
          const { data, packet } = yield* readPacket(body, what)
          const invalidTask = (detail: string) => new Refusal(400, `${legacyHeartbeatMessages.invalidTask} (${detail})`)
          const inner = yield* Either.mapLeft(unwrapData("Task", data), (e) => invalidTask(e.message))
          const task = yield* Either.mapLeft(decodeLegacyTask(inner), (e) => invalidTask(e.message))
          if (task.TaskType !== LegacyTaskType.Heartbeat) {
            return yield* Either.left(invalidTask(`expected TaskType 15 (Heartbeat), got ${task.TaskType}`))
          }
          return packet.SourceOriginIdentifier ?? ""
        })
        if (Either.isLeft(parsed)) return Either.left(parsed.left)
        const identifier = parsed.right
        if (!(yield* registry.touch(address, identifier))) {
          return refuse(404, legacyHeartbeatMessages.unknownClient(identifier))
        }
        yield* count("heartbeat")
        const queued = yield* registry.take(address, identifier)
        const entries: Record<string, string> = {}
        queued.forEach((task, i) => {
          entries[`Task_${i}`] = encodeLegacyTask(withHashSignature(task))
        })
        const response = withHashSignature(
          new LegacyNetworkTask({ TaskType: LegacyTaskType.HeartbeatResponse, TaskData: entries })
        )
        // tagged, as the original: the .NET client unwraps heartbeat answers
        const answer = new DataTransmissionPacket({
          Data: wrapData("Task", legacyTaskBytes(response)),
          DataType: LegacyDataType.Task,
          ...legacyOrigin(SERVER_IDENTIFIER, time)
        })
        return Either.right(legacyJson(encodeLegacyJson(answer)))
      })

    const verifyHash = (body: string, time: LegacyTime): Answer =>
      Either.map(readPacket(body, "invalid verifyhash request"), () =>
        messageResponse(LEGACY_TRUSTLESS_VERIFY_MESSAGE, time, 200)
      )

    return (app: HttpApp.Default): HttpApp.Default =>
      Effect.gen(function* () {
        const request = yield* HttpServerRequest.HttpServerRequest
        const route = routeOf(request.url)
        if (route === undefined) return yield* app
        const address = options.addressOf(request)
        const time = legacyDateTime(yield* Clock.currentTimeMillis)
        const wanted = route === "publicIp" ? "GET" : "PUT"
        const answered = yield* Effect.gen(function* (): Effect.fn.Return<Answer> {
          if (request.method !== wanted && !(route === "publicIp" && request.method === "HEAD")) {
            return refuse(405, `${request.method} is not allowed here; use ${wanted}`)
          }
          if (route === "publicIp") {
            return Either.right(HttpServerResponse.text(address, { contentType: "text/plain; charset=utf-8" }))
          }
          const limited = yield* Effect.either(options.limit(`legacy-${route}`, address))
          if (Either.isLeft(limited)) return refuse(429, limited.left.message)
          const body = yield* Effect.either(
            Effect.mapError(request.text, (e) => {
              const detail = String((e.cause as Error | undefined)?.message ?? e.description ?? e.message)
              return detail.includes("maxBytes")
                ? new Refusal(413, "the body is larger than this server accepts")
                : new Refusal(400, `the body could not be read: ${detail}`)
            })
          )
          if (Either.isLeft(body)) return Either.left(body.left)
          if (route === "peers") return yield* peers(address, body.right, time)
          if (route === "heartbeat") return yield* heartbeat(address, body.right, time)
          return verifyHash(body.right, time)
        })
        if (Either.isRight(answered)) return answered.right
        const { reason, status } = answered.left
        yield* Effect.logWarning("legacy bootstrap request refused").pipe(
          Effect.annotateLogs({ path: request.url, method: request.method, address, status, reason })
        )
        const response = messageResponse(reason, time, status)
        return status === 405 ? HttpServerResponse.setHeader(response, "allow", wanted) : response
      })
  })
