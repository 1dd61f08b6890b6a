/**
 * The WAN bootstrap client: one actor (fiber) per bootstrap server. Each registers this node (signed with the node
 * key), hands the peers it gets to the PeerConnector, then heartbeats on its own schedule (B19). Consecutive failures
 * are counted (reset on success); after `failureThreshold` in a row the channel backs off on an exponential schedule
 * and keeps trying at a low rate. A server that forgot this node (404 UnknownPeer) is registered with again.
 *
 * Tasks from heartbeat answers go to the NetworkTaskHandler: in authority mode only when signed by the channel's
 * pinned authority key, in trustless mode only tasks that do not change this node's state. Opening a channel the
 * BootstrapTrustPolicy forbids fails in the caller (B17); with FirstSingleLockingAuthority the first authority that
 * answers is pinned (URL and key, persisted in the pin file) and every other authority is refused.
 */
import { FetchHttpClient, HttpApiClient } from "@effect/platform"
import {
  Clock,
  Config,
  Context,
  Data,
  Duration,
  Effect,
  Either,
  Encoding,
  FiberMap,
  Layer,
  Option,
  PubSub,
  Ref,
  Schedule,
  Schema,
  Stream,
  SubscriptionRef,
  SynchronizedRef
} from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { fingerprintOf, verifySignedTask } from "./BootstrapAuthority.js"
import { NetworkTaskHandler } from "./NetworkTasks.js"
import { NodeIdentity } from "./NodeIdentity.js"
import { PeerConnector } from "./PeerConnector.js"
import { PeerNetwork } from "./PeerNetwork.js"
import { NetworkEvent } from "./PeerRegistry.js"
import { NetworkConfig } from "./Settings.js"
import type { BootstrapMode, SignedTask } from "../schema/bootstrap.js"
import { BootstrapApi, heartbeatBytes, registrationBytes } from "../schema/bootstrap.js"
import type { BootstrapTrustPolicyInput } from "../schema/bootstrapPolicy.js"
import { BootstrapTrustPolicy } from "../schema/bootstrapPolicy.js"
import {
  BootstrapForbidden,
  BootstrapPinFileError,
  InitialAuthorityLocked,
  TrustPolicyConflict
} from "../schema/errors.js"
import { PeerAddress } from "../schema/ids.js"
import type { Port } from "../schema/ids.js"
import type { TaskType } from "../schema/packets.js"

// ---------------------------------------------------------------------------------------------------------------------
// Settings, states, events
// ---------------------------------------------------------------------------------------------------------------------

export interface BootstrapServerEntry {
  readonly url: string
  readonly mode: BootstrapMode
}

export interface BootstrapClientSettings {
  readonly servers?: ReadonlyArray<BootstrapServerEntry>
  readonly policy?: BootstrapTrustPolicyInput
  /** Between heartbeats of a registered channel (default 8 s). */
  readonly heartbeatInterval?: Duration.DurationInput
  /** Each HTTP request gives up after this long (default 5 s). */
  readonly requestTimeout?: Duration.DurationInput
  /** Delay before retrying after a failure, while below the threshold (default 2 s). */
  readonly retryDelay?: Duration.DurationInput
  /** Consecutive failures after which the channel backs off (default 5). */
  readonly failureThreshold?: number
  /** The back-off between attempts once over the threshold (default exponential from 10 s, at most 5 minutes). */
  readonly backoff?: Schedule.Schedule<unknown>
  /** Where the pinned authority is kept (FirstSingleLockingAuthority); empty: memory only. */
  readonly pinFile?: string
}

export type BootstrapChannelState = "connecting" | "registered" | "degraded" | "backingOff" | "lockedOut" | "closed"

