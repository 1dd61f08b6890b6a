/**
 * A client of the original P2PNet (.NET) bootstrap server, `/api/Bootstrap/*` (reference spec §8.1-8.4): the request
 * bodies byte for byte as the .NET client writes them (legacy JSON, schema/legacy), and the answers read tolerantly
 * (format tags present or not, B21; trustless or authority style). Each call is one request and returns what the server
 * said; scheduling heartbeats and dialling the peers is the caller's business (the compatibility node wiring).
 *
 * Nothing is cryptographically verified: the original signs with PGP, which we do not implement. We recompute each
 * task's MD5 hash and check that a signature *names* that hash (raw-hash fallback or clear-signed text), see §8.6, B20.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { Config, Context, Duration, Effect, Either, Layer, Option, Stream } from "effect"
import * as net from "node:net"
import type { LegacyNetworkTask, LegacyTime } from "../schema/legacy/index.js"
import {
  CollectionSharePacket,
  DataTransmissionPacket,
  decodeLegacyPacket,
  decodeLegacyTask,
  encodeLegacyJson,
  IdentifierPacket,
  LegacyDataType,
  legacyDateTime,
  legacyOrigin,
  legacyTaskBytes,
  legacyTaskHash,
  LegacyTaskType,
  LegacyNetworkTask as Task,
  parseLegacyObject,
  unwrapData,
  wrapData
} from "../schema/legacy/index.js"
import type {
  LegacyBootstrapError,
  LegacyHeartbeatResult,
  LegacyHeartbeatTask,
  LegacyPeer,
  LegacyPeersResult,
  LegacySignatureKind,
  LegacyVerifyResult
} from "../schema/legacyBootstrap.js"
import {
  LEGACY_PING_MESSAGE,
  LegacyBootstrapBadStatus,
  LegacyBootstrapInvalidJson,
  LegacyBootstrapPaths,
  LegacyBootstrapRefused,
  LegacyBootstrapTimeout,
  LegacyBootstrapTooLarge,
  LegacyBootstrapUnexpectedShape,
  LegacyBootstrapUnreachable
} from "../schema/legacyBootstrap.js"

// ---------------------------------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------------------------------

export interface LegacyBootstrapClientSettings {
  /** Each request (answer read included) gives up after this long. Default 10 s (the original waits 100 s). */
  readonly requestTimeout?: Duration.DurationInput
  /** Longest answer read; a longer one fails with LegacyBootstrapTooLarge. Default 1 MiB. */
  readonly maxResponseBytes?: number
}

/** P2P_LEGACY_BOOTSTRAP_* variables; unset ones take the defaults above. */
export const LegacyBootstrapClientConfig: Config.Config<LegacyBootstrapClientSettings> = Config.all({
  requestTimeout: Config.duration("P2P_LEGACY_BOOTSTRAP_TIMEOUT").pipe(Config.withDefault(Duration.seconds(10))),
  maxResponseBytes: Config.integer("P2P_LEGACY_BOOTSTRAP_MAX_RESPONSE_BYTES").pipe(
    Config.validate({ message: "must be 1 or more", validation: (n) => n >= 1 }),
    Config.withDefault(1024 * 1024)
  )
})

/** Who this node is, as written into the IdentifierPacket of the initial request. */
export interface LegacySelf {
  /** `SourceOriginIdentifier`: the only thing the original server identifies a client by (B28). */
  readonly identifier: string
  /** `IP`: the address the original server lists us at (its own server does not check it, B26). */
  readonly ip: string
  /** `Data`: our TCP listening port. */
  readonly port: number
}

export interface LegacyRequestOptions {
  /** `SourceOriginTime` to write; default now (Clock). */
  readonly time?: LegacyTime
}

// ---------------------------------------------------------------------------------------------------------------------
// Request bodies (exported: byte-exact, the same as the .NET client's)
// ---------------------------------------------------------------------------------------------------------------------

const encoder = new TextEncoder()

