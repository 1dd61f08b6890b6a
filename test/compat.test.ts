/**
 * The compatibility profile against a scripted P2PNet (.NET) peer (test/support/legacy-peer.ts: written from the
 * reference spec, sharing no code with src/): legacy discovery by datagram source address, connections both ways, the
 * "Ping from" trust handshake (and what happens without it), every packet kind both ways with one packet per write at
 * least 300 ms apart, and bad legacy input closing only its own channel. Real sockets on 127.0.0.1 only.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, DateTime, Deferred, Effect, Either, Fiber, Layer, Option, Queue, Stream, TestClock } from "effect"
import * as dgram from "node:dgram"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { makeCounters } from "../src/actors/Link.js"
import { legacyNodeId, makeLegacyLink } from "../src/actors/LegacyLink.js"
import type { PeerChannel } from "../src/actors/PeerChannel.js"
import { CompatProfile } from "../src/layers/Compat.js"
import { compatLayer } from "../src/layers/Compatibility.js"
import { DistributionHandler } from "../src/layers/Distribution.js"
import type { LegacyDiscoveryEvent } from "../src/layers/LegacyDiscovery.js"
import { LegacyDiscovery } from "../src/layers/LegacyDiscovery.js"
import { networkLayerWith } from "../src/layers/Network.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import type { NetworkEvent } from "../src/layers/PeerRegistry.js"
import type { CompatSettingsInput } from "../src/schema/compat.js"
import { IpAddress, PeerAddress, Port } from "../src/schema/ids.js"
import { DataTransmission, Identity, NetworkTask, PeerGroup, PureMessage } from "../src/schema/packets.js"
import type { Packet, TaskId } from "../src/schema/packets.js"
import { decodeTaskPayload, encodeTaskPayload } from "../src/schema/tasks.js"
import { NetworkSettings } from "../src/schema/settings.js"
import { encodeFrame } from "../src/schema/wire.js"
import type { LegacyConnection } from "./support/legacy-peer.js"
import {
  collectionShareJson,
  dataTransmissionJson,
  disconnectJson,
  frame,
  identifierJson,
  networkTaskJson,
  pureMessageJson,
  sendDatagram,
  startLegacyPeer,
  udpListener
} from "./support/legacy-peer.js"
import { startNodeProgram } from "./support/node-program.js"
import { fastSettings, message, now } from "./support/nodes.js"
import { memoryStream } from "./support/noise-streams.js"

const PING_MS = 300
const SPACING_MS = 340
const NODE_ID = "node_one"

/** Waits on real I/O with a real-time bound. */
const within = <A, E, R>(self: Effect.Effect<A, E, R>, seconds = 15) =>
  Effect.timeoutFail(self, {
    duration: `${seconds} seconds`,
    onTimeout: () => new Error(`timed out after ${seconds} s`)
  })

const inbox = () => fs.mkdtempSync(path.join(os.tmpdir(), "p2p-compat-"))

/** A node with the compatibility profile on 127.0.0.1: legacy listener on a free port, discovery off unless asked. */
const startCompatNode = (
  compat: CompatSettingsInput = {},
  settings: Partial<ConstructorParameters<typeof NetworkSettings>[0]> = {}
) =>
  Layer.build(
    compatLayer({
      port: 0,
      host: "127.0.0.1",
      identifier: NODE_ID,
      advertisedAddress: "127.0.0.1",
      pingIntervalMillis: PING_MS,
      sendSpacingMillis: SPACING_MS,
      discovery: { enabled: false },
      ...compat
    }).pipe(Layer.provideMerge(networkLayerWith({ ...fastSettings, fileInbox: inbox(), ...settings })))
  ).pipe(
    Effect.map((ctx) => ({
      network: Context.get(ctx, PeerNetwork),
      profile: Context.get(ctx, CompatProfile),
      discovery: Context.get(ctx, LegacyDiscovery),
      distribution: Context.get(ctx, DistributionHandler)
    })),
    Effect.orDie
  )

/** Waits for the first event matching `f`. */
const waitFor = <E, A>(events: Stream.Stream<E>, f: (e: E) => Option.Option<A>) =>
  events.pipe(Stream.filterMap(f), Stream.runHead, Effect.map(Option.getOrThrow))

