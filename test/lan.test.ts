/**
 * LAN discovery across real hosts (the multi-host test bed, test/support/testbed.ts): nodes in separate network
 * namespaces on one bridge, started with discovery on and no peer addresses, find each other by broadcast and by
 * multicast, leave another network's node alone, and dial only the sender of a forged datagram. The test process talks
 * to bed programs over stdin/stdout only; every datagram and connection starts inside the bed. Skipped, with the
 * reason printed, where the bed cannot be made.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Effect, Layer, Schedule, SubscriptionRef } from "effect"
import type { BedNode, BedProcess, TestBedShape } from "./support/testbed.js"
import { makeTestBed, testBedReady } from "./support/testbed.js"
import type { LanStats, PeerInfo } from "./support/bed-protocol.js"

const ready = await Effect.runPromise(testBedReady)

/** Discovery on, no peers, and rounds every 200-450 ms instead of 1-20 s (everything else default). */
const lan = (env: Record<string, string> = {}) => ({
  P2P_DISCOVERY: "true",
  P2P_PEERS: "",
  P2P_DISCOVERY_FAST_MS: "200",
  P2P_DISCOVERY_SLOW_MS: "400",
  P2P_DISCOVERY_JITTER_MIN_MS: "0",
  P2P_DISCOVERY_JITTER_MAX_MS: "50",
  ...env
})

/** Every wait on the bed is bounded by this (the nodes meet in about a second once they run). */
const MEET = { timeout: "15 seconds" } as const
const DESIGNATED_PORTS = [8001, 8002, 8003]
const MULTICAST_PORT = 8004

const othersOf = (nodes: ReadonlyArray<BedNode>, node: BedNode) => nodes.filter((o) => o !== node)

/** Each node reports a trusted channel to each other one, and exactly those channels, at the others' bed addresses. */
const fullyConnected = (nodes: ReadonlyArray<BedNode>) =>
  Effect.gen(function* () {
    for (const node of nodes) {
      for (const other of othersOf(nodes, node)) {
        yield* node.waitFor("channel", (e) => e.peer === other.id && e.state === "trusted", {
          ...MEET,
          waitingFor: `host ${node.host.index} to trust host ${other.host.index}`
        })
      }
    }
    // a duplicate channel (both sides dialled) may still be closing: asked again until it is gone
    for (const node of nodes) {
      const expected = othersOf(nodes, node)
        .map((o) => JSON.stringify([o.id, o.host.address, "trusted"]))
        .sort()
      const channels = (peers: ReadonlyArray<PeerInfo>) =>
        peers.map((p) => JSON.stringify([p.peer, p.address, p.state])).sort()
      const peers = yield* eventually(
        Effect.map(node.request({ cmd: "peers" }, "peers"), (e) => e.peers),
        (peers) => channels(peers).join() === expected.join(),
        `host ${node.host.index}: trusted channels to exactly the other hosts`
      )
      assert.deepStrictEqual(channels(peers), expected)
    }
  })

/** A PureMessage broadcast by each node reaches each other one. */
const messagesFlow = (nodes: ReadonlyArray<BedNode>) =>
  Effect.gen(function* () {
    for (const node of nodes) {
      const sent = yield* node.request({ cmd: "broadcast", text: `hello from host ${node.host.index}` }, "broadcast")
      assert.strictEqual(sent.accepted, nodes.length - 1)
    }
    for (const node of nodes) {
      for (const other of othersOf(nodes, node)) {
        const m = yield* node.waitFor("message", (e) => e.from === other.id, MEET)
        assert.strictEqual(m.text, `hello from host ${other.host.index}`)
      }
    }
  })

const lanStats = (node: BedNode) =>
  Effect.flatMap(node.request({ cmd: "stats" }, "stats"), (s) =>
    s.discovery === null
      ? Effect.dieMessage(`host ${node.host.index} runs without discovery`)
      : Effect.succeed(s.discovery)
  )

/** Runs `ask` every 100 ms until `done` holds, for at most `MEET`; then fails saying what it waited for. */
const eventually = <A, E>(ask: Effect.Effect<A, E>, done: (a: A) => boolean, waitingFor: string) =>
  ask.pipe(
    Effect.filterOrFail(done, () => "not yet" as const),
    Effect.retry(Schedule.spaced("100 millis")),
    Effect.timeoutFail({ duration: MEET.timeout, onTimeout: () => new Error(`timed out waiting for ${waitingFor}`) })
  )

const statsUntil = (node: BedNode, waitingFor: string, done: (s: LanStats) => boolean) =>
  eventually(lanStats(node), done, `host ${node.host.index}: ${waitingFor}`)

/** Waits until `node` has heard an announcement of each other node that came `via` broadcast or multicast. */
const hearsOthers = (nodes: ReadonlyArray<BedNode>, node: BedNode, via: "broadcast" | "multicast") =>
  statsUntil(node, `a ${via} announcement from each other host`, (s) =>
    othersOf(nodes, node).every((o) => heardFrom(s, o.id)[via] >= 1)
  )