/**
 * The initial request (§8.3 step 2, §1.5): a DataTransmissionPacket (DataType 2) whose Data is the IdentifierPacket
 * JSON inside `<MiscData>` tags.
 *
 * @example
 * legacyPeersRequestBody({ identifier: "peer_one", ip: "203.0.113.7", port: 8523 }, T)
 */
export const legacyPeersRequestBody = (self: LegacySelf, time: LegacyTime): string => {
  const origin = legacyOrigin(self.identifier, time)
  const identity = new IdentifierPacket({ Message: "discovery", Data: self.port, IP: self.ip, ...origin })
  const data = wrapData("MiscData", encoder.encode(encodeLegacyJson(identity)))
  return encodeLegacyJson(new DataTransmissionPacket({ Data: data, DataType: LegacyDataType.MiscData, ...origin }))
}

/** The heartbeat (§8.3, §1.5): `<Task>{"TaskType":15,"TaskData":{}}</Task>` in a DataTransmissionPacket (DataType 1). */
export const legacyHeartbeatRequestBody = (identifier: string, time: LegacyTime): string => {
  const task = new Task({ TaskType: LegacyTaskType.Heartbeat, TaskData: {} })
  const data = wrapData("Task", legacyTaskBytes(task))
  return encodeLegacyJson(
    new DataTransmissionPacket({ Data: data, DataType: LegacyDataType.Task, ...legacyOrigin(identifier, time) })
  )
}

/**
 * The verifyhash request: a RequestVerifyHashRecord (11) task `{"Hash": hash}`. Its Data is *not* tag-wrapped: the
 * original server parses Data without unwrapping, so the .NET client's tagged request always failed there (B20); ours
 * accepts both.
 */
export const legacyVerifyHashRequestBody = (hash: string, identifier: string, time: LegacyTime): string => {
  const task = new Task({ TaskType: LegacyTaskType.RequestVerifyHashRecord, TaskData: { Hash: hash } })
  return encodeLegacyJson(
    new DataTransmissionPacket({
      Data: legacyTaskBytes(task),
      DataType: LegacyDataType.Task,
      ...legacyOrigin(identifier, time)
    })
  )
}

// ---------------------------------------------------------------------------------------------------------------------
// Reading answers (exported: pure, for callers that fetch themselves)
// ---------------------------------------------------------------------------------------------------------------------

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false })
const lenient = new TextDecoder("utf-8")
const excerpt = (text: string) => (text.length > 200 ? `${text.slice(0, 200)}...` : text)

/** The server's error text, if the body is one: a PureMessagePacket by the original's rule, or an RFC 7807 problem. */
const errorMessage = (body: unknown): Option.Option<string> => {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return Option.none()
  const record = body as Record<string, unknown>
  const message = record["Message"]
  if (typeof message === "string" && message !== "" && message !== LEGACY_PING_MESSAGE) return Option.some(message)
  // the original's 400s: Results.Problem(detail: <PureMessagePacket JSON>)
  const detail = record["detail"]
  if (typeof detail === "string" && detail !== "") {
    return Either.match(parseLegacyObject("Message", detail), {
      onLeft: () => Option.some(detail),
      onRight: (inner) => Option.orElse(errorMessage(inner), () => Option.some(detail))
    })
  }
  return Option.none()
}

const parseJson = (text: string): Either.Either<unknown, string> =>
  Either.try({ try: () => JSON.parse(text) as unknown, catch: (e) => (e instanceof Error ? e.message : String(e)) })

interface Answer {
  readonly url: string
  readonly status: number
  readonly body: Uint8Array
}

/**
 * The JSON of a 2xx answer; an error message (any status) becomes LegacyBootstrapRefused, another status
 * LegacyBootstrapBadStatus. `refuseMessages: false` for endpoints whose success is itself a PureMessagePacket.
 */
