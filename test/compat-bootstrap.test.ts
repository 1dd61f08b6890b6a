/**
 * A node in the compatibility profile bootstraps from P2PNet (.NET) bootstrap servers (reference spec §8.2-8.3,
 * src/layers/CompatBootstrap.ts): our bootstrap server in legacy mode, and a stand-in for the original server
 * (test/support/http-fixture.ts) with literal spec-derived answers (tagged and untagged). Real HTTP and TCP on
 * 127.0.0.1 only; the heartbeat interval is driven by the TestClock.
 */
import { Command } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import {
  Chunk,
  ConfigProvider,
  Context,
  Deferred,
  Effect,
  FiberRef,
  HashMap,
  HashSet,
  Layer,
  Logger,
  Option,
  Queue,
  Stream,
  TestClock,
  TestServices
} from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { legacyNodeId } from "../src/actors/LegacyLink.js"
import { compatSettingsFromEnv } from "../src/layers/Compat.js"
import { CompatProfile } from "../src/layers/Compat.js"
import type { CompatBootstrapEvent, CompatBootstrapStats } from "../src/layers/CompatBootstrap.js"
import { CompatBootstrap, legacyAnnouncedAddress, legacyHeartbeatRoutine } from "../src/layers/CompatBootstrap.js"
import { compatLayer } from "../src/layers/Compatibility.js"
import { networkLayerWith } from "../src/layers/Network.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import type { NetworkEvent } from "../src/layers/PeerRegistry.js"
import { RoutineScheduler } from "../src/layers/RoutineScheduler.js"
import type { CompatSettingsInput } from "../src/schema/compat.js"
import { InterfaceTable, Ipv4Assignment, NetworkInterface } from "../src/schema/interfaces.js"
import { LegacyNetworkTask } from "../src/schema/legacy/index.js"
import type { GenericPeerJson } from "./support/legacy-peer.js"
import { startLegacyBootstrapServer } from "./support/legacy-bootstrap-server.js"
import { collectionShareJson, jsonString, startLegacyPeer } from "./support/legacy-peer.js"
import type { Canned, Captured } from "./support/http-fixture.js"
import { httpFixture } from "./support/http-fixture.js"
import { nodeProgram } from "./support/node-program.js"
import { fastSettings, message } from "./support/nodes.js"
import { awaitSleepUntil } from "./support/test-clock.js"

const PING_MS = 300

/** Waits on real I/O with a real-time bound, whatever clock the test runs on. */
const within = <A, E, R>(self: Effect.Effect<A, E, R>, seconds = 15) =>
  TestServices.provideLive(
    Effect.timeoutFail(self, {
      duration: `${seconds} seconds`,
      onTimeout: () => new Error(`timed out after ${seconds} s`)
    })
  )

// ---------------------------------------------------------------------------------------------------------------------
// Spec fixtures (§1.5, §8.4): the original server's answers, literally
// ---------------------------------------------------------------------------------------------------------------------

const T = "2025-04-18T13:48:00.0314159Z"
const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64")

/** A DataTransmissionPacket as the original server writes it (its identifier is ""). */
const serverPacket = (data: string, dataType: number) =>
  `{"Data":"${b64(data)}","DataType":${dataType},"SourceOriginIdentifier":"","SourceOriginTime":"${T}"}`

/** The trustless peers answer: the CollectionSharePacket untagged (as the original sends it) or in `<MiscData>` tags. */
const peersAnswer = (peers: ReadonlyArray<GenericPeerJson>, tagged: boolean) => {
  const list = collectionShareJson({ identifier: "", time: new Date(T.slice(0, 23) + "Z"), peers, data: 100 })
  return serverPacket(tagged ? `<MiscData>${list}</MiscData>` : list, 2)
}

/** A HeartbeatResponse (16) in `<Task>` tags, each task a JSON string under Task_N, signed with the bare hash form. */
const heartbeatAnswer = (tasks: ReadonlyArray<string>) => {
  const entries = tasks.map((t, i) => `${jsonString(`Task_${i}`)}:${jsonString(t)}`)
  const data = `{"TaskType":16,"TaskData":{${[...entries, `"Signature":"not-verified"`].join(",")}}}`
  return serverPacket(`<Task>${data}</Task>`, 1)
}