export type BootstrapEvent = Data.TaggedEnum<{
  StateChanged: {
    readonly url: string
    readonly state: BootstrapChannelState
    readonly failures: number
    readonly detail: string
  }
  TaskAccepted: {
    readonly url: string
    readonly taskId: string
    readonly taskType: TaskType
    /** What the NetworkTaskHandler made of it. */
    readonly outcome: string
  }
  TaskRejected: { readonly url: string; readonly taskId: string; readonly taskType: TaskType; readonly reason: string }
}>
export const BootstrapEvent = Data.taggedEnum<BootstrapEvent>()

export interface BootstrapChannelStats {
  readonly registrations: number
  readonly heartbeats: number
  readonly failures: number
  readonly consecutiveFailures: number
  readonly peersOffered: number
  readonly tasksAccepted: number
  /** Authority mode: missing or bad signature, or signed by another key. */
  readonly tasksBadSignature: number
  /** Trustless mode: a task that would change this node's state. */
  readonly tasksRefused: number
}

export interface BootstrapChannel {
  readonly url: string
  readonly mode: BootstrapMode
  readonly state: Effect.Effect<BootstrapChannelState>
  readonly stateChanges: Stream.Stream<BootstrapChannelState>
  readonly stats: Effect.Effect<BootstrapChannelStats>
  /** The authority key this channel verifies tasks with, once the server answered (base64). */
  readonly authorityKey: Effect.Effect<Option.Option<string>>
  readonly close: Effect.Effect<void>
}

export interface AuthorityPin {
  readonly url: string
  readonly publicKey: string
  readonly fingerprint: string
}
const AuthorityPinJson = Schema.parseJson(
  Schema.Struct({ url: Schema.String, publicKey: Schema.String, fingerprint: Schema.String })
)

export type OpenError = BootstrapForbidden | InitialAuthorityLocked

export class BootstrapClient extends Context.Tag("effect-p2pnet/BootstrapClient")<
  BootstrapClient,
  {
    readonly policy: BootstrapTrustPolicy
    /** Opens a channel (or returns the open one for this URL); fails when the policy forbids it. */
    readonly open: (server: BootstrapServerEntry) => Effect.Effect<BootstrapChannel, OpenError>
    readonly channels: Effect.Effect<ReadonlyArray<BootstrapChannel>>
    readonly pinned: Effect.Effect<Option.Option<AuthorityPin>>
    /** Every event from now on (subscribe before the action whose event you wait for: `subscribe`). */
    readonly events: Stream.Stream<BootstrapEvent>
    readonly subscribe: Effect.Effect<Stream.Stream<BootstrapEvent>, never, Scope.Scope>
  }
>() {}

/** Task types a trustless server may hand out: none of them changes this node's state. */
export const trustlessTaskTypes: ReadonlyArray<TaskType> = ["PingPeer", "Heartbeat", "SendMessage"]

// ---------------------------------------------------------------------------------------------------------------------
// Pin file
// ---------------------------------------------------------------------------------------------------------------------

const readPin = (file: string): Effect.Effect<Option.Option<AuthorityPin>, BootstrapPinFileError> =>
  file === ""
    ? Effect.succeed(Option.none())
    : Effect.try({
        try: () => (fs.existsSync(file) ? Option.some(fs.readFileSync(file, "utf8")) : Option.none<string>()),
        catch: (e) => new BootstrapPinFileError({ path: file, detail: String(e) })
      }).pipe(
        Effect.flatMap(
          Option.match({
            onNone: () => Effect.succeed(Option.none<AuthorityPin>()),
            onSome: (text) =>
              Schema.decodeUnknown(AuthorityPinJson)(text).pipe(
                Effect.map(Option.some),
                Effect.mapError((e) => new BootstrapPinFileError({ path: file, detail: e.message }))
              )
          })
        )
      )

const writePin = (file: string, pin: AuthorityPin) =>
  file === ""
    ? Effect.void
    : Effect.try({
        try: () => {
          fs.mkdirSync(path.dirname(file), { recursive: true })
          const tmp = `${file}.tmp-${process.pid}`
          fs.writeFileSync(tmp, JSON.stringify(pin), { mode: 0o600 })
          fs.renameSync(tmp, file)
        },
        catch: (e) => new BootstrapPinFileError({ path: file, detail: String(e) })
      })