const answerJson = (answer: Answer, refuseMessages = true): Either.Either<string, LegacyBootstrapError> => {
  const { status, url } = answer
  const ok = status >= 200 && status < 300
  const text = Either.mapLeft(
    Either.try(() => utf8.decode(answer.body)),
    () => "the body is not UTF-8"
  )
  const parsed = Either.flatMap(text, (t) => Either.map(parseJson(t), (value) => ({ text: t, value })))
  const message = Either.isRight(parsed) ? errorMessage(parsed.right.value) : Option.none()
  if (Option.isSome(message) && (refuseMessages || !ok)) {
    return Either.left(new LegacyBootstrapRefused({ url, status, reason: message.value }))
  }
  if (!ok) return Either.left(new LegacyBootstrapBadStatus({ url, status, body: excerpt(lenient.decode(answer.body)) }))
  return Either.mapBoth(parsed, {
    onLeft: (detail) => new LegacyBootstrapInvalidJson({ url, detail }),
    onRight: (p) => p.text
  })
}

const shape = (url: string) => (detail: string) => new LegacyBootstrapUnexpectedShape({ url, detail })

/** The DataTransmissionPacket of an answer: its data bytes and the server's identifier. */
const dataOf = (
  url: string,
  json: string
): Either.Either<{ readonly data: Uint8Array; readonly origin: string }, LegacyBootstrapError> =>
  Either.flatMap(
    Either.mapLeft(decodeLegacyPacket("DataTransmit", json), (e) =>
      shape(url)(`not a DataTransmissionPacket: ${e.detail}`)
    ),
    (packet) =>
      packet._tag === "DataTransmissionPacket" && packet.Data !== null
        ? Either.right({ data: packet.Data, origin: packet.SourceOriginIdentifier ?? "" })
        : Either.left(shape(url)("the DataTransmissionPacket has no Data"))
  )

const formatTags = ["MiscData", "Task", "File"] as const

/** Data with or without its format tags (the original is inconsistent, B21): the inner bytes and whether tags were removed. */
const untag = (
  url: string,
  data: Uint8Array
): Either.Either<{ inner: string; tagged: boolean }, LegacyBootstrapError> => {
  const text = Either.try(() => utf8.decode(data))
  if (Either.isLeft(text)) return Either.left(shape(url)("Data is not UTF-8"))
  const trimmed = text.right.trimStart()
  const format = formatTags.find((f) => trimmed.startsWith(`<${f}>`))
  if (format === undefined) return Either.right({ inner: text.right, tagged: false })
  return Either.mapBoth(unwrapData(format, data), {
    onLeft: (e) => shape(url)(e.message),
    onRight: (inner) => ({ inner: lenient.decode(inner), tagged: true })
  })
}

const toPeers = (packet: CollectionSharePacket) => {
  const peers: Array<LegacyPeer> = []
  let dropped = 0
  for (const p of packet.peers) {
    if (p.Address !== null && net.isIP(p.Address) !== 0 && p.Port >= 1 && p.Port <= 65535) {
      peers.push({ address: p.Address, port: p.Port, identifier: p.Identifier })
    } else {
      dropped++
    }
  }
  return { peers, dropped }
}

const peerList = (url: string, json: string) =>
  Either.flatMap(
    Either.mapLeft(decodeLegacyPacket("PeerGroup", json), (e) =>
      shape(url)(`not a CollectionSharePacket: ${e.detail}`)
    ),
    (p) =>
      p._tag === "CollectionSharePacket" ? Either.right(p) : Either.left(shape(url)("not a CollectionSharePacket"))
  )