/** The IdentifierPacket of a captured peers request (base64 Data, `<MiscData>` tags removed); undefined if not one. */
const identifierOf = (request: Captured): { dtp: any; data: string; identifier: any } | undefined => {
  try {
    const dtp = JSON.parse(request.body)
    const data = Buffer.from(dtp.Data as string, "base64").toString("utf8")
    return { dtp, data, identifier: JSON.parse(data.slice("<MiscData>".length, -"</MiscData>".length)) }
  } catch {
    return undefined
  }
}

/**
 * A stand-in for the original P2PBootstrap server on 127.0.0.1 (`port` 0: any), answering with `answer` as JSON and
 * closing every connection after its answer. Its `close` stops it before the test's scope ends; a fixture on the same
 * port brings it back.
 */
const fixtureServer = (answer: (request: Captured) => Canned, port = 0) =>
  httpFixture(answer, { port, contentType: "application/json; charset=utf-8", closeConnections: true })

/** Our bootstrap server on 127.0.0.1:0 in legacy mode, rate limiting off. */
const startServer = () => startLegacyBootstrapServer({ rateLimitPerMinute: 0 })

// ---------------------------------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------------------------------

/** A compat node on 127.0.0.1 (legacy listener on a free port, legacy discovery off). */
const startCompatNode = (compat: CompatSettingsInput) =>
  Layer.build(
    compatLayer({
      port: 0,
      host: "127.0.0.1",
      pingIntervalMillis: PING_MS,
      discovery: { enabled: false },
      ...compat
    }).pipe(
      Layer.provideMerge(
        networkLayerWith({ ...fastSettings, fileInbox: fs.mkdtempSync(path.join(os.tmpdir(), "p2p-compat-boot-")) })
      )
    )
  ).pipe(
    Effect.map((ctx) => ({
      network: Context.get(ctx, PeerNetwork),
      profile: Context.get(ctx, CompatProfile),
      bootstrap: Context.get(ctx, CompatBootstrap),
      scheduler: Context.get(ctx, RoutineScheduler)
    })),
    Effect.orDie
  )

/** Waits until the stats of `url` satisfy `f` (the stats stream starts with the current value: nothing is missed). */
const awaitStats = (
  bootstrap: CompatBootstrap["Type"],
  url: string,
  f: (s: CompatBootstrapStats) => boolean
): Effect.Effect<CompatBootstrapStats, Error> =>
  within(
    bootstrap.changes.pipe(
      Stream.filterMap((all) => Option.fromNullable(all.find((s) => s.url === url && f(s)))),
      Stream.runHead,
      Effect.map(Option.getOrThrow)
    )
  )

/** Collects log lines (message text and annotations) from now on, in this scope and the fibers it forks. */
const captureLogs = Effect.gen(function* () {
  const lines = yield* Queue.unbounded<{ readonly level: string; readonly text: string; readonly error: unknown }>()
  const logger = Logger.make(({ annotations, logLevel, message: m }) => {
    const text = (Array.isArray(m) ? m : [m]).map(String).join(" ")
    Queue.unsafeOffer(lines, {
      level: logLevel.label,
      text,
      error: Option.getOrUndefined(HashMap.get(annotations, "error"))
    })
  })
  yield* Effect.locallyScopedWith(FiberRef.currentLoggers, HashSet.add(logger))
  return lines
})

/** The next log line matching `f` (taken one at a time, so later lines stay for the next wait). */
const awaitLog = (lines: Queue.Queue<{ level: string; text: string; error: unknown }>, f: (text: string) => boolean) =>
  within(
    Effect.gen(function* () {
      while (true) {
        const line = yield* Queue.take(lines)
        if (f(line.text)) return line
      }
    })
  )

const inboundOn = (port: number) => (e: NetworkEvent) =>
  e._tag === "ChannelStateChanged" && e.state !== "closed" && e.channel.direction === "inbound"
    ? Option.some(e.channel)
    : Option.none()

