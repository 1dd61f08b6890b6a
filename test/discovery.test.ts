/**
 * LAN discovery on loopback only (interfaces mode "loopback", random free UDP ports, never 8001-8003): nodes find each
 * other through the loopback broadcast (and multicast on lo with TTL 0), forged datagrams are dropped and counted
 * without any dial but to their sender, stop closes everything, and the send rate and port rotation follow the clock.
 * No test here sends anything to a non-loopback address.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer, Option, Queue, Stream, TestClock, TestServices } from "effect"
import type { Scope } from "effect"
import * as crypto from "node:crypto"
import * as dgram from "node:dgram"
import * as fs from "node:fs"
import * as net from "node:net"
import { checkDatagram, encodeAnnouncement } from "../src/actors/DiscoveryCodec.js"
import { ROTATE_BROADCAST_PORT } from "../src/layers/DefaultRoutines.js"
import type { DiscoveryEvent, DiscoverySettingsInput } from "../src/layers/Discovery.js"
import { Discovery, discoveryLayer, discoverySettingsFromEnv } from "../src/layers/Discovery.js"
import { networkLayerWith } from "../src/layers/Network.js"
import type { NodeKeys } from "../src/layers/NodeIdentity.js"
import { generateKeys, keysFromPrivateKey } from "../src/layers/NodeIdentity.js"
import { PeerConnector } from "../src/layers/PeerConnector.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { RoutineScheduler } from "../src/layers/RoutineScheduler.js"
import { signedBytes } from "../src/schema/discovery.js"
import type { DropReason } from "../src/schema/discovery.js"
import type { NetworkSettings } from "../src/schema/settings.js"
import { fastSettings, startNode } from "./support/nodes.js"

/** Waits on real I/O with a real-time bound, also under the TestClock. */
const within = <A, E, R>(self: Effect.Effect<A, E, R>, seconds = 10) =>
  TestServices.provideLive(Effect.timeoutFail(self, { duration: `${seconds} seconds`, onTimeout: () => "timed out" }))

/** UDP ports free right now on 0.0.0.0 (bound to port 0, then released); `n` of them, at most 4. */
const freeUdpPorts = (n: 1 | 2 | 3 | 4): Effect.Effect<[number, number, number, number]> =>
  Effect.promise(async () => {
    const sockets = await Promise.all(
      Array.from(
        { length: n },
        () =>
          new Promise<dgram.Socket>((resolve) => {
            const s = dgram.createSocket("udp4")
            s.bind(0, "0.0.0.0", () => resolve(s))
          })
      )
    )
    const ports = sockets.map((s) => s.address().port)
    await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
    return ports as [number, number, number, number]
  })

interface Datagram {
  readonly text: string
  readonly source: string
}

/** Closes a socket; closing it again does nothing. */
const close = (s: dgram.Socket) =>
  Effect.async<void>((resume) => {
    try {
      s.close(() => resume(Effect.void))
    } catch {
      resume(Effect.void)
    }
  })

/** A test socket on 0.0.0.0:port sharing the port (SO_REUSEADDR), optionally in the group on lo; datagrams queued. */
const udpListener = (port: number, group?: string) =>
  Effect.gen(function* () {
    const received = yield* Queue.unbounded<Datagram>()
    const socket = yield* Effect.acquireRelease(
      Effect.async<dgram.Socket>((resume) => {
        const s = dgram.createSocket({ type: "udp4", reuseAddr: true })
        s.on("message", (m, r) => {
          Queue.unsafeOffer(received, { text: m.toString("utf8"), source: r.address })
        })
        s.bind(port, "0.0.0.0", () => {
          if (group !== undefined) s.addMembership(group, "127.0.0.1")
          resume(Effect.succeed(s))
        })
      }),
      (s) => close(s)
    )
    return { received, close: close(socket) }
  })

