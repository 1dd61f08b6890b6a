/**
 * The WAN bootstrap client against real bootstrap servers on 127.0.0.1 (port 0): nodes that find each other through a
 * server, independent heartbeats to several servers with one failing, the BootstrapTrustPolicy table (openings,
 * conflicts, first-single-locking, the pin across a restart) and authority-signed tasks.
 */
import { FetchHttpClient, HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import {
  ConfigProvider,
  Context,
  Duration,
  Effect,
  Either,
  Exit,
  Layer,
  Option,
  Redacted,
  Schedule,
  Scope,
  Stream,
  TestClock,
  TestServices
} from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { BootstrapClientSettings, BootstrapEvent, BootstrapChannelState } from "../src/layers/BootstrapClient.js"
import { BootstrapClient, bootstrapClientLayer, bootstrapSettingsFromEnv } from "../src/layers/BootstrapClient.js"
import type { BootstrapSettings } from "../src/layers/BootstrapServer.js"
import { BootstrapConfig, serverLayer, serverUrl } from "../src/layers/BootstrapServer.js"
import { BootstrapStore } from "../src/layers/BootstrapStore.js"
import { networkLayerWith } from "../src/layers/Network.js"
import { generateKeys } from "../src/layers/NodeIdentity.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { BootstrapApi } from "../src/schema/bootstrap.js"
import type { BootstrapTrustPolicyInput } from "../src/schema/bootstrapPolicy.js"
import { resolvePolicyEither } from "../src/schema/bootstrapPolicy.js"
import { fastSettings, message } from "./support/nodes.js"
import { awaitSleepUntil } from "./support/test-clock.js"

const TOKEN = "test-admin-token-0123456789"
const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "p2p-bootstrap-client-"))

const within = <A, E, R>(self: Effect.Effect<A, E, R>, seconds = 10) =>
  TestServices.provideLive(Effect.timeoutFail(self, { duration: `${seconds} seconds`, onTimeout: () => "timed out" }))

/** A bootstrap server on 127.0.0.1 in its own scope (close it to stop the server), with an admin client and store. */
const startServer = (overrides: Partial<BootstrapSettings> = {}) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const config = BootstrapConfig.layer({
      host: "127.0.0.1",
      port: 0,
      dataDir: tmpDir(),
      adminToken: Option.some(Redacted.make(TOKEN)),
      rateLimitPerMinute: 0,
      ...overrides
    })
    const context = yield* Layer.buildWithScope(
      serverLayer.pipe(Layer.provideMerge(Layer.merge(config, BootstrapStore.layerMemory))),
      scope
    )
    const url = yield* Effect.provide(serverUrl, context)
    const admin = yield* HttpApiClient.make(BootstrapApi, {
      baseUrl: url,
      transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(TOKEN))
    })
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    return { url, port: Number(new URL(url).port), admin, store: Context.get(context, BootstrapStore), scope }
  }).pipe(Effect.provide(FetchHttpClient.layer))

const quick: BootstrapClientSettings = {
  heartbeatInterval: "100 millis",
  retryDelay: "50 millis",
  requestTimeout: "2 seconds",
  backoff: Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced("400 millis")))
}

/** A node (network on 127.0.0.1:0) with the bootstrap client, in the current scope. */
const startNode = (settings: BootstrapClientSettings = {}) =>
  Layer.build(
    bootstrapClientLayer({ ...quick, ...settings }).pipe(Layer.provideMerge(networkLayerWith(fastSettings)))
  ).pipe(Effect.map((ctx) => ({ network: Context.get(ctx, PeerNetwork), client: Context.get(ctx, BootstrapClient) })))

const channelOf = (client: BootstrapClient["Type"], url: string) =>
  Effect.map(client.channels, (cs) => {
    const found = cs.find((c) => c.url === url)
    assert.isDefined(found)
    return found!
  })

