/**
 * The interface scan: reads the machine's interfaces (node:os, or an injected source for tests) into an
 * InterfaceTable with broadcast addresses and the primary interface, keeps the last table, and re-reads it on demand
 * or from the "RefreshInterfaces" routine (registered, not started, like the original's routines). A machine with no
 * interface at all gets the typed NoUsableInterface, never a crash; loopback-only is a supported mode.
 */
import { Clock, Context, Effect, Either, Layer, Option, Stream, SubscriptionRef } from "effect"
import * as os from "node:os"
import { NoUsableInterface } from "../schema/errors.js"
import { InterfaceTable, Ipv4Assignment, Ipv6Assignment, NetworkInterface } from "../schema/interfaces.js"
import { RoutineScheduler } from "./RoutineScheduler.js"

/** What node:os `networkInterfaces()` returns; tests pass a fixed table of the same shape. */
export type InterfaceSource = () => Readonly<Record<string, ReadonlyArray<os.NetworkInterfaceInfo> | undefined>>

export const REFRESH_INTERFACES = "RefreshInterfaces"

export class NetworkInterfaces extends Context.Tag("effect-p2pnet/NetworkInterfaces")<
  NetworkInterfaces,
  {
    /** Reads the interfaces now, makes the result the current table and returns it. */
    readonly scan: Effect.Effect<InterfaceTable, NoUsableInterface>
    /** A scan whose failure keeps the previous table (logged): what the RefreshInterfaces routine runs. */
    readonly refresh: Effect.Effect<void>
    /** The last table scanned (scanning once if there is none yet). */
    readonly current: Effect.Effect<InterfaceTable, NoUsableInterface>
    /** The current table, then each table whose addresses differ from the one before. */
    readonly changes: Stream.Stream<InterfaceTable>
  }
>() {
  /**
   * Interfaces from any source, e.g. a fixed table in tests.
   *
   * @example
   * NetworkInterfaces.layerFrom(() => ({ lo: [{ address: "127.0.0.1", netmask: "255.0.0.0", family: "IPv4",
   *   mac: "00:00:00:00:00:00", internal: true, cidr: "127.0.0.1/8" }] }))
   */
  static readonly layerFrom = (source: InterfaceSource): Layer.Layer<NetworkInterfaces> =>
    Layer.effect(
      this,
      Effect.suspend(() => make(source))
    )
  /** The machine's interfaces, from node:os. */
  static readonly layer: Layer.Layer<NetworkInterfaces> = NetworkInterfaces.layerFrom(() => os.networkInterfaces())
  /** Registers the RefreshInterfaces routine (every 60 s, stopped) for the life of the layer. */
  static readonly routine: Layer.Layer<never, never, NetworkInterfaces | RoutineScheduler> = Layer.scopedDiscard(
    Effect.gen(function* () {
      const scheduler = yield* RoutineScheduler
      const interfaces = yield* NetworkInterfaces
      yield* Effect.acquireRelease(
        scheduler.add(REFRESH_INTERFACES, interfaces.refresh, "60 seconds").pipe(Effect.ignore),
        () => scheduler.remove(REFRESH_INTERFACES).pipe(Effect.ignore)
      )
    })
  )
}

const make = (source: InterfaceSource) =>
  Effect.gen(function* () {
    const table = yield* SubscriptionRef.make(Option.none<InterfaceTable>())
    const scan = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const raw = yield* Effect.try({
        try: source,
        catch: (e) => new NoUsableInterface({ detail: `cannot read the interfaces: ${errorText(e)}` })
      })
      const scanned = yield* interfaceTable(raw, now)
      yield* SubscriptionRef.set(table, Option.some(scanned))
      return scanned
    })
    return NetworkInterfaces.of({
      scan,
      refresh: scan.pipe(
        Effect.catchAll((e) => Effect.logWarning(`interface scan failed, keeping the previous table: ${e.message}`)),
        Effect.asVoid
      ),
      current: Effect.flatMap(SubscriptionRef.get(table), Option.match({ onNone: () => scan, onSome: Effect.succeed })),
      changes: table.changes.pipe(
        Stream.filterMap((t) => t),
        Stream.changesWith((a, b) => layoutOf(a) === layoutOf(b))
      )
    })
  })

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e))