/** Sends bytes from a fresh socket on 127.0.0.1 to a loopback address (127.255.255.255 as a broadcast). */
const sendFromTest = (bytes: Uint8Array | string, port: number, address = "127.0.0.1") =>
  Effect.async<void>((resume) => {
    if (!address.startsWith("127.")) throw new Error("tests send to loopback only")
    const s = dgram.createSocket("udp4")
    s.bind(0, "127.0.0.1", () => {
      s.setBroadcast(true)
      s.send(bytes, port, address, () => s.close(() => resume(Effect.void)))
    })
  })

/** Sends to the multicast group out of lo only, TTL 0 (never leaves this host). */
const sendToGroup = (bytes: string, port: number, group = "239.255.42.99") =>
  Effect.async<void>((resume) => {
    const s = dgram.createSocket("udp4")
    s.bind(0, "127.0.0.1", () => {
      s.setMulticastTTL(0)
      s.setMulticastInterface("127.0.0.1")
      s.send(bytes, port, group, () => s.close(() => resume(Effect.void)))
    })
  })

/** Every event from now on, in a queue (a subscription read by one fiber for the life of the scope). */
const eventQueue = (discovery: Discovery["Type"]) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<DiscoveryEvent>()
    const events = yield* discovery.subscribe
    yield* Effect.forkScoped(Stream.runForEach(events, (e) => Queue.offer(queue, e)))
    return queue
  })

/** Binds the ports without SO_REUSEADDR: succeeds only if no socket holds them any more. */
const bindExclusively = (ports: ReadonlyArray<number>) =>
  Effect.forEach(ports, (port) =>
    Effect.async<boolean>((resume) => {
      const s = dgram.createSocket({ type: "udp4", reuseAddr: false })
      s.once("error", () => resume(Effect.succeed(false)))
      s.bind(port, "0.0.0.0", () => s.close(() => resume(Effect.succeed(true))))
    })
  )

type NetworkInput = Partial<ConstructorParameters<typeof NetworkSettings>[0]>

/** A network on 127.0.0.1 with discovery in loopback mode (whatever `settings` says), in the current scope. */
const startDiscoveryNode = (
  settings: DiscoverySettingsInput,
  network: NetworkInput = {}
): Effect.Effect<
  {
    network: PeerNetwork["Type"]
    discovery: Discovery["Type"]
    connector: PeerConnector["Type"]
    scheduler: RoutineScheduler["Type"]
  },
  never,
  Scope.Scope
> =>
  Layer.build(
    discoveryLayer({ ...settings, interfaces: "loopback" }).pipe(
      Layer.provideMerge(networkLayerWith({ ...fastSettings, ...network }))
    )
  ).pipe(
    Effect.map((ctx) => ({
      network: Context.get(ctx, PeerNetwork),
      discovery: Context.get(ctx, Discovery),
      connector: Context.get(ctx, PeerConnector),
      scheduler: Context.get(ctx, RoutineScheduler)
    })),
    Effect.orDie
  )

const quick: DiscoverySettingsInput = {
  fastIntervalMillis: 50,
  slowIntervalMillis: 200,
  wavePeriodMillis: 2_000,
  jitterMinMillis: 0,
  jitterMaxMillis: 10
}

const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64")

/** A datagram's JSON fields, signed by `keys` unless `sign` is false; `extra` is merged in after signing. */
const forged = (
  keys: NodeKeys,
  o: {
    port: number
    sentAt: number
    network?: string
    id?: string
    version?: number
    extra?: Record<string, unknown>
  }
) => {
  const fields = {
    version: o.version ?? 1,
    network: o.network ?? "p2pnet",
    id: (o.id ?? keys.id) as NodeKeys["id"],
    port: o.port,
    publicKey: keys.publicKey,
    sentAt: o.sentAt
  }
  return JSON.stringify({
    ...fields,
    publicKey: b64(keys.publicKey),
    signature: b64(keys.sign(signedBytes(fields))),
    ...o.extra
  })
}