const awaitState = (client: BootstrapClient["Type"], url: string, state: BootstrapChannelState) =>
  Effect.flatMap(channelOf(client, url), (c) =>
    within(
      c.stateChanges.pipe(
        Stream.filter((s) => s === state),
        Stream.runHead
      )
    )
  )

const awaitEvent = (events: Stream.Stream<BootstrapEvent>, f: (e: BootstrapEvent) => boolean) =>
  within(events.pipe(Stream.filter(f), Stream.runHead, Effect.map(Option.getOrThrow)))

/** Polls (bounded) until `done` holds: for counters no event announces. */
const until = <A, E>(read: Effect.Effect<A, E>, done: (a: A) => boolean) =>
  within(Effect.repeat(read, { schedule: Schedule.spaced("20 millis"), until: done }))

describe("bootstrap client", () => {
  it.scopedLive("two nodes that know only one bootstrap server find each other, connect and exchange a message", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const servers = [{ url: server.url, mode: "trustless" as const }]
      const a = yield* startNode({ servers })
      yield* awaitState(a.client, server.url, "registered")
      const b = yield* startNode({ servers })
      yield* awaitState(b.client, server.url, "registered")
      const ab = yield* within(a.network.awaitChannel(b.network.id))
      const ba = yield* within(b.network.awaitChannel(a.network.id))
      yield* within(Effect.all([ab.awaitTrusted, ba.awaitTrusted]))
      const packets = yield* b.network.registry.subscribePackets
      yield* ab.send(message(a.network.id, "hello over the WAN"))
      const got = yield* within(
        packets.pipe(
          Stream.filter((r) => r.packet._tag === "PureMessage"),
          Stream.runHead,
          Effect.map(Option.getOrThrow)
        )
      )
      assert.strictEqual(got.packet._tag === "PureMessage" && got.packet.message, "hello over the WAN")
      const stats = yield* Effect.flatMap(channelOf(b.client, server.url), (c) => c.stats)
      assert.strictEqual(stats.peersOffered, 1)
    })
  )

  it.scoped("heartbeats every 8 s by default; 5 failures in a row back off (TestClock)", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const node = yield* startNode({
        servers: [{ url: server.url, mode: "trustless" }],
        heartbeatInterval: "8 seconds",
        retryDelay: "2 seconds",
        backoff: Schedule.exponential("10 seconds")
      })
      const channel = yield* channelOf(node.client, server.url)
      yield* awaitState(node.client, server.url, "registered")
      yield* awaitSleepUntil(8_000)
      yield* TestClock.adjust("7 seconds")
      assert.strictEqual((yield* channel.stats).heartbeats, 0)
      yield* TestClock.adjust("1 second")
      yield* until(channel.stats, (s) => s.heartbeats === 1)
      yield* awaitSleepUntil(16_000)
      // the server goes away: 4 failures 2 s apart are "degraded", the 5th backs off (10 s, then 20 s)
      yield* Scope.close(server.scope, Exit.void)
      yield* TestClock.adjust("8 seconds")
      let at = 16_000
      for (let failures = 1; failures <= 4; failures++) {
        yield* until(channel.stats, (s) => s.consecutiveFailures === failures)
        assert.strictEqual(yield* channel.state, "degraded")
        at += 2_000
        yield* awaitSleepUntil(at)
        yield* TestClock.adjust("2 seconds")
      }
      yield* until(channel.stats, (s) => s.consecutiveFailures === 5)
      assert.strictEqual(yield* channel.state, "backingOff")
      yield* awaitSleepUntil(at + 10_000)
      yield* TestClock.adjust("10 seconds")
      yield* until(channel.stats, (s) => s.consecutiveFailures === 6)
      yield* awaitSleepUntil(at + 10_000 + 20_000)
    })
  )

  it.scopedLive(
    "three servers, one stops answering: the others keep heartbeating, the failing one backs off, then recovers",
    () =>
      Effect.gen(function* () {
        const servers = [yield* startServer(), yield* startServer(), yield* startServer()]
        const node = yield* startNode({ servers: servers.map((s) => ({ url: s.url, mode: "trustless" as const })) })
        for (const s of servers) yield* awaitState(node.client, s.url, "registered")
        const events = yield* node.client.subscribe
        const networkEvents = yield* node.network.registry.subscribeEvents
        const failing = servers[2]!
        yield* Scope.close(failing.scope, Exit.void)
        const degraded = yield* awaitEvent(events, (e) => e._tag === "StateChanged" && e.url === failing.url)
        assert.strictEqual(degraded._tag === "StateChanged" && degraded.state, "degraded")
        // the same change is reported on the network's own event PubSub
        const reported = yield* within(
          networkEvents.pipe(
            Stream.filter((e) => e._tag === "BootstrapStateChanged" && e.url === failing.url),
            Stream.runHead,
            Effect.map(Option.getOrThrow)
          )
        )
        assert.strictEqual(reported._tag === "BootstrapStateChanged" && reported.state, "degraded")
        const backingOff = yield* awaitEvent(events, (e) => e._tag === "StateChanged" && e.url === failing.url)
        assert.strictEqual(backingOff._tag === "StateChanged" && backingOff.state, "backingOff")
        assert.strictEqual(backingOff._tag === "StateChanged" && backingOff.failures, 5)
        // the other two heartbeat on, independently
        for (const s of servers.slice(0, 2)) {
          const channel = yield* channelOf(node.client, s.url)
          const before = (yield* channel.stats).heartbeats
          yield* until(channel.stats, (st) => st.heartbeats >= before + 3)
          assert.strictEqual(yield* channel.state, "registered")
        }
        // back on the same port, with an empty store: the heartbeat gets 404 UnknownPeer and the node registers again
        yield* startServer({ port: failing.port })
        const recovered = yield* awaitEvent(events, (e) => e._tag === "StateChanged" && e.url === failing.url)
        assert.strictEqual(recovered._tag === "StateChanged" && recovered.state, "registered")
        const stats = yield* Effect.flatMap(channelOf(node.client, failing.url), (c) => c.stats)
        assert.strictEqual(stats.registrations, 2)
        assert.strictEqual(stats.consecutiveFailures, 0)
      })
  )
})