/** Reads the answer to `PUT /api/Bootstrap/peers`: trustless (CollectionSharePacket) or authority (task 14) style. */
export const readLegacyPeersAnswer = (answer: Answer): Either.Either<LegacyPeersResult, LegacyBootstrapError> =>
  Either.gen(function* () {
    const { url } = answer
    const json = yield* answerJson(answer)
    const { data, origin: serverIdentifier } = yield* dataOf(url, json)
    const { inner, tagged } = yield* untag(url, data)
    const object = yield* Either.mapLeft(parseLegacyObject("Data", inner), (e) => shape(url)(`Data: ${e.message}`))
    if (!("TaskType" in object)) {
      const packet = yield* peerList(url, inner)
      return { style: "trustless" as const, tagged, ...toPeers(packet), serverIdentifier }
    }
    const task = yield* Either.mapLeft(decodeLegacyTask(inner), (e) => shape(url)(e.message))
    if (task.TaskType !== LegacyTaskType.BootstrapInitialization) {
      return yield* Either.left(
        shape(url)(`expected a BootstrapInitialization (14) task, got TaskType ${task.TaskType}`)
      )
    }
    const peersJson = task.TaskData?.["Peers"]
    if (peersJson === undefined) return yield* Either.left(shape(url)("the BootstrapInitialization task has no Peers"))
    const packet = yield* peerList(url, peersJson)
    const publicKey = task.TaskData?.["PublicKey"]
    return {
      style: "authority" as const,
      tagged,
      ...toPeers(packet),
      ...(publicKey === undefined ? {} : { publicKey }),
      serverIdentifier
    }
  })

const PGP_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
const PGP_SIGNATURE = "-----BEGIN PGP SIGNATURE-----"

/** The signed text of an OpenPGP cleartext-signed message (RFC 4880 §7), without checking the signature. */
const clearSignedText = (signature: string): Option.Option<string> => {
  const lines = signature.replace(/\r\n/g, "\n").split("\n")
  const start = lines.findIndex((l) => l.trim() === PGP_SIGNED)
  if (start === -1) return Option.none()
  const blank = lines.findIndex((l, i) => i > start && l.trim() === "")
  const end = lines.findIndex((l, i) => i > blank && l.trim() === PGP_SIGNATURE)
  if (blank === -1 || end === -1) return Option.none()
  return Option.some(
    lines
      .slice(blank + 1, end)
      .map((l) => (l.startsWith("- ") ? l.slice(2) : l))
      .join("\n")
  )
}

/** What a `Signature` is and whether it names `hash` (no cryptography: see the module comment). */
export const classifyLegacySignature = (
  signature: string | undefined,
  hash: string
): { readonly signatureKind: LegacySignatureKind; readonly signatureMatchesHash: boolean } => {
  if (signature === undefined) return { signatureKind: "none", signatureMatchesHash: false }
  if (signature === hash) return { signatureKind: "rawHash", signatureMatchesHash: true }
  return Option.match(clearSignedText(signature), {
    onNone: () => ({ signatureKind: "other" as const, signatureMatchesHash: false }),
    onSome: (text) => ({ signatureKind: "pgpClearSigned" as const, signatureMatchesHash: text.trim() === hash })
  })
}

/** The task without its `Signature` entry (what the signer hashed), its hash and its signature. */
const signed = (task: LegacyNetworkTask) => {
  const { Signature: signature, ...rest } = task.TaskData ?? {}
  const unsigned = new Task({ TaskType: task.TaskType, TaskData: task.TaskData === null ? null : rest }, true)
  const hash = legacyTaskHash(unsigned)
  return { hash, ...(signature === undefined ? {} : { signature }), ...classifyLegacySignature(signature, hash) }
}

/** Reads the answer to `PUT /api/Bootstrap/heartbeat`: a HeartbeatResponse task with `Task_N` entries and a Signature. */
export const readLegacyHeartbeatAnswer = (answer: Answer): Either.Either<LegacyHeartbeatResult, LegacyBootstrapError> =>
  Either.gen(function* () {
    const { url } = answer
    const json = yield* answerJson(answer)
    const { inner, tagged } = yield* untag(url, (yield* dataOf(url, json)).data)
    const response = yield* Either.mapLeft(decodeLegacyTask(inner), (e) => shape(url)(e.message))
    const tasks: Array<LegacyHeartbeatTask> = []
    const unreadable: Array<{ key: string; reason: string }> = []
    for (const [key, value] of Object.entries(response.TaskData ?? {})) {
      if (key === "Signature") continue
      Either.match(decodeLegacyTask(value), {
        onLeft: (e) => unreadable.push({ key, reason: e.message }),
        onRight: (task) =>
          tasks.push({ key, json: value, taskType: task.TaskType, taskData: task.TaskData, ...signed(task) })
      })
    }
    return { tagged, taskType: response.TaskType, tasks, unreadable, ...signed(response) }
  })

