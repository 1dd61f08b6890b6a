/**
 * The PacketInbox: channels hand the dispatcher (layers/PacketHandlers.ts) the packets some handler needs through this
 * bounded queue. A PureMessage or a MiscData payload with the default handlers costs one test and no queue hop, so the
 * handlers are on by default at no cost to the message rate. Every packet is also published to subscribers.
 */
import { Context, Effect, FiberRef, Layer, LogLevel, Queue } from "effect"
import type { PacketReceived } from "../actors/PeerChannel.js"
import type { Packet, PacketKind } from "../schema/packets.js"

/** Packets waiting for the dispatcher: channels offer (and wait when it lags), the dispatcher takes. */
export class PacketInbox extends Context.Tag("effect-p2pnet/PacketInbox")<
  PacketInbox,
  {
    /** Queues the packets of a batch that some handler wants; waits while the inbox is full (back-pressure). */
    readonly route: (batch: ReadonlyArray<PacketReceived>) => Effect.Effect<void>
    /** The next packets, oldest first (at least one). */
    readonly take: Effect.Effect<Iterable<PacketReceived>>
  }
>() {
  /** An inbox taking the packets `wants` selects, holding at most `capacity` of them. */
  static readonly layer = (wants: (packet: Packet) => boolean, capacity = INBOX_CAPACITY) =>
    Layer.scoped(
      this,
      Effect.gen(function* () {
        const queue = yield* Effect.acquireRelease(Queue.bounded<PacketReceived>(capacity), Queue.shutdown)
        return PacketInbox.of({
          route: (batch) => {
            const wanted = batch.filter((r) => wants(r.packet))
            return wanted.length === 0 ? Effect.void : Effect.asVoid(Queue.offerAll(queue, wanted))
          },
          take: Queue.takeBetween(queue, 1, capacity)
        })
      })
    )
  /** Takes nothing: no handler runs. */
  static readonly none = Layer.succeed(this, this.of({ route: () => Effect.void, take: Effect.never }))
}

/**
 * Packets the PacketInbox holds before channels wait. With 64 KiB file chunks a receiver holds about 26 MiB at most:
 * twice this queue (the batch the dispatcher works on, and the queue refilled meanwhile) plus twice a channel's
 * inboxMaxBytes (the same for the channel's own inbox).
 */
export const INBOX_CAPACITY = 64

/**
 * The packets the default handlers act on: Identity, PeerGroup, Disconnect, and DataTransmission of format File or
 * Task; plus every packet of a kind whose handler is replaced, and PureMessage when Debug logging is on.
 */
export const wantedBy =
  (replaced: ReadonlyArray<PacketKind>, logMessages: boolean) =>
  (packet: Packet): boolean => {
    switch (packet._tag) {
      case "DataTransmission":
        return packet.format !== "MiscData" || replaced.includes("DataTransmission")
      case "PureMessage":
        return logMessages || replaced.includes("PureMessage")
      default:
        return true
    }
  }

/** The PacketInbox for a set of replaced handlers, following the current minimum log level. */
export const inboxFor = (replaced: ReadonlyArray<PacketKind>) =>
  Layer.unwrapEffect(
    Effect.map(FiberRef.get(FiberRef.currentMinimumLogLevel), (level) =>
      PacketInbox.layer(wantedBy(replaced, LogLevel.lessThanEqual(level, LogLevel.Debug)))
    )
  )