/** input → conflict name, or which channel modes may be opened. */
const table: ReadonlyArray<readonly [BootstrapTrustPolicyInput, string | { trustless: boolean; authority: boolean }]> =
  [
    [{}, { trustless: true, authority: false }],
    [{ allowAuthority: true }, { trustless: true, authority: true }],
    [
      { allowTrustless: false, allowAuthority: true },
      { trustless: false, authority: true }
    ],
    [{ allowTrustless: false }, "NoChannelAllowed"],
    [{ allowTrustless: false, allowAuthority: false }, "NoChannelAllowed"],
    [{ mustBeAuthority: true }, { trustless: false, authority: true }],
    [
      { mustBeAuthority: true, allowAuthority: true },
      { trustless: false, authority: true }
    ],
    [
      { mustBeAuthority: true, allowTrustless: false },
      { trustless: false, authority: true }
    ],
    [{ mustBeAuthority: true, allowTrustless: true }, "MustBeAuthorityWithTrustless"],
    [{ mustBeAuthority: true, allowAuthority: false }, "MustBeAuthorityWithoutAuthority"],
    [{ firstSingleLockingAuthority: true }, { trustless: false, authority: true }],
    [
      { firstSingleLockingAuthority: true, mustBeAuthority: true },
      { trustless: false, authority: true }
    ],
    [{ firstSingleLockingAuthority: true, allowTrustless: true }, "LockingAuthorityWithTrustless"],
    [{ firstSingleLockingAuthority: true, allowAuthority: false }, "LockingAuthorityWithoutAuthority"]
  ]