// ---------------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------------

describe("compat node bootstraps from a legacy bootstrap server", () => {
  it.scopedLive("two compat nodes meet through our server in legacy mode, connect over the legacy wire and trust", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const a = yield* startCompatNode({ bootstrap: [server.url], pingTrust: true })
      yield* awaitStats(a.bootstrap, server.url, (s) => s.registrations === 1)
      const announced = yield* a.bootstrap.announcement
      // no identifier configured: the NodeId (the original server tells clients apart by identifier only, B28)
      assert.deepStrictEqual(announced, { identifier: a.network.id, ip: "127.0.0.1", port: a.profile.port })
      const aEvents = yield* a.network.registry.subscribeEvents

      const b = yield* startCompatNode({ bootstrap: [server.url], pingTrust: true })
      const bStats = yield* awaitStats(b.bootstrap, server.url, (s) => s.registrations === 1)
      assert.strictEqual(bStats.peersOffered, 1)
      // B dialled A's legacy listener (nobody else knows it), as a legacy peer
      const atA = yield* within(
        aEvents.pipe(Stream.filterMap(inboundOn(a.profile.port)), Stream.runHead, Effect.map(Option.getOrThrow))
      )
      assert.isTrue(a.profile.isLegacy(atA))
      assert.isTrue(b.profile.isLegacyEndpoint("127.0.0.1", a.profile.port))
      const atB = yield* within(b.profile.dial("127.0.0.1", a.profile.port))
      assert.strictEqual(atB.direction, "outbound")
      assert.strictEqual(atB.remoteId, legacyNodeId("127.0.0.1", a.profile.port))
      yield* within(Effect.all([atA.awaitTrusted, atB.awaitTrusted]))

      const listed = yield* server.registry.list
      assert.deepStrictEqual(
        listed.map((p) => [p.identifier, p.port]),
        [
          [a.network.id, a.profile.port],
          [b.network.id, b.profile.port]
        ]
      )
      const routines = yield* a.scheduler.list
      const routine = routines.find((r) => r.name === legacyHeartbeatRoutine(server.url))
      assert.deepStrictEqual([routine?.running, routine?.intervalMillis], [true, 8_000])
    })
  )

  for (const tagged of [false, true]) {
    it.scopedLive(
      `dials the scripted legacy peer an original server lists (${tagged ? "tagged" : "untagged"} answer), not itself`,
      () =>
        Effect.gen(function* () {
          const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
          // like the original server: the list holds the requester itself, at the IP and port it wrote
          const fixture = yield* fixtureServer((request) => {
            const identifier = identifierOf(request)?.identifier
            if (identifier === undefined) return { status: 400, body: "" }
            return {
              body: peersAnswer(
                [
                  { port: peer.port, address: "127.0.0.1", identifier: "legacy_peer" },
                  { port: identifier.Data, address: identifier.IP, identifier: identifier.SourceOriginIdentifier }
                ],
                tagged
              )
            }
          })
          const node = yield* startCompatNode({ bootstrap: [fixture.url], identifier: "compat_two" })
          const conn = yield* within(Queue.take(peer.accepted))
          const stats = yield* awaitStats(node.bootstrap, fixture.url, (s) => s.registrations === 1)
          assert.strictEqual(stats.peersOffered, 1)

          // the request, as the .NET client writes it (§8.3 step 2-3)
          const request = yield* Queue.take(fixture.requests)
          assert.deepStrictEqual(
            [request.method, request.path, request.contentType],
            ["PUT", "/api/Bootstrap/peers", "application/json; charset=utf-8"]
          )
          const { data, dtp, identifier } = identifierOf(request)!
          assert.match(data, /^<MiscData>\{.*\}<\/MiscData>$/)
          assert.deepStrictEqual([dtp.DataType, dtp.SourceOriginIdentifier], [2, "compat_two"])
          assert.deepStrictEqual(
            [identifier.Message, identifier.Data, identifier.IP, identifier.SourceOriginIdentifier],
            ["discovery", node.profile.port, "127.0.0.1", "compat_two"]
          )

          const channel = yield* within(node.profile.dial("127.0.0.1", peer.port))
          assert.isTrue(node.profile.isLegacy(channel))
          assert.strictEqual(channel.remoteId, legacyNodeId("127.0.0.1", peer.port))
          assert.isFalse(yield* Deferred.isDone(conn.closed))
          // only the peer: our own entry was skipped
          const channels = yield* node.network.registry.channels
          assert.deepStrictEqual(
            channels.map((c) => c.port),
            [peer.port]
          )
        })
    )
  }

  it.scoped(
    "garbage, then the server down: typed errors logged, the node runs on, heartbeats resume when it is back (TestClock)",
    () =>
      Effect.gen(function* () {
        const logs = yield* captureLogs
        let mode: "garbage" | "forgot" | "ok" = "garbage"
        const answer = (request: Captured) =>
          mode === "garbage"
            ? { body: "<html>502 Bad Gateway</html>" }
            : mode === "forgot" && request.path.toLowerCase().endsWith("/heartbeat")
              ? // the original's answer (status 200) once it forgot a client (§8.4)
                {
                  body: `{"Message":"ClientPeer with SourceOriginIdentifier ${jsonString("'compat_three'").slice(1, -1)} not found.","SourceOriginIdentifier":"","SourceOriginTime":"${T}"}`
                }
              : request.path.toLowerCase().endsWith("/peers")
                ? { body: peersAnswer([], false) }
                : { body: heartbeatAnswer([]) }
        const first = yield* fixtureServer(answer)
        const url = first.url
        const node = yield* startCompatNode({ bootstrap: [url], identifier: "compat_three" })

        // at start: the peers request gets garbage
        const garbage = yield* awaitLog(logs, (t) => t.includes("peers request failed"))
        assert.strictEqual(garbage.error, "LegacyBootstrapInvalidJson")
        assert.strictEqual(garbage.level, "WARN")
        yield* awaitSleepUntil(8_000)
        let stats = (yield* node.bootstrap.stats)[0]!
        assert.deepStrictEqual([stats.registered, stats.failures], [false, 1])

        // 8 s later (appendix A): the server is down
        yield* first.close
        yield* TestClock.adjust("7 seconds")
        assert.strictEqual((yield* node.bootstrap.stats)[0]!.failures, 1)
        yield* TestClock.adjust("1 second")
        const down = yield* awaitLog(logs, (t) => t.includes("peers request failed") && t.includes("unreachable"))
        assert.strictEqual(down.error, "LegacyBootstrapUnreachable")
        yield* awaitSleepUntil(16_000)
        stats = (yield* node.bootstrap.stats)[0]!
        assert.deepStrictEqual([stats.registered, stats.consecutiveFailures], [false, 2])

        // back, on the same port: the next tick registers, the one after heartbeats
        mode = "ok"
        const again = yield* fixtureServer(answer, first.port)
        yield* TestClock.adjust("8 seconds")
        yield* awaitStats(node.bootstrap, url, (s) => s.registered && s.registrations === 1)
        yield* awaitSleepUntil(24_000)
        yield* TestClock.adjust("8 seconds")
        yield* awaitStats(node.bootstrap, url, (s) => s.heartbeats === 1 && s.consecutiveFailures === 0)
        const paths = [(yield* Queue.take(again.requests)).path, (yield* Queue.take(again.requests)).path]
        assert.deepStrictEqual(paths, ["/api/Bootstrap/peers", "/api/Bootstrap/heartbeat"])

        // a garbage heartbeat answer is one more failure; the registration stands and the next heartbeat succeeds
        yield* awaitSleepUntil(32_000)
        mode = "garbage"
        yield* TestClock.adjust("8 seconds")
        const bad = yield* awaitLog(logs, (t) => t.includes("heartbeat request failed"))
        assert.strictEqual(bad.error, "LegacyBootstrapInvalidJson")
        yield* awaitSleepUntil(40_000)
        mode = "ok"
        yield* TestClock.adjust("8 seconds")
        stats = yield* awaitStats(node.bootstrap, url, (s) => s.heartbeats === 2)
        assert.deepStrictEqual([stats.registered, stats.registrations, stats.failures], [true, 1, 3])
        // a server that forgot this node refuses the heartbeat: the next tick registers again
        yield* awaitSleepUntil(48_000)
        mode = "forgot"
        yield* TestClock.adjust("8 seconds")
        const refused = yield* awaitLog(logs, (t) => t.includes("heartbeat request failed"))
        assert.strictEqual(refused.error, "LegacyBootstrapRefused")
        assert.include(refused.text, "ClientPeer with SourceOriginIdentifier 'compat_three' not found.")
        yield* awaitSleepUntil(56_000)
        assert.isFalse((yield* node.bootstrap.stats)[0]!.registered)
        yield* TestClock.adjust("8 seconds")
        yield* awaitStats(node.bootstrap, url, (s) => s.registered && s.registrations === 2)

        // the node ran on throughout: its routine is still scheduled and its legacy listener still open
        const routine = (yield* node.scheduler.list).find((r) => r.name === legacyHeartbeatRoutine(url))
        assert.isTrue(routine?.running)
        assert.isAbove(node.profile.port, 0)
      })
  )

  it.scopedLive("tasks in heartbeat answers are logged and not executed: a DisconnectPeer closes nothing", () =>
    Effect.gen(function* () {
      const server = yield* startServer()
      const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
      const node = yield* startCompatNode({
        bootstrap: [server.url],
        identifier: "compat_four",
        bootstrapHeartbeatMillis: 100,
        peers: [`127.0.0.1:${peer.port}`]
      })
      const conn = yield* within(Queue.take(peer.accepted))
      const channel = yield* within(node.profile.dial("127.0.0.1", peer.port))
      yield* awaitStats(node.bootstrap, server.url, (s) => s.registered)
      const events = yield* node.bootstrap.subscribe

      const target = { TargetPeer: "127.0.0.1" }
      for (const [taskType, data] of [
        [4, target], // DisconnectPeer
        [1, target], // BlockIP
        [0, target], // BlockAndRemovePeer
        [2, { Message: "hello" }] // SendMessage
      ] as const) {
        assert.strictEqual(
          yield* server.registry.enqueue("compat_four", new LegacyNetworkTask({ TaskType: taskType, TaskData: data })),
          1
        )
      }
      const seen = yield* within(
        events.pipe(
          Stream.filter(
            (e): e is Extract<CompatBootstrapEvent, { _tag: "TaskNotExecuted" }> => e._tag === "TaskNotExecuted"
          ),
          Stream.take(4),
          Stream.runCollect,
          Effect.map(Chunk.toArray)
        )
      )
      assert.deepStrictEqual(
        seen.map((e) => [e.name, e.privileged, e.signatureKind]),
        [
          ["DisconnectPeer", true, "rawHash"],
          ["BlockIP", true, "rawHash"],
          ["BlockAndRemovePeer", true, "rawHash"],
          ["SendMessage", false, "rawHash"]
        ]
      )
      // nothing was closed or blocked: the legacy channel still carries a message to the peer
      assert.notStrictEqual(yield* channel.state, "closed")
      assert.isFalse(yield* node.network.registry.isBlockedAddress("127.0.0.1"))
      yield* channel.send(message(node.network.id, "still connected"))
      const next = yield* within(conn.next)
      assert.deepStrictEqual([next.kind, next.json.Message], ["Message", "still connected"])
      assert.isFalse(yield* Deferred.isDone(conn.closed))
      assert.strictEqual((yield* node.bootstrap.stats)[0]!.tasksNotExecuted, 4)
    })
  )
})