const closedOn = (port: number) => (e: NetworkEvent) =>
  e._tag === "ChannelStateChanged" && e.state === "closed" && e.channel.port === port
    ? Option.some(e.reason)
    : Option.none()

/** The node's channel for a connection the scripted peer opened (its local port is the channel's remote port). */
const inboundChannel = (events: Stream.Stream<NetworkEvent>, conn: LegacyConnection) =>
  waitFor(events, (e) =>
    e._tag === "ChannelStateChanged" && e.channel.port === conn.socket.localPort && e.state !== "closed"
      ? Option.some(e.channel)
      : Option.none()
  )

/** Takes packets the node received from `channel` until `n` arrived. */
const received = (packets: Stream.Stream<{ channel: PeerChannel; packet: Packet }>, channel: PeerChannel, n: number) =>
  packets.pipe(
    Stream.filter((r) => r.channel.remoteId === channel.remoteId),
    Stream.map((r) => r.packet),
    Stream.take(n),
    Stream.runCollect,
    Effect.map((c) => [...c])
  )

/** A UDP port free right now on 127.0.0.1. */
const freeUdpPort = Effect.promise(
  () =>
    new Promise<number>((resolve) => {
      const s = dgram.createSocket("udp4")
      s.bind(0, "127.0.0.1", () => {
        const port = s.address().port
        s.close(() => resolve(port))
      })
    })
)