// ---------------------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------------------

/** How one attempt ended. */
type Attempt = Data.TaggedEnum<{
  Ok: {}
  Forgotten: {}
  LockedOut: { readonly detail: string }
  Failed: { readonly detail: string }
}>
const Attempt = Data.taggedEnum<Attempt>()

const zeroStats: BootstrapChannelStats = {
  registrations: 0,
  heartbeats: 0,
  failures: 0,
  consecutiveFailures: 0,
  peersOffered: 0,
  tasksAccepted: 0,
  tasksBadSignature: 0,
  tasksRefused: 0
}

const describe = (e: unknown): string =>
  typeof e === "object" && e !== null && "message" in e && typeof e.message === "string" && e.message !== ""
    ? e.message
    : typeof e === "object" && e !== null && "_tag" in e
      ? String(e._tag)
      : String(e)

export const make = (settings: BootstrapClientSettings) =>
  Effect.gen(function* () {
    const policy = yield* BootstrapTrustPolicy.from(settings.policy)
    const network = yield* PeerNetwork
    const connector = yield* PeerConnector
    const keys = yield* NodeIdentity
    const tasks = yield* NetworkTaskHandler
    const config = yield* NetworkConfig
    const httpClient = yield* Layer.build(FetchHttpClient.layer)
    const heartbeatInterval = Duration.decode(settings.heartbeatInterval ?? "8 seconds")
    const requestTimeout = Duration.decode(settings.requestTimeout ?? "5 seconds")
    const retryDelay = Duration.decode(settings.retryDelay ?? "2 seconds")
    const threshold = settings.failureThreshold ?? 5
    const backoff: Schedule.Schedule<unknown> =
      settings.backoff ?? Schedule.exponential("10 seconds").pipe(Schedule.union(Schedule.spaced("5 minutes")))
    const pinFile = settings.pinFile ?? ""
    const pin = yield* SynchronizedRef.make(yield* readPin(pinFile))
    const events = yield* PubSub.unbounded<BootstrapEvent>()
    const actors = yield* FiberMap.make<string>()
    const open = yield* Ref.make(new Map<string, BootstrapChannel>())
    const b64 = (bytes: Uint8Array) => Encoding.encodeBase64(bytes)

    /** Pins `key` for `url` when nothing is pinned; true when this channel is (now) the pinned one. */
    const claimPin = (url: string, key: string) =>
      SynchronizedRef.modifyEffect(pin, (current) =>
        Option.match(current, {
          onNone: () => {
            const pinned: AuthorityPin = {
              url,
              publicKey: key,
              fingerprint: fingerprintOf(Encoding.decodeBase64(key).pipe(Either.getOrThrow))
            }
            return writePin(pinFile, pinned).pipe(
              // kept in memory for this run; a restart would not remember it, so say so loudly
              Effect.tapError((e) => Effect.logError(`authority pinned for this run only: ${e.message}`)),
              Effect.ignore,
              Effect.as([true, Option.some(pinned)] as const)
            )
          },
          onSome: (p) => Effect.succeed([p.url === url && p.publicKey === key, current] as const)
        })
      )

    const runChannel = (entry: BootstrapServerEntry) =>
      Effect.gen(function* () {
        const { url, mode } = entry
        const client = yield* HttpApiClient.make(BootstrapApi, { baseUrl: url }).pipe(Effect.provide(httpClient))
        const state = yield* SubscriptionRef.make<BootstrapChannelState>("connecting")
        const stats = yield* Ref.make(zeroStats)
        const authorityKey = yield* Ref.make(Option.none<string>())
        const count = (key: keyof BootstrapChannelStats, n = 1) =>
          Ref.update(stats, (s) => ({ ...s, [key]: s[key] + n }))
        const setState = (next: BootstrapChannelState, detail: string) =>
          Effect.gen(function* () {
            const previous = yield* SubscriptionRef.getAndSet(state, next)
            if (previous === next) return
            const failures = (yield* Ref.get(stats)).consecutiveFailures
            yield* Effect.logInfo(`bootstrap ${url}: ${next}${detail === "" ? "" : ` (${detail})`}`)
            yield* PubSub.publish(events, BootstrapEvent.StateChanged({ url, state: next, failures, detail }))
            // also on the network's own event PubSub, beside channel and peer events
            yield* network.registry.publish(NetworkEvent.BootstrapStateChanged({ url, state: next, failures, detail }))
          })

        const timed = <A, E>(self: Effect.Effect<A, E>) =>
          Effect.timeoutFail(self, {
            duration: requestTimeout,
            onTimeout: () => ({ _tag: "Timeout" as const, message: "timed out" })
          })

        const classify = (e: { readonly _tag: string }): Attempt =>
          e._tag === "UnknownPeer"
            ? Attempt.Forgotten()
            : e._tag === "PeerBlocked"
              ? Attempt.LockedOut({ detail: describe(e) })
              : Attempt.Failed({ detail: describe(e) })

        const register = Effect.gen(function* () {
          const unsigned = {
            id: keys.id,
            port: network.port as Port,
            publicKey: b64(keys.publicKey),
            network: config.network,
            sentAt: yield* Clock.currentTimeMillis
          }
          const response = yield* timed(
            client.bootstrap.register({
              payload: { ...unsigned, signature: b64(keys.sign(registrationBytes(unsigned))) }
            })
          )
          if (mode === "authority") {
            if (response.mode !== "authority" || response.serverPublicKey === undefined) {
              return Attempt.LockedOut({ detail: "the server is not an authority" })
            }
            const known = yield* Ref.get(authorityKey)
            const key = Option.getOrElse(known, () => response.serverPublicKey!)
            if (policy.firstSingleLockingAuthority && !(yield* claimPin(url, response.serverPublicKey))) {
              return Attempt.LockedOut({ detail: "another authority (or another key) is pinned" })
            }
            yield* Ref.set(authorityKey, Option.some(key))
          }
          yield* count("registrations")
          const candidates = response.peers.flatMap((p) =>
            Option.toArray(Schema.decodeUnknownOption(PeerAddress)({ address: p.address, port: p.port, id: p.id }))
          )
          yield* count("peersOffered", candidates.length)
          yield* connector.offer(candidates)
          return Attempt.Ok()
        }).pipe(Effect.catchAll((e) => Effect.succeed(classify(e))))

        const handleTask = (signed: SignedTask) =>
          Effect.gen(function* () {
            const { task } = signed
            const reject = (reason: string, key: "tasksBadSignature" | "tasksRefused") =>
              Effect.zipRight(
                count(key),
                PubSub.publish(
                  events,
                  BootstrapEvent.TaskRejected({ url, taskId: task.id, taskType: task.taskType, reason })
                )
              )
            if (mode === "authority") {
              const key = yield* Ref.get(authorityKey)
              const raw = Option.flatMap(key, (k) => Either.getRight(Encoding.decodeBase64(k)))
              if (Option.isNone(raw) || !verifySignedTask(raw.value, signed)) {
                return yield* reject("signature does not verify against the pinned authority key", "tasksBadSignature")
              }
            } else if (!trustlessTaskTypes.includes(task.taskType)) {
              return yield* reject(`a trustless server may not ask for ${task.taskType}`, "tasksRefused")
            }
            yield* count("tasksAccepted")
            const outcome = yield* tasks.submit({ taskType: task.taskType, taskData: task.taskData })
            yield* PubSub.publish(
              events,
              BootstrapEvent.TaskAccepted({ url, taskId: task.id, taskType: task.taskType, outcome: outcome._tag })
            )
          })

        const heartbeat = Effect.gen(function* () {
          const sentAt = yield* Clock.currentTimeMillis
          const response = yield* timed(
            client.bootstrap.heartbeat({
              payload: { id: keys.id, sentAt, signature: b64(keys.sign(heartbeatBytes({ id: keys.id, sentAt }))) }
            })
          )
          yield* count("heartbeats")
          for (const signed of response.tasks) yield* handleTask(signed)
          return Attempt.Ok()
        }).pipe(Effect.catchAll((e) => Effect.succeed(classify(e))))

        const driver = yield* Schedule.driver(backoff)
        const loop = Effect.gen(function* () {
          let registered = false
          while (true) {
            const result = registered ? yield* heartbeat : yield* register
            switch (result._tag) {
              case "Ok": {
                registered = true
                yield* Ref.update(stats, (s) => ({ ...s, consecutiveFailures: 0 }))
                yield* driver.reset
                yield* setState("registered", "")
                yield* Effect.sleep(heartbeatInterval)
                break
              }
              case "Forgotten": {
                registered = false
                break
              }
              case "LockedOut": {
                yield* setState("lockedOut", result.detail)
                return
              }
              case "Failed": {
                yield* Ref.update(stats, (s) => ({
                  ...s,
                  failures: s.failures + 1,
                  consecutiveFailures: s.consecutiveFailures + 1
                }))
                const failures = (yield* Ref.get(stats)).consecutiveFailures
                if (failures < threshold) {
                  yield* setState("degraded", result.detail)
                  yield* Effect.sleep(retryDelay)
                } else {
                  yield* setState("backingOff", result.detail)
                  // a finite schedule that ran out: keep trying at the retry delay
                  yield* driver.next(undefined).pipe(Effect.orElse(() => Effect.sleep(retryDelay)))
                }
              }
            }
          }
        })

        const channel: BootstrapChannel = {
          url,
          mode,
          state: SubscriptionRef.get(state),
          stateChanges: state.changes,
          stats: Ref.get(stats),
          authorityKey: Ref.get(authorityKey),
          close: Effect.zipRight(
            Ref.update(open, (m) => {
              const next = new Map(m)
              next.delete(url)
              return next
            }),
            FiberMap.remove(actors, url)
          )
        }
        return { channel, loop: loop.pipe(Effect.annotateLogs({ bootstrap: url })) }
      })

    const openChannel = (entry: BootstrapServerEntry): Effect.Effect<BootstrapChannel, OpenError> =>
      Effect.gen(function* () {
        const existing = (yield* Ref.get(open)).get(entry.url)
        if (existing !== undefined) return existing
        const admitted = policy.admits(entry.url, entry.mode)
        if (Either.isLeft(admitted)) return yield* admitted.left
        if (entry.mode === "authority" && policy.firstSingleLockingAuthority) {
          const current = yield* SynchronizedRef.get(pin)
          if (Option.isSome(current) && current.value.url !== entry.url) {
            return yield* new InitialAuthorityLocked({
              url: entry.url,
              pinnedUrl: current.value.url,
              pinnedFingerprint: current.value.fingerprint
            })
          }
        }
        const { channel, loop } = yield* runChannel(entry)
        yield* Ref.update(open, (m) => new Map(m).set(entry.url, channel))
        yield* FiberMap.run(actors, entry.url, loop)
        return channel
      }).pipe(Effect.withSpan("BootstrapClient.open", { attributes: { url: entry.url, mode: entry.mode } }))

    for (const server of settings.servers ?? []) yield* openChannel(server)

    return BootstrapClient.of({
      policy,
      open: openChannel,
      channels: Effect.map(Ref.get(open), (m) => [...m.values()]),
      pinned: SynchronizedRef.get(pin),
      events: Stream.fromPubSub(events),
      subscribe: Effect.map(PubSub.subscribe(events), (q) => Stream.fromQueue(q))
    })
  })