/** The next event that is not the node hearing itself. */
const nextEvent = (events: Queue.Queue<DiscoveryEvent>): Effect.Effect<DiscoveryEvent, string> =>
  Effect.flatMap(within(Queue.take(events)), (e) =>
    e._tag === "Dropped" && e.reason === "self" ? nextEvent(events) : Effect.succeed(e)
  )

const droppedFor = (events: Queue.Queue<DiscoveryEvent>) =>
  Effect.map(nextEvent(events), (e) => (e._tag === "Dropped" ? e.reason : `discovered ${e.peer.label}`))

describe("discovery datagram", () => {
  const keys = generateKeys()
  const ctx = {
    network: "p2pnet",
    networkKey: "",
    self: generateKeys().id,
    now: 1_700_000_000_000,
    maxAgeMillis: 60_000,
    maxDatagramBytes: 1024
  }
  const reason = (bytes: Uint8Array | string, c = ctx) => {
    const r = checkDatagram(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes, c)
    return r._tag === "Left" ? r.left.reason : "ok"
  }

  it("a node's announcement passes every check; each defect is named", () => {
    const valid = encodeAnnouncement(keys, { network: "p2pnet", networkKey: "", port: 8523, sentAt: ctx.now })
    assert.isBelow(valid.length, 400)
    assert.strictEqual(reason(valid), "ok")
    const json = JSON.parse(new TextDecoder().decode(valid))
    assert.deepStrictEqual(Object.keys(json), ["version", "network", "id", "port", "publicKey", "sentAt", "signature"])
    assert.strictEqual(reason(valid, { ...ctx, self: keys.id }), "self")
    assert.strictEqual(reason(valid, { ...ctx, network: "other" }), "network")
    assert.strictEqual(reason(valid, { ...ctx, now: ctx.now + 61_000 }), "stale")
    assert.strictEqual(reason(valid, { ...ctx, networkKey: "secret" }), "networkKey")
    assert.strictEqual(reason(new Uint8Array(2000)), "oversized")
    assert.strictEqual(reason(new Uint8Array([0xff, 0xfe, 0x00])), "malformed")
    assert.strictEqual(reason("[1,2,3]"), "malformed")
    assert.strictEqual(reason(JSON.stringify({ ...json, signature: undefined })), "malformed")
    assert.strictEqual(reason(JSON.stringify({ ...json, version: 2 })), "version")
    assert.strictEqual(reason(JSON.stringify({ ...json, port: 9999 })), "signature")
    assert.strictEqual(reason(JSON.stringify({ ...json, id: generateKeys().id })), "identity")
    // several defects: the first check in order names it
    assert.strictEqual(reason(JSON.stringify({ ...json, network: "other", port: 1 })), "network")
  })

  it("with a network key, the MAC is required and checked", () => {
    const keyed = { ...ctx, networkKey: "secret" }
    const mine = encodeAnnouncement(keys, { network: "p2pnet", networkKey: "secret", port: 8523, sentAt: ctx.now })
    assert.strictEqual(reason(mine, keyed), "ok")
    assert.strictEqual(reason(mine), "networkKey", "a keyed announcement is not accepted without the key")
    const wrong = encodeAnnouncement(keys, { network: "p2pnet", networkKey: "guess", port: 8523, sentAt: ctx.now })
    assert.strictEqual(reason(wrong, keyed), "networkKey")
  })

  it("the example of docs/protocol.md section 15 reproduces byte for byte", () => {
    const seed = Buffer.alloc(32, 7)
    const pkcs8 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed])
    const fixed = keysFromPrivateKey(crypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }))
    const doc = fs.readFileSync(new URL("../docs/protocol.md", import.meta.url), "utf8")
    const example = new TextDecoder().decode(
      encodeAnnouncement(fixed, { network: "p2pnet", networkKey: "", port: 8523, sentAt: 1_700_000_000_000 })
    )
    assert.include(doc, "```\n" + example + "\n```")
    assert.include(doc, `${example.length} bytes`)
    const signed = new TextDecoder().decode(
      signedBytes({
        version: 1,
        network: "p2pnet",
        id: fixed.id,
        port: 8523,
        publicKey: fixed.publicKey,
        sentAt: 1_700_000_000_000
      })
    )
    assert.include(doc, "```\n" + signed + "\n```")
    const keyed = JSON.parse(
      new TextDecoder().decode(
        encodeAnnouncement(fixed, { network: "p2pnet", networkKey: "secret", port: 8523, sentAt: 1_700_000_000_000 })
      )
    )
    assert.include(doc, `"mac":"${keyed.mac}"`)
  })

  it("settings from P2P_* variables, validated", () =>
    Effect.gen(function* () {
      const fromEnv = (env: Record<string, string>) =>
        Effect.withConfigProvider(discoverySettingsFromEnv, ConfigProvider.fromMap(new Map(Object.entries(env))))
      const s = yield* fromEnv({
        P2P_DESIGNATED_PORTS: "9001,9002",
        P2P_MULTICAST: "false",
        P2P_MULTICAST_GROUP: "239.1.2.3",
        P2P_DISCOVERY_INTERFACES: "loopback",
        P2P_DISCOVERY_ENOUGH_PEERS: "2"
      })
      assert.deepStrictEqual(s.designatedPorts, [9001, 9002])
      assert.isFalse(s.multicast)
      assert.strictEqual(s.multicastGroup, "239.1.2.3")
      assert.strictEqual(s.interfaces, "loopback")
      assert.strictEqual(s.enoughPeers, 2)
      assert.strictEqual(s.multicastPort, 8004)
      const defaults = yield* fromEnv({})
      assert.deepStrictEqual(defaults.designatedPorts, [8001, 8002, 8003])
      assert.strictEqual(defaults.multicastGroup, "239.255.42.99")
      for (const bad of [{ P2P_MULTICAST_GROUP: "10.0.0.1" }, { P2P_DISCOVERY_JITTER_MIN_MS: "500" }]) {
        const e = yield* Effect.flip(fromEnv(bad))
        assert.include(String(e), "invalid discovery settings")
      }
    }).pipe(Effect.runPromise))
})