/** Addresses only (not the scan time): two scans with the same layout are the same table. */
const layoutOf = (t: InterfaceTable) =>
  JSON.stringify(t.interfaces.map((i) => [i.name, i.ipv4.map((a) => a.address + "/" + a.prefix), i.ipv6.length]))

/** Builds the table from node:os data; fails when no interface carries an address. */
export const interfaceTable = (
  raw: ReturnType<InterfaceSource>,
  scannedAt: number
): Either.Either<InterfaceTable, NoUsableInterface> => {
  const interfaces: Array<Omit<ConstructorParameters<typeof NetworkInterface>[0], "primary">> = []
  for (const [name, entries] of Object.entries(raw)) {
    if (entries === undefined || entries.length === 0) continue
    const ipv4: Array<Ipv4Assignment> = []
    const ipv6: Array<Ipv6Assignment> = []
    for (const e of entries) {
      const family = e.family as string | number
      if (family === "IPv4" || family === 4) {
        const v4 = ipv4Assignment(e.address, e.netmask, e.cidr)
        if (v4 !== undefined) ipv4.push(v4)
      } else if (family === "IPv6" || family === 6) {
        ipv6.push(
          Ipv6Assignment.make({
            address: e.address,
            netmask: e.netmask,
            prefix: prefixFromCidr(e.cidr) ?? ipv6Prefix(e.netmask),
            scopeId: Option.fromNullable("scopeid" in e && e.scopeid !== 0 ? e.scopeid : undefined)
          })
        )
      }
    }
    if (ipv4.length === 0 && ipv6.length === 0) continue
    interfaces.push({
      name,
      internal: entries.some((e) => e.internal),
      loopback: ipv4.some((a) => isLoopbackIpv4(a.address)) || ipv6.some((a) => a.address === "::1"),
      mac: entries[0]?.mac ?? "",
      ipv4,
      ipv6
    })
  }
  if (interfaces.length === 0) {
    return Either.left(new NoUsableInterface({ detail: "the system reports no interface with an address" }))
  }
  const external = interfaces.findIndex((i) => !i.internal && !i.loopback && i.ipv4.length > 0)
  const primary =
    external >= 0
      ? external
      : Math.max(
          0,
          interfaces.findIndex((i) => i.ipv4.length > 0)
        )
  return Either.right(
    InterfaceTable.make({
      interfaces: interfaces.map((i, n) => NetworkInterface.make({ ...i, primary: n === primary })),
      scannedAt
    })
  )
}

const ipv4Assignment = (address: string, netmask: string, cidr: string | null) => {
  const a = parseIpv4(address)
  const m = parseIpv4(netmask)
  if (a === undefined) return undefined
  const prefix = prefixFromCidr(cidr) ?? (m === undefined ? 32 : countBits(m))
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
  return Ipv4Assignment.make({
    address,
    netmask: formatIpv4(mask),
    prefix,
    broadcast: prefix >= 31 ? Option.none() : Option.some(formatIpv4((a | ~mask) >>> 0))
  })
}

const prefixFromCidr = (cidr: string | null): number | undefined => {
  const n = cidr === null ? NaN : Number(cidr.slice(cidr.lastIndexOf("/") + 1))
  return Number.isInteger(n) ? n : undefined
}

const countBits = (n: number) => {
  let bits = 0
  for (let v = n >>> 0; v !== 0; v = (v << 1) >>> 0) bits++
  return bits
}

const ipv6Prefix = (netmask: string): number => {
  const [head = "", tail] = netmask.split("::")
  const left = head === "" ? [] : head.split(":")
  const right = tail === undefined || tail === "" ? [] : tail.split(":")
  const groups = [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right]
  return groups.reduce((sum, g) => sum + countBits((parseInt(g, 16) || 0) << 16), 0)
}

/** A dotted IPv4 address as an unsigned 32-bit number, or undefined when it is not one. */
export const parseIpv4 = (address: string): number | undefined => {
  const parts = address.split(".")
  if (parts.length !== 4) return undefined
  let n = 0
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined
    n = n * 256 + Number(p)
  }
  return n
}

export const formatIpv4 = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".")

/** In 127.0.0.0/8. */
export const isLoopbackIpv4 = (address: string) => {
  const n = parseIpv4(address)
  return n !== undefined && n >>> 24 === 127
}
