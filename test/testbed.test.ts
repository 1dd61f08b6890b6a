/**
 * The multi-host test bed (test/support/testbed.ts): real hosts in network namespaces on one bridge. The test process
 * only talks to bed programs over their stdin/stdout; every packet to a bed address starts inside the bed. Where the
 * bed cannot be made (not root, no `ip`, namespaces not permitted) these tests are skipped with the reason printed.
 */
import { Command } from "@effect/platform"
import * as fs from "node:fs"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Ref, Stream } from "effect"
import type { BedHost } from "./support/testbed.js"
import {
  BED_NODE_PORT,
  bedNodeScript,
  makeTestBed,
  namespacesMatching,
  TESTBED_NS_ENV,
  TESTBED_ROOT_NETNS_ENV,
  testBedReady
} from "./support/testbed.js"

const ready = await Effect.runPromise(testBedReady)
const bedIt = it.scopedLive.skipIf(!ready.available)

const peerOf = (host: BedHost) => `${host.address}:${BED_NODE_PORT}`

/** Runs a bed node in the test process's own (root) namespace with `env`: its stdout lines and exit code. */
const runOutsideBed = (env: Record<string, string>) =>
  Effect.scoped(
    Effect.gen(function* () {
      const proc = yield* Command.start(
        Command.make(process.execPath, "--import", "tsx", bedNodeScript).pipe(
          // loopback only and no peers: even a broken guard could not send anything towards the bed
          Command.env({ P2P_HOST: "127.0.0.1", P2P_PORT: "0", P2P_PEERS: "", ...env }),
          Command.stdin("inherit")
        )
      )
      const [out, code] = yield* Effect.all([proc.stdout.pipe(Stream.decodeText(), Stream.mkString), proc.exitCode], {
        concurrency: "unbounded"
      })
      return { lines: out.split("\n").filter((l) => l !== ""), code }
    })
  ).pipe(Effect.timeout("30 seconds"), Effect.provide(NodeContext.layer))

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe("multi-host test bed", () => {
  bedIt(
    "three hosts: nodes dial across the bridge, trust each other, and a broadcast from each reaches the other two",
    () =>
      Effect.gen(function* () {
        const bed = yield* makeTestBed({ hosts: 3 })
        const [h1, h2, h3] = [bed.host(1), bed.host(2), bed.host(3)]
        // hosts 2 and 3 dial host 1's bed address (and 3 dials 2) from inside their own namespaces
        const [n1, n2, n3] = yield* bed.startNodes([
          { host: h1 },
          { host: h2, env: { P2P_PEERS: peerOf(h1) } },
          { host: h3, env: { P2P_PEERS: `${peerOf(h1)},${peerOf(h2)}` } }
        ])
        const nodes = [n1!, n2!, n3!]
        for (const node of nodes) {
          for (const other of nodes.filter((o) => o !== node)) {
            yield* node.waitFor("channel", (e) => e.peer === other.id && e.state === "trusted")
          }
        }
        // the channels run over the bed: each peer is seen at its host's bed address
        for (const node of nodes) {
          const { peers } = yield* node.request({ cmd: "peers" }, "peers")
          const others = nodes.filter((o) => o !== node)
          assert.deepStrictEqual(
            peers.map((p) => [p.peer, p.address, p.state]).sort(),
            others.map((o) => [o.id, o.host.address, "trusted"]).sort()
          )
        }
        for (const node of nodes) {
          const sent = yield* node.request(
            { cmd: "broadcast", text: `hello from host ${node.host.index}` },
            "broadcast"
          )
          assert.strictEqual(sent.accepted, 2)
        }
        for (const node of nodes) {
          for (const other of nodes.filter((o) => o !== node)) {
            const m = yield* node.waitFor("message", (e) => e.from === other.id)
            assert.strictEqual(m.text, `hello from host ${other.host.index}`)
          }
        }
      }),
    90_000
  )

  bedIt(
    "broadcast (subnet and 255.255.255.255) and multicast datagrams cross the bridge to every other host",
    () =>
      Effect.gen(function* () {
        const bed = yield* makeTestBed({ hosts: 3 })
        const group = "239.255.77.1"
        const receivers = yield* Effect.forEach(
          [bed.host(2), bed.host(3)],
          (h) => bed.spawn(h, { script: probeScript, args: ["recv", "47001", group] }),
          { concurrency: "unbounded" }
        )
        for (const r of receivers) yield* r.waitFor("ready", (l: any) => l?.ready)
        const targets = [bed.host(1).broadcast, "255.255.255.255", group]
        const sender = yield* bed.spawn(bed.host(1), { script: probeScript, args: ["send", "47001", ...targets] })
        assert.strictEqual(yield* sender.exitCode, 0)
        for (const r of receivers) {
          for (const to of targets) {
            const got = yield* r.waitFor(`a datagram to ${to}`, (l: any) =>
              l?.got?.text === `to ${to}` ? l.got : undefined
            )
            assert.strictEqual(got.from, bed.host(1).address)
          }
        }
      }),
    60_000
  )

  bedIt(
    "a bed node refuses to run in the root namespace, even when told a bed namespace",
    () =>
      Effect.gen(function* () {
        const bed = yield* makeTestBed({ hosts: 1 })
        const namespace = bed.host(1).namespace
        // the environment a bed process gets, but started without `ip netns exec`
        const root = fs.statSync("/proc/self/ns/net", { bigint: true }).ino.toString()
        const copied = yield* runOutsideBed({ [TESTBED_NS_ENV]: namespace, [TESTBED_ROOT_NETNS_ENV]: root })
        assert.notStrictEqual(copied.code, 0)
        assert.match(copied.lines[0]!, /"event":"refused".*root network namespace/)
        assert.isFalse(copied.lines.some((l) => l.includes('"listening"')))
        const claimed = yield* runOutsideBed({ [TESTBED_NS_ENV]: namespace })
        assert.notStrictEqual(claimed.code, 0)
        assert.match(claimed.lines[0]!, new RegExp(`"event":"refused".*not in the test-bed namespace ${namespace}`))
        const unset = yield* runOutsideBed({})
        assert.notStrictEqual(unset.code, 0)
        assert.match(unset.lines[0]!, /"event":"refused".*P2P_TESTBED_NS is not set/)
        // and the bed itself will not start programs anywhere but in its own hosts
        const foreign = yield* Effect.flip(bed.spawn({ ...bed.host(1), namespace: "p2ph1-zz-zz" }))
        assert.strictEqual(foreign._tag, "TestBedMisuse")
      }),
    60_000
  )

  bedIt(
    "teardown deletes every namespace of the run and kills its processes, when the test fails or is interrupted",
    () =>
      Effect.gen(function* () {
        const seen = yield* Ref.make({ run: "", pid: 0 })
        const failed = yield* Effect.exit(
          Effect.scoped(
            Effect.gen(function* () {
              const bed = yield* makeTestBed({ hosts: 2 })
              const probe = yield* bed.spawn(bed.host(1), { script: probeScript, args: ["recv", "47001"] })
              yield* probe.waitFor("ready", (l: any) => l?.ready)
              yield* Ref.set(seen, { run: bed.run, pid: probe.pid })
              return yield* Effect.fail("the test failed")
            })
          )
        )
        assert.isTrue(Exit.isFailure(failed))
        const { run, pid } = yield* Ref.get(seen)
        assert.deepStrictEqual(yield* namespacesMatching(run), [])
        assert.isFalse(isAlive(pid))

        const made = yield* Deferred.make<string>()
        const fiber = yield* Effect.fork(
          Effect.scoped(
            Effect.gen(function* () {
              const bed = yield* makeTestBed({ hosts: 2 })
              yield* Deferred.succeed(made, bed.run)
              return yield* Effect.never
            })
          )
        )
        const interruptedRun = yield* Deferred.await(made).pipe(Effect.timeout("10 seconds"))
        assert.strictEqual((yield* namespacesMatching(interruptedRun)).length, 3)
        yield* Fiber.interrupt(fiber)
        assert.deepStrictEqual(yield* namespacesMatching(interruptedRun), [])
      }),
    60_000
  )
})