describe("LAN discovery on loopback", () => {
  it.scopedLive("two nodes in one process find each other through the loopback broadcast, connect and trust", () =>
    Effect.gen(function* () {
      const designatedPorts = yield* freeUdpPorts(3)
      const settings = { ...quick, designatedPorts, multicast: false }
      const a = yield* startDiscoveryNode(settings)
      const b = yield* startDiscoveryNode(settings)
      for (const [x, y] of [
        [a, b],
        [b, a]
      ] as const) {
        const channel = yield* within(x.network.awaitChannel(y.network.id))
        yield* within(channel.awaitTrusted)
        assert.strictEqual(channel.address, "127.0.0.1")
      }
      // both keep announcing: each hears the other, and its own copy, which it ignores
      for (const [x, y] of [
        [a, b],
        [b, a]
      ] as const) {
        const events = yield* eventQueue(x.discovery)
        const heard = { other: false, self: false }
        while (!heard.other || !heard.self) {
          const e = yield* within(Queue.take(events))
          if (e._tag === "Discovered" && e.peer.id === y.network.id) heard.other = true
          if (e._tag === "Dropped" && e.reason === "self") heard.self = true
        }
        assert.deepStrictEqual((yield* x.discovery.stats).listening, designatedPorts)
      }
    })
  )

  it.scopedLive("multicast only (group on lo, TTL 0): two nodes find each other and trust", () =>
    Effect.gen(function* () {
      const [designated, multicastPort] = yield* freeUdpPorts(2)
      const settings = { ...quick, designatedPorts: [designated], broadcast: false, multicastPort: multicastPort }
      const a = yield* startDiscoveryNode(settings)
      const b = yield* startDiscoveryNode(settings)
      yield* within(Effect.flatMap(a.network.awaitChannel(b.network.id), (c) => c.awaitTrusted))
      yield* within(Effect.flatMap(b.network.awaitChannel(a.network.id), (c) => c.awaitTrusted))
      const stats = yield* a.discovery.stats
      assert.deepStrictEqual(stats.listening, [multicastPort])
      assert.isAtLeast(stats.accepted, 1)
    })
  )

  it.scopedLive("a node of another network is heard, dropped as foreign, and never dialled", () =>
    Effect.gen(function* () {
      const designatedPorts = yield* freeUdpPorts(1)
      const settings = { ...quick, designatedPorts, multicast: false }
      const a = yield* startDiscoveryNode(settings)
      const events = yield* a.discovery.subscribe
      const other = yield* startDiscoveryNode(settings, { network: "elsewhere" })
      const foreign = yield* within(
        events.pipe(
          Stream.filter((e) => e._tag === "Dropped" && e.reason === "network"),
          Stream.runHead
        )
      )
      assert.isTrue(Option.isSome(foreign))
      assert.strictEqual((yield* a.connector.stats).dialled, 0)
      assert.isFalse((yield* a.network.registry.known).some((p) => p.id === other.network.id))
    })
  )

  it.scopedLive(
    "forged datagrams are dropped and counted; a dial only ever goes to the sender; the listener keeps working",
    () =>
      Effect.gen(function* () {
        const [port] = yield* freeUdpPorts(1)
        // long intervals: the node's own announcements stay out of the way
        const node = yield* startDiscoveryNode({
          designatedPorts: [port],
          multicast: false,
          fastIntervalMillis: 60_000,
          slowIntervalMillis: 60_000
        })
        // the "sender's" TCP port: a plain server that records who connects to it
        const connections = yield* Queue.unbounded<string>()
        const server = yield* Effect.acquireRelease(
          Effect.async<net.Server>((resume) => {
            const s = net.createServer((socket) => {
              Queue.unsafeOffer(connections, socket.remoteAddress ?? "")
              socket.destroy()
            })
            s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
          }),
          (s) =>
            Effect.async<void>((resume) => {
              s.close(() => resume(Effect.void))
            })
        )
        const tcpPort = (server.address() as net.AddressInfo).port
        const events = yield* eventQueue(node.discovery)
        const stranger = generateKeys()
        const now = Date.now()
        const signed = (o: Partial<Parameters<typeof forged>[1]> = {}) =>
          forged(stranger, { port: tcpPort, sentAt: now, ...o })
        const cases: ReadonlyArray<readonly [DropReason, Uint8Array | string]> = [
          ["malformed", new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x00])],
          ["malformed", "{not json"],
          ["oversized", "x".repeat(2000)],
          ["malformed", JSON.stringify({ ...JSON.parse(signed()), signature: undefined })],
          ["signature", JSON.stringify({ ...JSON.parse(signed()), port: tcpPort + 1 })],
          ["network", signed({ network: "elsewhere" })],
          ["identity", signed({ id: generateKeys().id })],
          ["stale", signed({ sentAt: now - 10 * 60_000 })],
          ["version", signed({ version: 7 })]
        ]
        for (const [expected, bytes] of cases) {
          yield* sendFromTest(bytes, port)
          assert.strictEqual(yield* droppedFor(events), expected)
        }
        // valid, with an address in the payload: the node dials the datagram's source, never 192.0.2.77
        yield* sendFromTest(signed({ extra: { address: "192.0.2.77", IP: "192.0.2.77" } }), port)
        const discovered = yield* nextEvent(events)
        assert.strictEqual(discovered._tag, "Discovered")
        if (discovered._tag === "Discovered") {
          assert.deepStrictEqual([discovered.peer.address, discovered.peer.port], ["127.0.0.1", tcpPort])
          assert.strictEqual(discovered.peer.id, stranger.id)
        }
        assert.strictEqual(yield* within(Queue.take(connections)), "127.0.0.1")
        const known = yield* node.network.registry.known
        assert.deepStrictEqual(
          known.map((p) => p.label),
          [`127.0.0.1:${tcpPort}`]
        )
        const stats = yield* node.discovery.stats
        assert.deepStrictEqual(
          { ...stats.dropped, self: 0 },
          {
            source: 0,
            oversized: 1,
            malformed: 3,
            version: 1,
            network: 1,
            identity: 1,
            signature: 1,
            networkKey: 0,
            stale: 1,
            self: 0,
            overloaded: 0
          }
        )
        assert.strictEqual(stats.accepted, 1)
        assert.strictEqual(stats.offered, 1)
        assert.isAtMost((yield* node.connector.stats).dialled + (yield* node.connector.stats).failed, 1)
      })
  )

  it.scoped("stop: no more datagrams, every port released; stop is idempotent and start again works once", () =>
    Effect.gen(function* () {
      const [p1, p2, multicastPort] = yield* freeUdpPorts(3)
      const onPort = yield* udpListener(p1)
      const onGroup = yield* udpListener(multicastPort, "239.255.42.99")
      const node = yield* startDiscoveryNode({
        designatedPorts: [p1, p2],
        broadcasterPort: p1,
        multicastPort: multicastPort
      })
      // the round sent when the layer started, by broadcast and by multicast
      assert.include((yield* within(Queue.take(onPort.received))).text, node.network.id)
      assert.include((yield* within(Queue.take(onGroup.received))).text, node.network.id)
      const listening = (yield* node.discovery.stats).listening
      assert.deepStrictEqual(listening, [p1, p2, multicastPort])

      yield* node.discovery.stop
      yield* node.discovery.stop
      const sent = (yield* node.discovery.stats).sent
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual((yield* node.discovery.stats).sent, sent)
      assert.isFalse((yield* node.discovery.stats).running)
      // anything sent since the stop would be queued before this marker
      yield* sendFromTest("marker", p1, "127.255.255.255")
      assert.strictEqual((yield* within(Queue.take(onPort.received))).text, "marker")
      yield* sendToGroup("marker", multicastPort)
      assert.strictEqual((yield* within(Queue.take(onGroup.received))).text, "marker")

      // closing our own listeners leaves the ports to nobody: they bind without SO_REUSEADDR
      yield* onPort.close
      yield* onGroup.close
      assert.deepStrictEqual(yield* bindExclusively([p1, p2, multicastPort]), [true, true, true])

      // started twice, it runs once: one datagram per round
      const again = yield* udpListener(p1)
      yield* Effect.all([node.discovery.start, node.discovery.start], { concurrency: 2 })
      assert.include((yield* within(Queue.take(again.received))).text, node.network.id)
      yield* sendFromTest("marker", p1, "127.255.255.255")
      assert.strictEqual((yield* within(Queue.take(again.received))).text, "marker")
    })
  )

  it.scoped("send interval: the original's sine between 1 s and 20 s over 120 s plus 100-299 ms, from the clock", () =>
    Effect.gen(function* () {
      const [port] = yield* freeUdpPorts(1)
      const onPort = yield* udpListener(port)
      const node = yield* startDiscoveryNode({ designatedPorts: [port], multicast: false, enoughPeers: 1 })
      const between = (ms: number, lo: number, hi: number) => assert.isTrue(ms >= lo && ms <= hi, `${ms}`)
      between(yield* node.discovery.nextInterval, 10_600, 10_799) // t = 0: middle of the wave
      assert.include((yield* within(Queue.take(onPort.received))).text, node.network.id, "the round at t = 0")
      // the round after the one at t = 0 comes 10 600-10 799 ms later
      yield* TestClock.adjust(10_599)
      yield* sendFromTest("marker", port, "127.255.255.255")
      assert.strictEqual((yield* within(Queue.take(onPort.received))).text, "marker")
      yield* TestClock.adjust(200)
      assert.include((yield* within(Queue.take(onPort.received))).text, node.network.id)

      yield* TestClock.setTime(30_000) // top of the wave: fastest
      between(yield* node.discovery.nextInterval, 1_100, 1_299)
      yield* TestClock.setTime(90_000) // bottom: slowest
      between(yield* node.discovery.nextInterval, 20_100, 20_299)

      // enough trusted peers (here 1): the slow end whatever the wave says
      yield* TestClock.setTime(150_000)
      between(yield* node.discovery.nextInterval, 1_100, 1_299)
      const peer = yield* startNode()
      const channel = yield* node.network.dial("127.0.0.1", peer.port)
      yield* channel.awaitTrusted
      between(yield* node.discovery.nextInterval, 20_100, 20_299)
    })
  )

  it.scoped("RotateBroadcastPort moves the broadcaster to the other designated port", () =>
    Effect.gen(function* () {
      const [p1, p2] = yield* freeUdpPorts(2)
      const first = yield* udpListener(p1)
      const second = yield* udpListener(p2)
      const node = yield* startDiscoveryNode({
        designatedPorts: [p1, p2],
        broadcasterPort: p1,
        multicast: false,
        // one round a minute, no jitter: at t = 0, 60 s, 120 s
        fastIntervalMillis: 60_000,
        slowIntervalMillis: 60_000,
        jitterMinMillis: 0,
        jitterMaxMillis: 0
      })
      assert.include((yield* within(Queue.take(first.received))).text, node.network.id, "the round at t = 0")
      const routine = (yield* node.scheduler.list).find((r) => r.name === ROTATE_BROADCAST_PORT)!
      assert.isFalse(routine.running, "still registered stopped, with the original's 30 s")
      assert.strictEqual(routine.intervalMillis, 30_000)
      yield* node.scheduler.start(ROTATE_BROADCAST_PORT)
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual(yield* node.discovery.broadcasterPort, p2)
      yield* node.scheduler.stop(ROTATE_BROADCAST_PORT) // else it would rotate back at 60 s
      yield* TestClock.adjust("30 seconds")
      assert.include((yield* within(Queue.take(second.received))).text, node.network.id)
      yield* sendFromTest("marker", p1, "127.255.255.255")
      assert.strictEqual((yield* within(Queue.take(first.received))).text, "marker", "nothing more on the old port")
    })
  )

  it.scoped("with all designated ports equal, rotation stays put instead of looping", () =>
    Effect.gen(function* () {
      const [port] = yield* freeUdpPorts(1)
      const node = yield* startDiscoveryNode({ designatedPorts: [port, port, port], multicast: false })
      assert.strictEqual(yield* within(node.discovery.rotate, 2), port)
      yield* node.scheduler.start(ROTATE_BROADCAST_PORT)
      yield* TestClock.adjust("30 seconds")
      const routine = (yield* node.scheduler.list).find((r) => r.name === ROTATE_BROADCAST_PORT)!
      assert.strictEqual(routine.runs, 1)
      assert.isTrue(Option.isNone(routine.lastError))
      assert.strictEqual(yield* node.discovery.broadcasterPort, port)
      assert.deepStrictEqual((yield* node.discovery.stats).listening, [port])
    })
  )

  it.scoped("enabled: false builds discovery without starting it", () =>
    Effect.gen(function* () {
      const [port] = yield* freeUdpPorts(1)
      const node = yield* startDiscoveryNode({ designatedPorts: [port], enabled: false })
      assert.isFalse(yield* node.discovery.isRunning)
      assert.deepStrictEqual(yield* bindExclusively([port]), [true])
    })
  )
})