describe("BootstrapTrustPolicy", () => {
  it.scopedLive("every combination: allowed and forbidden openings, conflicts", () =>
    Effect.gen(function* () {
      const trustless = yield* startServer()
      const authority = yield* startServer({ mode: "authority" })
      for (const [input, expected] of table) {
        const label = JSON.stringify(input)
        const resolved = resolvePolicyEither(input)
        if (typeof expected === "string") {
          assert.isTrue(Either.isLeft(resolved), label)
          const built = yield* Effect.scoped(Effect.flip(startNode({ policy: input })))
          assert.strictEqual(built._tag, "TrustPolicyConflict", label)
          assert.strictEqual(built._tag === "TrustPolicyConflict" && built.conflict, expected, label)
          continue
        }
        assert.isTrue(Either.isRight(resolved), label)
        yield* Effect.scoped(
          Effect.gen(function* () {
            const node = yield* startNode({ policy: input, pinFile: path.join(tmpDir(), "pin.json") })
            for (const [mode, url] of [
              ["trustless", trustless.url],
              ["authority", authority.url]
            ] as const) {
              const opened = yield* Effect.either(node.client.open({ url, mode }))
              assert.strictEqual(Either.isRight(opened), expected[mode], `${label} ${mode}`)
              if (Either.isLeft(opened)) assert.strictEqual(opened.left._tag, "BootstrapForbidden", `${label} ${mode}`)
              else yield* awaitState(node.client, url, "registered")
            }
          })
        )
      }
    })
  )

  it.scopedLive(
    "first single locking authority: the first to answer is pinned, the next refused, also after a restart",
    () =>
      Effect.gen(function* () {
        const first = yield* startServer({ mode: "authority" })
        const second = yield* startServer({ mode: "authority" })
        const pinFile = path.join(tmpDir(), "bootstrap-pin.json")
        const settings = { policy: { firstSingleLockingAuthority: true }, pinFile }
        yield* Effect.scoped(
          Effect.gen(function* () {
            const node = yield* startNode(settings)
            yield* node.client.open({ url: first.url, mode: "authority" })
            yield* awaitState(node.client, first.url, "registered")
            const pinned = Option.getOrThrow(yield* node.client.pinned)
            assert.strictEqual(pinned.url, first.url)
            const refused = yield* Effect.flip(node.client.open({ url: second.url, mode: "authority" }))
            assert.strictEqual(refused._tag, "InitialAuthorityLocked")
            const trustless = yield* Effect.flip(node.client.open({ url: second.url, mode: "trustless" }))
            assert.strictEqual(trustless._tag, "BootstrapForbidden")
          })
        )
        assert.isTrue(fs.existsSync(pinFile))
        // a restarted node (same data directory) keeps the pin
        const restarted = yield* startNode(settings)
        const refused = yield* Effect.flip(restarted.client.open({ url: second.url, mode: "authority" }))
        assert.strictEqual(refused._tag, "InitialAuthorityLocked")
        assert.strictEqual(refused._tag === "InitialAuthorityLocked" && refused.pinnedUrl, first.url)
        yield* restarted.client.open({ url: first.url, mode: "authority" })
        yield* awaitState(restarted.client, first.url, "registered")
        // another authority key at the pinned address (an impostor on the same port) locks the channel out
        yield* Scope.close(first.scope, Exit.void)
        yield* startServer({ mode: "authority", port: first.port })
        const third = yield* startNode(settings)
        yield* third.client.open({ url: first.url, mode: "authority" })
        yield* awaitState(third.client, first.url, "lockedOut")
      })
  )

  it("settings from P2P_* variables", () =>
    Effect.gen(function* () {
      const settings = yield* bootstrapSettingsFromEnv.pipe(
        Effect.withConfigProvider(
          ConfigProvider.fromMap(
            new Map([
              ["P2P_BOOTSTRAP", "http://a:1, http://b:2"],
              ["P2P_BOOTSTRAP_AUTHORITY", "https://c"],
              ["P2P_BOOTSTRAP_LOCKING_AUTHORITY", "true"],
              ["P2P_BOOTSTRAP_HEARTBEAT_MS", "3000"],
              ["P2P_KEY_FILE", "/data/node/key.pem"]
            ])
          )
        )
      )
      assert.deepStrictEqual(settings.servers, [
        { url: "http://a:1", mode: "trustless" },
        { url: "http://b:2", mode: "trustless" },
        { url: "https://c", mode: "authority" }
      ])
      assert.deepStrictEqual(settings.policy, { allowAuthority: true, firstSingleLockingAuthority: true })
      assert.strictEqual(settings.pinFile, "/data/node/bootstrap-pin.json")
      assert.isTrue(Duration.equals(Duration.decode(settings.heartbeatInterval!), Duration.seconds(3)))
    }).pipe(Effect.runPromise))

  it.scopedLive(
    "the configured servers are opened on build; a forbidden one fails the build with the typed error",
    () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(startNode({ servers: [{ url: "http://127.0.0.1:1", mode: "authority" }] }))
        assert.strictEqual(error._tag, "BootstrapForbidden")
      })
  )
})

