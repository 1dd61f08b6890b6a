/**
 * The interface scan on fake interface tables (node:os shapes): typed error without interfaces, loopback-only mode,
 * broadcast addresses and the primary interface, refresh and the RefreshInterfaces routine; and the discovery targets
 * derived from a table, whose "loopback" mode never leaves 127.0.0.0/8.
 */
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Either, Fiber, Layer, Option, Stream, TestClock } from "effect"
import type * as os from "node:os"
import { broadcastTargets, multicastInterfaces } from "../src/actors/DiscoveryTargets.js"
import type { InterfaceSource } from "../src/layers/Interfaces.js"
import { interfaceTable, NetworkInterfaces, REFRESH_INTERFACES } from "../src/layers/Interfaces.js"
import { RoutineScheduler } from "../src/layers/RoutineScheduler.js"
import type { InterfaceTable } from "../src/schema/interfaces.js"

const v4 = (
  address: string,
  netmask: string,
  internal = false,
  cidr: string | null = null
): os.NetworkInterfaceInfo => ({
  address,
  netmask,
  family: "IPv4",
  mac: internal ? "00:00:00:00:00:00" : "02:00:00:00:00:01",
  internal,
  cidr
})
const v6 = (address: string, netmask: string, internal = false, scopeid = 0): os.NetworkInterfaceInfo => ({
  address,
  netmask,
  family: "IPv6",
  mac: internal ? "00:00:00:00:00:00" : "02:00:00:00:00:01",
  internal,
  cidr: null,
  scopeid
})