describe("the address a compat node announces", () => {
  const table = (addresses: ReadonlyArray<string>) =>
    Option.some(
      InterfaceTable.make({
        scannedAt: 0,
        interfaces: [
          NetworkInterface.make({
            name: "eth0",
            internal: false,
            loopback: false,
            mac: "00:00:00:00:00:01",
            ipv4: addresses.map((address) =>
              Ipv4Assignment.make({ address, netmask: "255.255.255.0", prefix: 24, broadcast: Option.none() })
            ),
            ipv6: [],
            primary: true
          })
        ]
      })
    )

  it("the configured address, else a literal listener host, else the primary interface's last IPv4", () => {
    const interfaces = table(["192.0.2.10", "192.0.2.20"])
    assert.strictEqual(
      legacyAnnouncedAddress({ advertisedAddress: "198.51.100.7", host: "0.0.0.0", interfaces }),
      "198.51.100.7"
    )
    assert.strictEqual(legacyAnnouncedAddress({ advertisedAddress: "", host: "192.0.2.99", interfaces }), "192.0.2.99")
    // a wildcard bind address, or a name, is not an address to announce
    assert.strictEqual(legacyAnnouncedAddress({ advertisedAddress: "", host: "0.0.0.0", interfaces }), "192.0.2.20")
    assert.strictEqual(legacyAnnouncedAddress({ advertisedAddress: "", host: "::", interfaces }), "192.0.2.20")
    assert.strictEqual(
      legacyAnnouncedAddress({ advertisedAddress: "node.example", host: "localhost", interfaces }),
      "192.0.2.20"
    )
    assert.strictEqual(
      legacyAnnouncedAddress({ advertisedAddress: "", host: "0.0.0.0", interfaces: Option.none() }),
      "127.0.0.1"
    )
  })
})

