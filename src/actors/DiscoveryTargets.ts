/**
 * Where and how often LAN discovery announces: broadcast targets and multicast interfaces derived from the interface
 * table for an interfaces mode, and the original's send interval (a sine between the fast and slow intervals, plus
 * jitter; the slow end when throttled). Pure functions, so the mode's promise ("loopback" never leaves 127.0.0.0/8) and
 * the rate are testable without sockets.
 */
import { Effect, Option, Random } from "effect"
import { isLoopbackIpv4 } from "../layers/Interfaces.js"
import type { DiscoveryInterfaces, DiscoverySettings } from "../schema/discovery.js"
import type { InterfaceTable } from "../schema/interfaces.js"

/** The broadcast address of 127.0.0.0/8: unlike 127.0.0.1, it reaches every socket sharing the port (SO_REUSEADDR). */
export const LOOPBACK_BROADCAST = "127.255.255.255"
export const LOOPBACK_ADDRESS = "127.0.0.1"

const distinct = (xs: ReadonlyArray<string>) => [...new Set(xs)]

const loopbackV4 = (table: InterfaceTable | undefined) =>
  (table?.interfaces ?? []).flatMap((i) => (i.loopback ? i.ipv4.filter((a) => isLoopbackIpv4(a.address)) : []))

/**
 * Broadcast destinations: in "all" mode the broadcast address of every up, non-internal IPv4 interface, then the
 * loopback broadcast; in "loopback" mode the loopback broadcast only. Every address returned in "loopback" mode is in
 * 127.0.0.0/8.
 */
export const broadcastTargets = (
  table: InterfaceTable | undefined,
  mode: DiscoveryInterfaces
): ReadonlyArray<string> => {
  const fromTable = loopbackV4(table).flatMap((a) => Option.toArray(a.broadcast))
  const loopback = fromTable.filter(isLoopbackIpv4)
  const local = loopback.length > 0 ? loopback : [LOOPBACK_BROADCAST]
  if (mode === "loopback") return distinct(local)
  const lan = (table?.interfaces ?? [])
    .filter((i) => !i.internal && !i.loopback)
    .flatMap((i) => i.ipv4.flatMap((a) => Option.toArray(a.broadcast)))
  return distinct([...lan, ...local])
}

/**
 * Interfaces (by their first IPv4 address) to join the multicast group on and to send it out of: in "all" mode every
 * up, non-internal IPv4 interface and loopback; in "loopback" mode loopback only.
 */
export const multicastInterfaces = (
  table: InterfaceTable | undefined,
  mode: DiscoveryInterfaces
): ReadonlyArray<string> => {
  const local = loopbackV4(table)[0]?.address ?? LOOPBACK_ADDRESS
  if (mode === "loopback") return [local]
  const lan = (table?.interfaces ?? []).flatMap((i) =>
    !i.internal && !i.loopback && i.ipv4[0] !== undefined ? [i.ipv4[0].address] : []
  )
  return distinct([...lan, local])
}

/**
 * The original's BroadcastRateControl: `slow + (fast - slow) * (sin(2πt / period) + 1) / 2` milliseconds at clock
 * time `t`, so the wait swings between the fast and the slow interval once per period; the slow interval when
 * throttled. Jitter is added by the caller.
 */
export const baseIntervalMillis = (
  now: number,
  s: Pick<DiscoverySettings, "fastIntervalMillis" | "slowIntervalMillis" | "wavePeriodMillis">,
  throttled: boolean
): number => {
  if (throttled) return s.slowIntervalMillis
  const wave = (Math.sin((2 * Math.PI * now) / s.wavePeriodMillis) + 1) / 2
  return Math.round(s.slowIntervalMillis + (s.fastIntervalMillis - s.slowIntervalMillis) * wave)
}

/** The random jitter added to each wait: uniform in [jitterMinMillis, jitterMaxMillis), from the Random service. */
export const jitterMillis = (s: { readonly jitterMinMillis: number; readonly jitterMaxMillis: number }) =>
  s.jitterMaxMillis > s.jitterMinMillis
    ? Random.nextIntBetween(s.jitterMinMillis, s.jitterMaxMillis)
    : Effect.succeed(s.jitterMinMillis)