const lo = [
  v4("127.0.0.1", "255.0.0.0", true, "127.0.0.1/8"),
  v6("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true)
]
const several = {
  lo,
  wg0: [v6("fd00:1::2", "ffff:ffff:ffff:ffff::")],
  eth0: [
    v4("192.168.1.20", "255.255.255.0", false, "192.168.1.20/24"),
    v6("fe80::1", "ffff:ffff:ffff:ffff::", false, 2)
  ],
  wlan0: [v4("10.0.5.7", "255.255.252.0")],
  tun0: [v4("10.8.0.2", "255.255.255.255")],
  ptp0: [v4("100.64.0.0", "255.255.255.254")],
  down0: []
}

const scanWith = (source: InterfaceSource) =>
  Effect.flatMap(NetworkInterfaces, (i) => i.scan).pipe(Effect.provide(NetworkInterfaces.layerFrom(source)))

const byName = (t: InterfaceTable, name: string) => t.interfaces.find((i) => i.name === name)!

describe("NetworkInterfaces", () => {
  it.effect("no interface with an address is a typed NoUsableInterface, not a crash", () =>
    Effect.gen(function* () {
      const empty = yield* Effect.flip(scanWith(() => ({})))
      assert.strictEqual(empty._tag, "NoUsableInterface")
      assert.include(empty.message, "no usable network interface")
      const onlyEmpty = yield* Effect.flip(scanWith(() => ({ eth0: [], wlan0: undefined })))
      assert.strictEqual(onlyEmpty._tag, "NoUsableInterface")
      const failing = yield* Effect.flip(
        scanWith(() => {
          throw new Error("EPERM: getifaddrs")
        })
      )
      assert.include(failing.message, "EPERM: getifaddrs")
    })
  )

  it.effect("loopback only is a supported mode: loopback is primary and broadcasts to 127.255.255.255", () =>
    Effect.gen(function* () {
      const table = yield* scanWith(() => ({ lo }))
      assert.isTrue(table.loopbackOnly)
      const loop = byName(table, "lo")
      assert.isTrue(loop.loopback && loop.internal && loop.primary)
      assert.deepStrictEqual(Option.getOrUndefined(loop.ipv4[0]!.broadcast), "127.255.255.255")
      assert.strictEqual(loop.ipv4[0]!.prefix, 8)
      assert.strictEqual(loop.ipv6[0]!.prefix, 128)
      assert.deepStrictEqual(broadcastTargets(table, "all"), ["127.255.255.255"])
      assert.deepStrictEqual(multicastInterfaces(table, "all"), ["127.0.0.1"])
    })
  )

  it.effect("several interfaces: broadcast addresses from address and netmask, the primary one, IPv6 prefixes", () =>
    Effect.gen(function* () {
      const table = yield* scanWith(() => several)
      assert.isFalse(table.loopbackOnly)
      assert.deepStrictEqual(
        table.interfaces.map((i) => i.name),
        ["lo", "wg0", "eth0", "wlan0", "tun0", "ptp0"]
      )
      // the first non-internal interface with an IPv4 address (wg0 has IPv6 only)
      assert.deepStrictEqual(
        table.interfaces.filter((i) => i.primary).map((i) => i.name),
        ["eth0"]
      )
      assert.strictEqual(Option.getOrThrow(table.primary).name, "eth0")
      const bc = (name: string) => Option.getOrUndefined(byName(table, name).ipv4[0]!.broadcast)
      assert.strictEqual(bc("eth0"), "192.168.1.255")
      assert.strictEqual(bc("wlan0"), "10.0.7.255")
      assert.strictEqual(byName(table, "wlan0").ipv4[0]!.prefix, 22)
      assert.strictEqual(bc("tun0"), undefined, "a /32 has no broadcast address")
      assert.strictEqual(bc("ptp0"), undefined, "a /31 has no broadcast address")
      assert.strictEqual(byName(table, "wg0").ipv6[0]!.prefix, 64)
      assert.deepStrictEqual(Option.getOrUndefined(byName(table, "eth0").ipv6[0]!.scopeId), 2)
      assert.isFalse(byName(table, "eth0").internal)
    })
  )

  it.effect("discovery targets: 'all' adds each LAN broadcast address; 'loopback' stays inside 127.0.0.0/8", () =>
    Effect.gen(function* () {
      const table = yield* scanWith(() => several)
      assert.deepStrictEqual(broadcastTargets(table, "all"), ["192.168.1.255", "10.0.7.255", "127.255.255.255"])
      assert.deepStrictEqual(multicastInterfaces(table, "all"), [
        "192.168.1.20",
        "10.0.5.7",
        "10.8.0.2",
        "100.64.0.0",
        "127.0.0.1"
      ])
      assert.deepStrictEqual(broadcastTargets(table, "loopback"), ["127.255.255.255"])
      assert.deepStrictEqual(multicastInterfaces(table, "loopback"), ["127.0.0.1"])
      // a table without loopback (or no table at all) still only yields loopback targets in loopback mode
      const noLoopback = Either.getOrThrow(interfaceTable({ eth0: several.eth0 }, 0))
      assert.deepStrictEqual(broadcastTargets(noLoopback, "loopback"), ["127.255.255.255"])
      assert.deepStrictEqual(broadcastTargets(undefined, "loopback"), ["127.255.255.255"])
      assert.deepStrictEqual(multicastInterfaces(noLoopback, "loopback"), ["127.0.0.1"])
    })
  )

  it.effect("refresh picks up changes; a failed refresh keeps the previous table", () =>
    Effect.gen(function* () {
      const source: { table: ReturnType<InterfaceSource> | "fail" } = { table: { lo } }
      const layer = NetworkInterfaces.layerFrom(() => {
        if (source.table === "fail") throw new Error("gone")
        return source.table
      })
      yield* Effect.gen(function* () {
        const interfaces = yield* NetworkInterfaces
        assert.isTrue((yield* interfaces.current).loopbackOnly, "current scans once when nothing was scanned")
        const subscribed = yield* Deferred.make<void>()
        const changes = yield* Effect.fork(
          interfaces.changes.pipe(
            Stream.tap(() => Deferred.succeed(subscribed, undefined)),
            Stream.take(2),
            Stream.runCollect
          )
        )
        yield* Deferred.await(subscribed)
        source.table = "fail"
        yield* interfaces.refresh
        assert.isTrue((yield* interfaces.current).loopbackOnly)
        source.table = { lo, eth0: several.eth0 }
        yield* interfaces.refresh
        const seen = Chunk.toReadonlyArray(yield* Fiber.join(changes))
        assert.deepStrictEqual(
          seen.map((t) => t.interfaces.length),
          [1, 2]
        )
        assert.strictEqual(Option.getOrThrow((yield* interfaces.current).primary).name, "eth0")
      }).pipe(Effect.provide(layer))
    })
  )

  it.effect("the RefreshInterfaces routine is registered stopped and rescans every 60 s once started", () =>
    Effect.gen(function* () {
      const calls = { n: 0 }
      const layer = NetworkInterfaces.routine.pipe(
        Layer.provideMerge(
          NetworkInterfaces.layerFrom(() => {
            calls.n++
            return { lo }
          })
        ),
        Layer.provideMerge(RoutineScheduler.layer)
      )
      yield* Effect.gen(function* () {
        const scheduler = yield* RoutineScheduler
        const info = (yield* scheduler.list).find((r) => r.name === REFRESH_INTERFACES)!
        assert.isFalse(info.running)
        assert.strictEqual(info.intervalMillis, 60_000)
        yield* TestClock.adjust("5 minutes")
        assert.strictEqual(calls.n, 0)
        yield* scheduler.start(REFRESH_INTERFACES)
        yield* TestClock.adjust("3 minutes")
        assert.strictEqual(calls.n, 3)
      }).pipe(Effect.provide(layer))
    })
  )
})