describe("legacy bootstrap settings", () => {
  it.effect("P2P_COMPAT_BOOTSTRAP is a comma-separated list of http(s) URLs; anything else is a ConfigError", () =>
    Effect.gen(function* () {
      const read = (vars: Record<string, string>) =>
        compatSettingsFromEnv.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars)))))
      const none = yield* read({})
      assert.deepStrictEqual([none.bootstrap, none.bootstrapHeartbeatMillis], [[], 8_000])
      const two = yield* read({
        P2P_COMPAT_BOOTSTRAP: "http://192.0.2.1:5070, https://boot.example/",
        P2P_COMPAT_BOOTSTRAP_HEARTBEAT_MS: "2000"
      })
      assert.deepStrictEqual(
        [two.bootstrap, two.bootstrapHeartbeatMillis],
        [["http://192.0.2.1:5070", "https://boot.example/"], 2_000]
      )
      const bad = yield* Effect.flip(read({ P2P_COMPAT_BOOTSTRAP: "ftp://192.0.2.1/" }))
      assert.include(String(bad), "expected an http or https URL")
    })
  )

  it.scopedLive(
    "the node program joins the server of --legacy-bootstrap; the flag wins over P2P_COMPAT_BOOTSTRAP",
    () =>
      Effect.gen(function* () {
        const answer = (request: Captured) =>
          request.path.toLowerCase().endsWith("/peers")
            ? { body: peersAnswer([], false) }
            : { body: heartbeatAnswer([]) }
        const byFlag = yield* fixtureServer(answer)
        const byEnv = yield* fixtureServer(answer)
        yield* Command.start(
          nodeProgram(["--no-discovery", "--host", "127.0.0.1", "--compat", "--legacy-bootstrap", byFlag.url], {
            P2P_LOG_LEVEL: "Warning",
            P2P_COMPAT_BOOTSTRAP: byEnv.url,
            P2P_COMPAT_BOOTSTRAP_HEARTBEAT_MS: "200",
            P2P_COMPAT_DISCOVERY: "false",
            P2P_COMPAT_PORT: "0",
            P2P_COMPAT_IDENTIFIER: "program"
          })
        )
        const first = yield* within(Queue.take(byFlag.requests), 30)
        const { identifier } = identifierOf(first)!
        assert.deepStrictEqual(
          [first.path, identifier.IP, identifier.SourceOriginIdentifier],
          ["/api/Bootstrap/peers", "127.0.0.1", "program"]
        )
        assert.isAbove(identifier.Data, 0)
        // the heartbeat comes after every server's peers request, which all go out at start
        const second = yield* within(Queue.take(byFlag.requests))
        assert.strictEqual(second.path, "/api/Bootstrap/heartbeat")
        assert.strictEqual(yield* Queue.size(byEnv.requests), 0)
      }).pipe(Effect.provide(NodeContext.layer))
  )
})