export type BootstrapClientError = TrustPolicyConflict | BootstrapPinFileError | OpenError

/**
 * Adds the WAN bootstrap client to a network; the configured servers are opened when the layer is built.
 *
 * @example
 * const Node = bootstrapClientLayer({ servers: [{ url: "http://203.0.113.5:8080", mode: "trustless" }] }).pipe(
 *   Layer.provideMerge(networkLayerWith({ port: 0 }))
 * )
 */
export const bootstrapClientLayer = (
  settings: BootstrapClientSettings = {}
): Layer.Layer<
  BootstrapClient,
  BootstrapClientError,
  PeerNetwork | PeerConnector | NodeIdentity | NetworkTaskHandler | NetworkConfig
> => Layer.scoped(BootstrapClient, make(settings))

const urlList = (name: string) =>
  Config.string(name).pipe(
    Config.withDefault(""),
    Config.map((text) =>
      text
        .split(",")
        .map((u) => u.trim())
        .filter((u) => u !== "")
    )
  )
const optionalBool = (name: string) => Config.option(Config.boolean(name)).pipe(Config.map(Option.getOrUndefined))

/**
 * BootstrapClientSettings from P2P_* variables (README, "WAN bootstrap"): P2P_BOOTSTRAP (trustless servers) and
 * P2P_BOOTSTRAP_AUTHORITY (authority servers), comma-separated URLs; the policy flags; heartbeat and timeout; the pin
 * file (default: bootstrap-pin.json next to P2P_KEY_FILE, or memory only without a key file).
 */