describe("dialling across the test bed", () => {
  bedIt(
    "a dial to an address that never answers fails with DialFailed at connectTimeoutMillis, and the node goes on",
    () =>
      Effect.gen(function* () {
        const bed = yield* makeTestBed({ hosts: 2 })
        const [node, other] = yield* bed.startNodes([
          { host: bed.host(1), env: { P2P_CONNECT_TIMEOUT_MS: "400" } },
          { host: bed.host(2) }
        ])
        // an address on the bed's subnet that no host has: the connect gets no answer at all (no ARP reply, so no
        // SYN-ACK and no refusal), from inside host 1's namespace like every packet to a bed address
        const nobody = `${bed.host(1).address.split(".").slice(0, 3).join(".")}.200`
        yield* node!.send({ cmd: "dial", host: nobody, port: BED_NODE_PORT })
        const failed = yield* node!.waitFor("dial-failed", (e) => e.peer === `${nobody}:${BED_NODE_PORT}`)
        assert.include(failed.reason, "timed out after 400 ms")
        // the node still dials, and is dialled
        yield* node!.send({ cmd: "dial", host: other!.host.address, port: BED_NODE_PORT })
        yield* node!.waitFor("channel", (e) => e.peer === other!.id && e.state === "trusted")
      }),
    60_000
  )
})

const probeScript = new URL("./support/bed-udp.ts", import.meta.url).pathname
