/**
 * The original's default routines, registered with the RoutineScheduler at start-up but not started:
 * DiscernPeerChannels (every 60 s: close channels whose peer is blocked or that received nothing for longer than
 * NetworkSettings.inactivityLimitMillis) and RotateBroadcastPort (every 30 s: move LAN broadcasting to the next
 * designated port, through the BroadcastRotation service that the LAN discovery subsystem provides).
 */
import { Clock, Context, Effect, Layer } from "effect"
import type { PeerRegistry } from "./PeerRegistry.js"
import { PeerRegistry as Registry } from "./PeerRegistry.js"
import { RoutineScheduler } from "./RoutineScheduler.js"
import { NetworkConfig } from "./Settings.js"

/**
 * What RotateBroadcastPort calls when the network is built; `none` only logs. LAN discovery (layers/Discovery.ts),
 * built on top of the network, replaces the routine's body with its own rotation, keeping its interval and state.
 */
export class BroadcastRotation extends Context.Tag("effect-p2pnet/BroadcastRotation")<
  BroadcastRotation,
  {
    /** Moves the broadcaster to the next designated port and returns it (undefined when there is no broadcaster). */
    readonly rotate: Effect.Effect<number | undefined>
  }
>() {
  static readonly none = Layer.succeed(this, {
    rotate: Effect.as(Effect.logDebug("no LAN broadcaster to rotate"), undefined)
  })
}

export const DISCERN_PEER_CHANNELS = "DiscernPeerChannels"
export const ROTATE_BROADCAST_PORT = "RotateBroadcastPort"

/** One pass of DiscernPeerChannels. */
export const discernPeerChannels = (registry: PeerRegistry["Type"], inactivityLimitMillis: number) =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    for (const channel of yield* registry.channels) {
      const blocked =
        (yield* registry.isBlockedId(channel.remoteId)) || (yield* registry.isBlockedAddress(channel.address))
      if (blocked) {
        yield* channel.close("blocked")
        continue
      }
      const idle = now - (yield* channel.stats).lastIncomingAt
      if (idle > inactivityLimitMillis) {
        yield* Effect.logInfo(`closing channel silent for ${Math.round(idle / 1000)} s`).pipe(
          Effect.annotateLogs({ peer: channel.remoteId, address: channel.label })
        )
        yield* channel.close(`inactive for ${Math.round(idle / 1000)} s`)
      }
    }
  })

/** Registers the default routines (stopped). */
export const defaultRoutinesLayer: Layer.Layer<
  never,
  never,
  RoutineScheduler | Registry | NetworkConfig | BroadcastRotation
> = Layer.effectDiscard(
  Effect.gen(function* () {
    const scheduler = yield* RoutineScheduler
    const registry = yield* Registry
    const settings = yield* NetworkConfig
    const rotation = yield* BroadcastRotation
    yield* scheduler
      .add(DISCERN_PEER_CHANNELS, discernPeerChannels(registry, settings.inactivityLimitMillis), "60 seconds")
      .pipe(Effect.orDie)
    yield* scheduler.add(ROTATE_BROADCAST_PORT, rotation.rotate, "30 seconds").pipe(Effect.orDie)
  })
)