export const bootstrapSettingsFromEnv: Config.Config<BootstrapClientSettings> = Config.all({
  trustless: urlList("P2P_BOOTSTRAP"),
  authority: urlList("P2P_BOOTSTRAP_AUTHORITY"),
  allowTrustless: optionalBool("P2P_BOOTSTRAP_ALLOW_TRUSTLESS"),
  allowAuthority: optionalBool("P2P_BOOTSTRAP_ALLOW_AUTHORITY"),
  mustBeAuthority: optionalBool("P2P_BOOTSTRAP_MUST_BE_AUTHORITY"),
  firstSingleLockingAuthority: optionalBool("P2P_BOOTSTRAP_LOCKING_AUTHORITY"),
  heartbeatMillis: Config.integer("P2P_BOOTSTRAP_HEARTBEAT_MS").pipe(Config.withDefault(8_000)),
  timeoutMillis: Config.integer("P2P_BOOTSTRAP_TIMEOUT_MS").pipe(Config.withDefault(5_000)),
  pinFile: Config.option(Config.string("P2P_BOOTSTRAP_PIN_FILE")),
  keyFile: Config.string("P2P_KEY_FILE").pipe(Config.withDefault(""))
}).pipe(
  Config.map((c) => ({
    servers: [
      ...c.trustless.map((url) => ({ url, mode: "trustless" as const })),
      ...c.authority.map((url) => ({ url, mode: "authority" as const }))
    ],
    policy: Object.fromEntries(
      Object.entries({
        allowTrustless: c.allowTrustless,
        allowAuthority: c.allowAuthority ?? (c.authority.length > 0 ? true : undefined),
        mustBeAuthority: c.mustBeAuthority,
        firstSingleLockingAuthority: c.firstSingleLockingAuthority
      }).filter((e) => e[1] !== undefined)
    ),
    heartbeatInterval: Duration.millis(c.heartbeatMillis),
    requestTimeout: Duration.millis(c.timeoutMillis),
    pinFile: Option.getOrElse(c.pinFile, () =>
      c.keyFile === "" ? "" : path.join(path.dirname(c.keyFile), "bootstrap-pin.json")
    )
  }))
)

/** The bootstrap client configured from P2P_* variables. */
export const bootstrapClientLayerConfig = Layer.unwrapEffect(Effect.map(bootstrapSettingsFromEnv, bootstrapClientLayer))