const heardFrom = (s: LanStats, id: string) => s.heard[id] ?? { address: "", broadcast: 0, multicast: 0 }
const droppedFrom = (s: LanStats, address: string, reason: string) => s.droppedFrom[address]?.[reason] ?? 0

const forgeScript = new URL("./support/bed-forge.ts", import.meta.url).pathname
/** The TCP port of the forger (host 5) and of the probe at the address its payload claims (host 6). */
const FORGED_PORT = 9051

/** The TCP probe's (or forger's) first line: ready, with the id it signs as. */
const readyId = (proc: BedProcess) =>
  proc.waitFor("a TCP listener", (l: any) => (l?.ready === true ? (l.id as string) : undefined), MEET)

/**
 * One bed for the default-settings tests: hosts 1-3 run nodes with default discovery (broadcast and multicast), host 4
 * a node of network "other", host 5 a forger of datagrams and host 6 a TCP probe (test/support/bed-forge.ts).
 */
class Lan extends Context.Tag("test/lan/Lan")<
  Lan,
  {
    readonly bed: TestBedShape
    readonly nodes: ReadonlyArray<BedNode>
    readonly foreign: BedNode
    readonly forger: BedProcess
    readonly forgerId: string
    readonly probe: BedProcess
  }
>() {
  static readonly layer = Layer.scoped(
    this,
    Effect.gen(function* () {
      const bed = yield* makeTestBed({ hosts: 6 })
      const [started, forger, probe] = yield* Effect.all(
        [
          bed.startNodes([
            { host: bed.host(1), env: lan() },
            { host: bed.host(2), env: lan() },
            { host: bed.host(3), env: lan() },
            { host: bed.host(4), env: lan({ P2P_NETWORK: "other" }) }
          ]),
          bed.spawn(bed.host(5), { script: forgeScript, args: [String(FORGED_PORT)] }),
          bed.spawn(bed.host(6), { script: forgeScript, args: [String(FORGED_PORT)] })
        ],
        { concurrency: "unbounded" }
      )
      const forgerId = yield* readyId(forger)
      yield* readyId(probe)
      return { bed, nodes: started.slice(0, 3), foreign: started[3]!, forger, forgerId, probe }
    })
  )
}