describe("bootstrap tasks", () => {
  it.scopedLive("an authority-signed block task is applied; bad or foreign signatures are rejected and counted", () =>
    Effect.gen(function* () {
      const server = yield* startServer({ mode: "authority" })
      const other = yield* startServer({ mode: "authority" })
      const node = yield* startNode({
        policy: { allowAuthority: true },
        servers: [{ url: server.url, mode: "authority" }]
      })
      yield* awaitState(node.client, server.url, "registered")
      const events = yield* node.client.subscribe
      const target = generateKeys().id
      const queued = yield* server.admin.admin.block({ path: { id: target }, payload: { reason: "abuse" } })
      assert.strictEqual(queued.enqueued, 1)
      const accepted = yield* awaitEvent(events, (e) => e._tag !== "StateChanged")
      assert.strictEqual(accepted._tag, "TaskAccepted")
      assert.strictEqual(accepted._tag === "TaskAccepted" && accepted.outcome, "Done")
      assert.isTrue(yield* node.network.registry.isBlockedId(target))

      // the same task with a bad signature, and a task signed by another authority
      const tampered = generateKeys().id
      const badSignature = {
        ...queued.task,
        task: { ...queued.task.task, taskData: { peer: tampered } }
      }
      const foreign = (yield* other.admin.admin.block({ path: { id: generateKeys().id }, payload: {} })).task
      yield* server.store.enqueueTask(node.network.id, JSON.stringify(badSignature), Date.now())
      yield* server.store.enqueueTask(node.network.id, JSON.stringify(foreign), Date.now())
      for (let i = 0; i < 2; i++) {
        const rejected = yield* awaitEvent(events, (e) => e._tag !== "StateChanged")
        assert.strictEqual(rejected._tag, "TaskRejected")
      }
      const stats = yield* Effect.flatMap(channelOf(node.client, server.url), (c) => c.stats)
      assert.deepStrictEqual([stats.tasksAccepted, stats.tasksBadSignature], [1, 2])
      assert.isFalse(yield* node.network.registry.isBlockedId(tampered))
      assert.isFalse(yield* node.network.registry.isBlockedId(foreign.task.taskData.peer as never))
    })
  )

  it.scopedLive("a trustless server's state-changing task is refused", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const node = yield* startNode({ servers: [{ url: server.url, mode: "trustless" }] })
      yield* awaitState(node.client, server.url, "registered")
      const events = yield* node.client.subscribe
      const target = generateKeys().id
      yield* server.admin.admin.block({ path: { id: target }, payload: {} })
      const rejected = yield* awaitEvent(events, (e) => e._tag !== "StateChanged")
      assert.strictEqual(rejected._tag, "TaskRejected")
      assert.isFalse(yield* node.network.registry.isBlockedId(target))
      const stats = yield* Effect.flatMap(channelOf(node.client, server.url), (c) => c.stats)
      assert.strictEqual(stats.tasksRefused, 1)
    })
  )
})