describe("compatibility profile", () => {
  it.scopedLive("dials a legacy peer: each side trusts the other after three pings", () =>
    Effect.gen(function* () {
      const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
      const { profile } = yield* startCompatNode({ pingTrust: true })
      const channel = yield* within(profile.dial("127.0.0.1", peer.port))
      assert.strictEqual(channel.direction, "outbound")
      // open at once, and untrusted until the peer's pings arrive
      assert.strictEqual(yield* channel.state, "untrusted")
      const conn = yield* Queue.take(peer.accepted)
      yield* within(channel.awaitTrusted)
      assert.isAtLeast(conn.pingsSent(), 3)
      yield* within(Deferred.await(conn.trusted))
      assert.isAtLeast(conn.pingsReceived(), 3)
      const ping = conn.log.find((r) => r.kind === "Message")!
      assert.strictEqual(ping.json.Message, "Ping from 127.0.0.1")
      assert.strictEqual(ping.json.SourceOriginIdentifier, NODE_ID)
      assert.isTrue(profile.isLegacy(channel))
    })
  )

  it.scopedLive("accepts a legacy peer on its legacy listener and trusts it after the ping handshake", () =>
    Effect.gen(function* () {
      const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
      const { network, profile } = yield* startCompatNode({ pingTrust: true })
      const events = yield* network.registry.subscribeEvents
      const conn = yield* peer.connect(profile.port)
      const channel = yield* within(inboundChannel(events, conn))
      assert.strictEqual(channel.direction, "inbound")
      yield* within(channel.awaitTrusted)
      yield* within(Deferred.await(conn.trusted))
    })
  )

  it.scopedLive("without ping trust a legacy channel stays open and untrusted, and never pings", () =>
    Effect.gen(function* () {
      const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
      const { network, profile } = yield* startCompatNode({ pingTrust: false })
      const events = yield* network.registry.subscribeEvents
      const packets = yield* network.registry.subscribePackets
      const conn = yield* peer.connect(profile.port)
      const channel = yield* within(inboundChannel(events, conn))
      // the peer pings three times (enough for the original to trust), then sends a message and a data packet
      for (let i = 0; i < 3; i++) yield* within(Queue.take(conn.pingQueued))
      yield* conn.send(
        "DataTransmit",
        dataTransmissionJson({ identifier: "legacy_peer", format: "MiscData", data: Buffer.from("dropped") })
      )
      yield* conn.send("Message", pureMessageJson({ identifier: "legacy_peer", message: "after the pings" }))
      // PureMessage passes the gate untrusted (AllowDefaultCommunication); the DataTransmission does not
      const [first] = yield* within(received(packets, channel, 1))
      assert.strictEqual(first?._tag, "PureMessage")
      assert.strictEqual(yield* channel.state, "untrusted")
      assert.strictEqual((yield* channel.stats).droppedGated, 1)
      assert.strictEqual(conn.pingsReceived(), 0)
      const refused = yield* Effect.flip(
        channel.send(
          DataTransmission.make({ format: "MiscData", data: new Uint8Array([1]), origin: network.id, sentAt: now })
        )
      )
      assert.strictEqual(refused._tag, "NotTrusted")
    })
  )

  it.scopedLive("exchanges every packet kind both ways, one packet per write (spacing: see the TestClock test)", () =>
    Effect.gen(function* () {
      const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
      const { distribution, network, profile } = yield* startCompatNode({ pingTrust: true })
      const packets = yield* network.registry.subscribePackets
      const channel = yield* within(profile.dial("127.0.0.1", peer.port))
      const conn = yield* Queue.take(peer.accepted)
      yield* within(channel.awaitTrusted)
      yield* within(Deferred.await(conn.trusted))

      // node -> legacy peer: each arrives as the original would write it
      const origin = network.id
      const time = new Date(now.epochMillis)
      const data = (format: "File" | "Task" | "MiscData", bytes: Uint8Array) =>
        DataTransmission.make({ format, data: bytes, origin, sentAt: now })
      const task = Buffer.from(networkTaskJson(3, { Recipient: "127.0.0.1" }))
      const outgoing: ReadonlyArray<[Packet, string, string]> = [
        [
          Identity.make({
            message: "discovery",
            address: IpAddress.make("127.0.0.1"),
            port: Port.make(8523),
            origin,
            sentAt: now
          }),
          "Identity",
          identifierJson({ identifier: NODE_ID, time, port: 8523, ip: "127.0.0.1" })
        ],
        [
          PeerGroup.make({
            peers: [PeerAddress.make({ address: IpAddress.make("203.0.113.7"), port: Port.make(8523), id: null })],
            origin,
            sentAt: now
          }),
          "PeerGroup",
          collectionShareJson({
            identifier: NODE_ID,
            time,
            data: 0,
            peers: [{ port: 8523, address: "203.0.113.7", identifier: null }]
          })
        ],
        [
          data("File", new Uint8Array([0, 1, 2, 255])),
          "DataTransmit",
          dataTransmissionJson({ identifier: NODE_ID, time, format: "File", data: new Uint8Array([0, 1, 2, 255]) })
        ],
        [
          data("Task", task),
          "DataTransmit",
          dataTransmissionJson({ identifier: NODE_ID, time, format: "Task", data: task })
        ],
        // a native NetworkTask becomes the original's NetworkTask, TaskType by number (SendMessage = 2)
        [
          data(
            "Task",
            Either.getOrThrow(
              encodeTaskPayload(
                NetworkTask.make({
                  id: "t1" as TaskId,
                  taskType: "SendMessage",
                  taskData: { text: "hi" },
                  origin,
                  sentAt: now
                })
              )
            )
          ),
          "DataTransmit",
          dataTransmissionJson({
            identifier: NODE_ID,
            time,
            format: "Task",
            data: Buffer.from(networkTaskJson(2, { text: "hi" }))
          })
        ],
        [
          data("MiscData", Buffer.from("misc")),
          "DataTransmit",
          dataTransmissionJson({ identifier: NODE_ID, time, format: "MiscData", data: Buffer.from("misc") })
        ],
        [
          PureMessage.make({ message: "hello <world> & ünïcode 😀", origin, sentAt: now }),
          "Message",
          pureMessageJson({ identifier: NODE_ID, time, message: "hello <world> & ünïcode 😀" })
        ]
      ]
      yield* channel.sendAll(outgoing.map(([p]) => p))
      for (const [, kind, json] of outgoing) {
        const got = yield* within(conn.next)
        assert.strictEqual(got.kind, kind)
        assert.strictEqual(got.payload, json)
      }
      // Distribution.broadcast reaches legacy peers too
      const result = yield* distribution.broadcast("to everyone")
      assert.strictEqual(result.accepted, 1)
      const broadcast = yield* within(conn.next)
      assert.strictEqual(broadcast.kind, "DataTransmit")
      assert.strictEqual(Buffer.from(broadcast.json.Data, "base64").toString(), "<MiscData>to everyone</MiscData>")
      // nothing coalesced: the original's naive reader parsed every read (the spacing itself is checked on the
      // TestClock below: receive timestamps carry this machine's event-loop jitter)
      assert.isTrue(conn.log.every((r) => r.json !== undefined))

      // legacy peer -> node, including two frames in one write (the original can coalesce; we must split them)
      const from = { identifier: "legacy_peer" }
      yield* conn.send("Identity", identifierJson({ ...from, port: peer.port, ip: "127.0.0.1" }))
      yield* conn.send(
        "PeerGroup",
        collectionShareJson({ ...from, peers: [{ port: peer.port, address: "127.0.0.1", identifier: "legacy_peer" }] })
      )
      yield* conn.send(
        "DataTransmit",
        dataTransmissionJson({ ...from, format: "File", data: new Uint8Array([9, 8, 7]) })
      )
      yield* conn.send("DataTransmit", dataTransmissionJson({ ...from, format: "Task", data: task }))
      yield* conn.sendRaw(
        Buffer.concat([
          frame("DataTransmit", dataTransmissionJson({ ...from, format: "MiscData", data: Buffer.from("misc") })),
          frame("Message", pureMessageJson({ ...from, message: "héllo <there>" }))
        ])
      )
      const got = yield* within(received(packets, channel, 6))
      assert.deepStrictEqual(
        got.map((p) => p._tag),
        ["Identity", "PeerGroup", "DataTransmission", "DataTransmission", "DataTransmission", "PureMessage"]
      )
      const [identity, group, file, taskIn, misc, text] = got as [
        Identity,
        PeerGroup,
        DataTransmission,
        DataTransmission,
        DataTransmission,
        PureMessage
      ]
      assert.strictEqual(identity.address, "127.0.0.1")
      assert.strictEqual(identity.port, peer.port)
      assert.strictEqual(identity.origin, channel.remoteId)
      assert.deepStrictEqual(
        group.peers.map((p) => p.label),
        [`127.0.0.1:${peer.port}`]
      )
      assert.deepStrictEqual([file.format, [...file.data]], ["File", [9, 8, 7]])
      // a legacy NetworkTask arrives as a native one (an id given here), for the task handler and its policy
      const nativeTask = Either.getOrThrow(decodeTaskPayload(taskIn.data)) as NetworkTask
      assert.strictEqual(taskIn.format, "Task")
      assert.deepStrictEqual([nativeTask.taskType, nativeTask.taskData], ["PingPeer", { Recipient: "127.0.0.1" }])
      assert.strictEqual(nativeTask.origin, channel.remoteId)
      assert.deepStrictEqual([misc.format, Buffer.from(misc.data).toString()], ["MiscData", "misc"])
      assert.strictEqual(text.message, "héllo <there>")
      // the PeerGroup named the peer itself: no second connection to it
      assert.strictEqual((yield* network.channels).length, 1)
    })
  )

  it.scopedLive("Disconnect both ways: the node's close reaches the peer; the peer's closes the node's channel", () =>
    Effect.gen(function* () {
      const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
      const { network, profile } = yield* startCompatNode({ pingTrust: false })
      const events = yield* network.registry.subscribeEvents
      const packets = yield* network.registry.subscribePackets

      const channel = yield* within(profile.dial("127.0.0.1", peer.port))
      const conn = yield* Queue.take(peer.accepted)
      yield* channel.close("bye")
      const bye = yield* within(conn.next)
      assert.strictEqual(bye.kind, "Disconnect")
      assert.deepStrictEqual(bye.json.Data, { Reason: "bye" })
      assert.strictEqual((yield* channel.awaitClosed)._tag, "LocalClose")

      const conn2 = yield* peer.connect(profile.port)
      const inbound = yield* within(inboundChannel(events, conn2))
      yield* conn2.send(
        "Disconnect",
        disconnectJson({ identifier: "legacy_peer", ip: "127.0.0.1", port: peer.port, data: { Reason: "done" } })
      )
      const [packet] = yield* within(received(packets, inbound, 1))
      assert.strictEqual(packet?._tag, "Disconnect")
      const reason = yield* within(inbound.awaitClosed)
      assert.strictEqual(reason._tag, "RemoteDisconnected")
      assert.strictEqual(reason.message, "peer disconnected: done")
    })
  )

  it.scopedLive("legacy discovery: announces the legacy port, dials the datagram's source, never the IP it names", () =>
    Effect.gen(function* () {
      const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
      const listener = yield* udpListener()
      const designated = yield* freeUdpPort
      const { discovery, network, profile } = yield* startCompatNode({
        pingTrust: true,
        discovery: {
          enabled: true,
          interfaces: "loopback",
          designatedPorts: [designated],
          broadcasterPort: listener.port,
          fastIntervalMillis: 200,
          slowIntervalMillis: 200,
          jitterMinMillis: 0,
          jitterMaxMillis: 0,
          loopbackDelayMillis: 0
        }
      })
      const found = yield* discovery.subscribe
      // our datagram, as the original sends it
      const ours = yield* within(Queue.take(listener.datagrams))
      assert.strictEqual(ours.source, "127.0.0.1")
      assert.isTrue(
        ours.text.startsWith(
          `{"Message":"discovery","Data":${profile.port},"IP":"127.0.0.1","SourceOriginIdentifier":"${NODE_ID}","SourceOriginTime":"`
        ),
        ours.text
      )
      // garbage first does not stop the listener (B12); then a datagram naming another IP
      yield* sendDatagram("not json", designated)
      yield* sendDatagram(
        identifierJson({ identifier: "legacy_peer", port: peer.port, ip: "10.255.255.1" }),
        designated
      )
      const event = yield* within(
        waitFor(found, (e: LegacyDiscoveryEvent) => (e._tag === "Discovered" ? Option.some(e) : Option.none()))
      )
      assert.strictEqual(event.peer.label, `127.0.0.1:${peer.port}`)
      assert.strictEqual(event.ip, "10.255.255.1")
      // the node connects to the source address, and the peers know each other
      const conn = yield* within(Queue.take(peer.accepted))
      yield* within(Deferred.await(conn.trusted))
      const channel = (yield* network.channels)[0]!
      yield* within(channel.awaitTrusted)
      assert.strictEqual(channel.address, "127.0.0.1")
      const known = yield* network.registry.known
      assert.isFalse(known.some((p) => p.address === "10.255.255.1"))
      assert.isAtLeast((yield* discovery.stats).dropped, 1)
    })
  )

  it.scopedLive("garbage, oversized frames and unknown tags close only that connection, with a typed reason", () =>
    Effect.gen(function* () {
      const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
      const { network, profile } = yield* startCompatNode({ maxBufferBytes: 4096, maxJunkBytes: 1024 })
      const native = yield* Layer.build(networkLayerWith({ ...fastSettings, fileInbox: inbox() })).pipe(
        Effect.map(Context.get(PeerNetwork)),
        Effect.orDie
      )
      const packets = yield* network.registry.subscribePackets
      const events = yield* network.registry.subscribeEvents
      const nativeChannel = yield* within(network.dial("127.0.0.1", native.port))
      yield* within(nativeChannel.awaitTrusted)
      const good = yield* peer.connect(profile.port)
      const goodChannel = yield* within(inboundChannel(events, good))

      const cases: ReadonlyArray<[string, Uint8Array, string]> = [
        ["not JSON", Buffer.from("<Message>this is not json</Message>"), "FrameNotJson"],
        ["unknown tag", Buffer.from('<Hello>{"Message":"x"}</Hello>'), "UnknownPacketKind"],
        ["oversized", Buffer.concat([Buffer.from('<Message>{"Message":"'), Buffer.alloc(8192, 0x61)]), "FrameTooLarge"],
        ["junk", Buffer.alloc(2048, 0x7a), "ProtocolMismatch"],
        ["wrong shape", Buffer.from('<Identity>{"Data":"not a port"}</Identity>'), "InvalidPacket"]
      ]
      for (const [name, bytes, tag] of cases) {
        const watch = yield* network.registry.subscribeEvents
        const socket = yield* peer.connectRaw(profile.port)
        yield* Effect.async<void>((resume) => void socket.write(bytes, () => resume(Effect.void)))
        const reason = yield* within(waitFor(watch, closedOn(socket.localPort!)))
        assert.strictEqual(reason?._tag, tag, name)
      }

      // the other channels keep working: the legacy one, the native one, and a new legacy connection
      assert.isFalse(goodChannel.isClosed())
      yield* good.send("Message", pureMessageJson({ identifier: "legacy_peer", message: "still here" }))
      const [still] = yield* within(received(packets, goodChannel, 1))
      assert.strictEqual((still as PureMessage).message, "still here")
      yield* nativeChannel.send(
        PureMessage.make({ message: "native too", origin: network.id, sentAt: yield* DateTime.now })
      )
      const again = yield* peer.connect(profile.port)
      yield* within(inboundChannel(events, again))
    })
  )
})