describe.skipIf(!ready.available)("LAN discovery across hosts", () => {
  layer(Lan.layer, { excludeTestServices: true, timeout: "90 seconds" })("default settings", (it) => {
    it.effect(
      "three hosts with no peer addresses discover each other by broadcast, connect, trust, and exchange messages",
      () =>
        Effect.gen(function* () {
          const { nodes } = yield* Lan
          yield* fullyConnected(nodes)
          // each heard each other's announcements to the subnet broadcast address (and, by default, to the group)
          for (const node of nodes) {
            yield* hearsOthers(nodes, node, "broadcast")
            const stats = yield* hearsOthers(nodes, node, "multicast")
            assert.deepStrictEqual(stats.listening, [...DESIGNATED_PORTS, MULTICAST_PORT])
            for (const other of othersOf(nodes, node)) {
              assert.strictEqual(heardFrom(stats, other.id).address, other.host.address)
            }
          }
          yield* messagesFlow(nodes)
        }),
      60_000
    )

    it.effect(
      "a node of another network is heard and dropped by all, and never connected to or known",
      () =>
        Effect.gen(function* () {
          const { foreign, nodes } = yield* Lan
          yield* fullyConnected(nodes)
          // from here on, enough rounds in both directions that the fourth has surely been heard, and has heard them
          const N = 3
          const before = yield* Effect.forEach([...nodes, foreign], lanStats)
          yield* Effect.forEach(
            nodes,
            (node, i) =>
              statsUntil(
                node,
                `${N} more datagrams from each peer and from the foreign node`,
                (s) =>
                  othersOf(nodes, node).every((o) => {
                    const [now, then] = [heardFrom(s, o.id), heardFrom(before[i]!, o.id)]
                    return now.broadcast + now.multicast >= then.broadcast + then.multicast + N
                  }) &&
                  droppedFrom(s, foreign.host.address, "network") >=
                    droppedFrom(before[i]!, foreign.host.address, "network") + N
              ),
            { concurrency: "unbounded", discard: true }
          )
          const foreignStats = yield* statsUntil(foreign, `${N} more datagrams from each of the three`, (s) =>
            nodes.every(
              (n) => droppedFrom(s, n.host.address, "network") >= droppedFrom(before[3]!, n.host.address, "network") + N
            )
          )
          // the three's datagrams are all the fourth heard, and it dropped every one as foreign
          assert.deepStrictEqual(foreignStats.heard, {})
          assert.strictEqual(foreignStats.accepted, 0)
          const foreignDrops = Object.entries(foreignStats.droppedFrom).filter(([, reasons]) => reasons.network)
          assert.deepStrictEqual(foreignDrops.map(([source]) => source).sort(), nodes.map((n) => n.host.address).sort())
          for (const [, reasons] of Object.entries(foreignStats.droppedFrom)) {
            assert.includeMembers(["network", "self"], Object.keys(reasons))
          }
          for (const node of nodes) {
            const stats = yield* lanStats(node)
            assert.notProperty(stats.heard, foreign.id)
            const { peers } = yield* node.request({ cmd: "peers" }, "peers")
            assert.isFalse(peers.some((p) => p.peer === foreign.id || p.address === foreign.host.address))
            const known = yield* node.request({ cmd: "known" }, "known")
            assert.isFalse(known.peers.some((p) => p.id === foreign.id || p.address === foreign.host.address))
          }
          const { peers } = yield* foreign.request({ cmd: "peers" }, "peers")
          assert.deepStrictEqual(peers, [])
          assert.deepStrictEqual((yield* foreign.request({ cmd: "known" }, "known")).peers, [])
          const { connector } = yield* foreign.request({ cmd: "stats" }, "stats")
          assert.strictEqual(connector.dialled + connector.failed, 0)
        }),
      60_000
    )
    it.effect(
      "a forged datagram naming another address makes a node dial only its sender, and discovery keeps working",
      () =>
        Effect.gen(function* () {
          const { bed, forger, forgerId, nodes, probe } = yield* Lan
          const [n1, forgerHost, claimed] = [nodes[0]!, bed.host(5), bed.host(6)]
          yield* fullyConnected(nodes)
          // from host 5 to host 1: garbage, a bad signature, then a valid announcement that names host 6
          const sentFrom = (yield* SubscriptionRef.get(forger.lines)).length
          yield* forger.writeLine(
            JSON.stringify({ to: n1.host.address, port: DESIGNATED_PORTS[0], claim: claimed.address })
          )
          const sent = yield* forger.waitFor("the forged datagrams", (l: any) => l?.sent ?? l?.failed, {
            from: sentFrom
          })
          assert.deepStrictEqual(sent, ["garbage", "bad-signature", "claims-another-address"])
          // the valid one is dialled at its source address, never at the address it names
          const dialled = yield* forger.waitFor("a connection to the forger", (l: any) => l?.connection?.from, MEET)
          assert.strictEqual(dialled, n1.host.address)
          const discovered = yield* n1.waitFor("discovered", (e) => e.id === forgerId, MEET)
          assert.deepStrictEqual([discovered.address, discovered.port], [forgerHost.address, FORGED_PORT])
          const known = yield* n1.request({ cmd: "known" }, "known")
          assert.deepStrictEqual(
            known.peers.filter((p) => p.port === FORGED_PORT || p.id === forgerId || p.address === claimed.address),
            [{ address: forgerHost.address, port: FORGED_PORT, id: forgerId }]
          )
          // garbage and the bad signature were dropped and counted; the valid one was heard at the forger's address
          // Dropped and Discovered events are tallied in order: once the forger is heard, the drops are counted
          const after = yield* statsUntil(n1, "the forger's announcement", (s) => heardFrom(s, forgerId).broadcast >= 1)
          assert.isAtLeast(droppedFrom(after, forgerHost.address, "malformed"), 1)
          assert.isAtLeast(droppedFrom(after, forgerHost.address, "signature"), 1)
          assert.strictEqual(heardFrom(after, forgerId).address, forgerHost.address)
          // discovery keeps working: the other two are still heard, round after round, and still trusted
          const total = (s: LanStats, id: string) => heardFrom(s, id).broadcast + heardFrom(s, id).multicast
          const later = yield* statsUntil(n1, "the next rounds of hosts 2 and 3", (s) =>
            othersOf(nodes, n1).every((o) => total(s, o.id) >= total(after, o.id) + 2)
          )
          assert.isTrue(later.running)
          assert.deepStrictEqual(later.listening, [...DESIGNATED_PORTS, MULTICAST_PORT])
          yield* fullyConnected(nodes)
          // and nothing ever connected to the claimed address
          assert.isFalse((yield* SubscriptionRef.get(probe.lines)).some((l: any) => l?.connection !== undefined))
        }),
      60_000
    )
  })

  it.scopedLive(
    "with broadcast off and multicast only, three hosts discover each other, connect, trust, and exchange messages",
    () =>
      Effect.gen(function* () {
        const bed = yield* makeTestBed({ hosts: 3 })
        const env = lan({ P2P_BROADCAST: "false", P2P_MULTICAST: "true" })
        const nodes = yield* bed.startNodes(bed.hosts.map((host) => ({ host, env })))
        yield* fullyConnected(nodes)
        for (const node of nodes) {
          const stats = yield* hearsOthers(nodes, node, "multicast")
          assert.deepStrictEqual(stats.listening, [MULTICAST_PORT])
          for (const other of othersOf(nodes, node)) {
            assert.strictEqual(heardFrom(stats, other.id).address, other.host.address)
            assert.strictEqual(heardFrom(stats, other.id).broadcast, 0)
          }
        }
        yield* messagesFlow(nodes)
      }),
    60_000
  )
})