/** Reads the answer to `PUT /api/Bootstrap/verifyhash`: a PureMessagePacket `True:<hash>`, `False:<hash>` or other text. */
export const readLegacyVerifyAnswer = (answer: Answer): Either.Either<LegacyVerifyResult, LegacyBootstrapError> =>
  Either.gen(function* () {
    const { url } = answer
    const json = yield* answerJson(answer, false)
    const packet = yield* Either.mapLeft(decodeLegacyPacket("Message", json), (e) =>
      shape(url)(`not a PureMessagePacket: ${e.detail}`)
    )
    const message = packet._tag === "PureMessagePacket" ? (packet.Message ?? "") : ""
    const verdict = message.startsWith("True") ? "known" : message.startsWith("False") ? "unknown" : "unsupported"
    return { verdict, message } as const
  })

/** Reads the answer to `GET /api/Bootstrap/publicip`: the caller's address as plain text. */
export const readLegacyPublicIpAnswer = (answer: Answer): Either.Either<string, LegacyBootstrapError> => {
  const { status, url } = answer
  const text = lenient.decode(answer.body).trim()
  if (status < 200 || status >= 300)
    return Either.left(new LegacyBootstrapBadStatus({ url, status, body: excerpt(text) }))
  return net.isIP(text) !== 0
    ? Either.right(text)
    : Either.left(shape(url)(`not an IP address: ${JSON.stringify(excerpt(text))}`))
}

// ---------------------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------------------

export class LegacyBootstrapClient extends Context.Tag("effect-p2pnet/LegacyBootstrapClient")<
  LegacyBootstrapClient,
  {
    /**
     * `PUT /api/Bootstrap/peers`: registers `self` and returns the peer list (and, from an authority, its public key).
     *
     * @example
     * const { peers } = yield* client.peers("http://203.0.113.1:5070", { identifier: "me", ip: "203.0.113.7", port: 8523 })
     */
    readonly peers: (
      server: string,
      self: LegacySelf,
      options?: LegacyRequestOptions
    ) => Effect.Effect<LegacyPeersResult, LegacyBootstrapError>
    /** `PUT /api/Bootstrap/heartbeat`: keeps `identifier` registered and returns the tasks queued for it. */
    readonly heartbeat: (
      server: string,
      identifier: string,
      options?: LegacyRequestOptions
    ) => Effect.Effect<LegacyHeartbeatResult, LegacyBootstrapError>
    /** `PUT /api/Bootstrap/verifyhash`: whether the server signed a task with this (base64 MD5) hash. */
    readonly verifyHash: (
      server: string,
      hash: string,
      options?: LegacyRequestOptions & { readonly identifier?: string }
    ) => Effect.Effect<LegacyVerifyResult, LegacyBootstrapError>
    /** `GET /api/Bootstrap/publicip`: the address the server sees us at. */
    readonly publicIp: (server: string) => Effect.Effect<string, LegacyBootstrapError>
  }
>() {
  /** With fetch as the HTTP client. */
  static readonly layer = (settings: LegacyBootstrapClientSettings = {}) =>
    Layer.effect(this, make(settings)).pipe(Layer.provide(FetchHttpClient.layer))
  /** Settings from P2P_LEGACY_BOOTSTRAP_* variables, fetch as the HTTP client. */
  static readonly layerConfig = Layer.effect(
    this,
    Effect.flatMap(LegacyBootstrapClientConfig, (s) => make(s))
  ).pipe(Layer.provide(FetchHttpClient.layer))
}

/** The endpoint URL: the path replaces any path of the base URL, as `new Uri(baseUri, path)` does (§8.1). */
const endpoint = (server: string, path: string): Either.Either<string, LegacyBootstrapUnreachable> =>
  Either.try({
    try: () => new URL(path, server),
    catch: () => new LegacyBootstrapUnreachable({ url: server, detail: "not a valid URL" })
  }).pipe(
    Either.filterOrLeft(
      (u) => u.protocol === "http:" || u.protocol === "https:",
      () => new LegacyBootstrapUnreachable({ url: server, detail: "only http and https URLs are supported" })
    ),
    Either.map((u) => u.href)
  )