describe("node program --compat", () => {
  it.scopedLive(
    "dials a legacy peer given by --legacy-peer and trusts it by the ping handshake; the flag wins over P2P_COMPAT",
    () =>
      Effect.gen(function* () {
        const peer = yield* startLegacyPeer({ pingIntervalMillis: PING_MS })
        const args = ["--log-format", "json", "--no-discovery", "--host", "127.0.0.1", "--port", "0", "--compat"]
        const program = yield* startNodeProgram([...args, "--legacy-peer", `127.0.0.1:${peer.port}`], {
          P2P_COMPAT: "false",
          P2P_COMPAT_PORT: "0",
          P2P_COMPAT_HOST: "127.0.0.1",
          P2P_COMPAT_ADDRESS: "127.0.0.1",
          P2P_COMPAT_DISCOVERY: "false",
          P2P_COMPAT_PING_INTERVAL_MS: String(PING_MS),
          P2P_LOG_LEVEL: "Warning"
        })
        const conn = yield* within(Queue.take(peer.accepted), 30)
        yield* within(Deferred.await(conn.trusted))
        const trusted = yield* program.waitFor((e) => e.event === "channel" && e.state === "trusted")
        assert.strictEqual(trusted.address, "127.0.0.1")
        assert.strictEqual(trusted.port, peer.port)
      }).pipe(Effect.provide(NodeContext.layer)),
    60_000
  )
})

describe("legacy sender pacing (TestClock)", () => {
  it.scoped(
    "one frame per write, each at least sendSpacingMillis after the previous write, other links unaffected",
    () =>
      Effect.gen(function* () {
        const settings = NetworkSettings.make({})
        const open = (spacing: number) =>
          Effect.gen(function* () {
            const mem = memoryStream()
            const link = yield* makeLegacyLink(mem.stream, {
              settings,
              localId: legacyNodeId("127.0.0.1", 1),
              remoteId: legacyNodeId("127.0.0.1", 2),
              listenPort: 1,
              remoteListenPort: 2,
              identifier: NODE_ID,
              sendSpacingMillis: spacing,
              sendQueueCapacity: 16,
              maxBufferBytes: 1 << 20,
              maxJunkBytes: 1024,
              pingsToTrust: 3,
              counters: makeCounters(0)
            })
            return { mem, link }
          })
        const slow = yield* open(300)
        const other = yield* open(300)
        const origin = slow.link.localHello.nodeId
        const frames = [1, 2, 3].map((i) => encodeFrame(message(origin, `m${i}`)))
        // three packets in one write call: still three socket writes, paced
        const sent = yield* Effect.fork(slow.link.write(frames))
        yield* TestClock.adjust(0)
        assert.strictEqual(slow.mem.written.length, 1)
        // another link is not held up by the first one's pacing
        yield* other.link.write([encodeFrame(message(origin, "other"))])
        assert.strictEqual(other.mem.written.length, 1)
        yield* TestClock.adjust(299)
        assert.strictEqual(slow.mem.written.length, 1)
        yield* TestClock.adjust(1)
        assert.strictEqual(slow.mem.written.length, 2)
        yield* TestClock.adjust(299)
        assert.strictEqual(slow.mem.written.length, 2)
        yield* TestClock.adjust(1)
        yield* Fiber.join(sent)
        assert.strictEqual(slow.mem.written.length, 3)
        // each write is exactly one tagged frame
        const texts = slow.mem.written.map((b) => b.toString("utf8"))
        for (const [i, text] of texts.entries()) {
          assert.match(text, /^<Message>\{.*\}<\/Message>$/)
          assert.include(text, `"m${i + 1}"`)
        }
      })
  )
})