/** Uses the HttpClient of the context. */
export const make = (settings: LegacyBootstrapClientSettings = {}) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    const timeout = Duration.decode(settings.requestTimeout ?? "10 seconds")
    const maxBytes = settings.maxResponseBytes ?? 1024 * 1024

    const now = (options: LegacyRequestOptions | undefined) =>
      options?.time !== undefined
        ? Effect.succeed(options.time)
        : Effect.map(
            Effect.clockWith((c) => c.currentTimeMillis),
            (ms) => legacyDateTime(ms)
          )

    /** One request; the answer read up to `maxBytes`; the whole bounded by the timeout. */
    const exchange = (server: string, path: string, body: Option.Option<string>) =>
      Effect.gen(function* () {
        const url = yield* endpoint(server, path)
        const request = Option.match(body, {
          onNone: () => HttpClientRequest.get(url),
          // the .NET client's exact header: application/json; charset=utf-8 (§8.3)
          onSome: (text) =>
            HttpClientRequest.put(url).pipe(HttpClientRequest.bodyText(text, "application/json; charset=utf-8"))
        })
        const unreachable = (e: { readonly message: string }) =>
          new LegacyBootstrapUnreachable({ url, detail: e.message })
        const response = yield* Effect.mapError(client.execute(request), unreachable)
        const declared = Number(response.headers["content-length"] ?? "0")
        if (declared > maxBytes) return yield* new LegacyBootstrapTooLarge({ url, max: maxBytes })
        const chunks = yield* response.stream.pipe(
          Stream.mapError(unreachable),
          Stream.runFoldEffect({ size: 0, parts: [] as Array<Uint8Array> }, (acc, chunk) =>
            acc.size + chunk.length > maxBytes
              ? Effect.fail(new LegacyBootstrapTooLarge({ url, max: maxBytes }))
              : Effect.sync(() => {
                  acc.parts.push(chunk)
                  return { size: acc.size + chunk.length, parts: acc.parts }
                })
          )
        )
        const bytes = new Uint8Array(chunks.size)
        let at = 0
        for (const part of chunks.parts) {
          bytes.set(part, at)
          at += part.length
        }
        return { url, status: response.status, body: bytes } satisfies Answer
      }).pipe(
        Effect.scoped,
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new LegacyBootstrapTimeout({ url: server, timeoutMillis: Duration.toMillis(timeout) })
        })
      )

    return LegacyBootstrapClient.of({
      peers: Effect.fn("LegacyBootstrapClient.peers")(function* (server, self, options) {
        const body = legacyPeersRequestBody(self, yield* now(options))
        return yield* Effect.flatMap(
          exchange(server, LegacyBootstrapPaths.peers, Option.some(body)),
          readLegacyPeersAnswer
        )
      }),
      heartbeat: Effect.fn("LegacyBootstrapClient.heartbeat")(function* (server, identifier, options) {
        const body = legacyHeartbeatRequestBody(identifier, yield* now(options))
        return yield* Effect.flatMap(
          exchange(server, LegacyBootstrapPaths.heartbeat, Option.some(body)),
          readLegacyHeartbeatAnswer
        )
      }),
      verifyHash: Effect.fn("LegacyBootstrapClient.verifyHash")(function* (server, hash, options) {
        const body = legacyVerifyHashRequestBody(hash, options?.identifier ?? "", yield* now(options))
        return yield* Effect.flatMap(
          exchange(server, LegacyBootstrapPaths.verifyHash, Option.some(body)),
          readLegacyVerifyAnswer
        )
      }),
      publicIp: Effect.fn("LegacyBootstrapClient.publicIp")(function* (server) {
        return yield* Effect.flatMap(
          exchange(server, LegacyBootstrapPaths.publicIp, Option.none()),
          readLegacyPublicIpAnswer
        )
      })
    })
  })
