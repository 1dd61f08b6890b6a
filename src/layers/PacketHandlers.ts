/**
 * One handler per packet kind, run by the packet dispatcher for packets that passed the trust gate. Users replace any
 * handler (`networkLayer({ handlers: { PureMessage: ... } })` or their own PacketHandlers layer). A handler that
 * fails is logged with its channel and counted; the channel and the node keep working (unlike B6).
 * Defaults: an Identity records its sender as a known peer (at the channel's source address, never an address the
 * payload asserts, B13); a PeerGroup's peers go to the PeerConnector (connect policy, deduplication, bounded rate);
 * a Disconnect is logged (the channel itself closes and leaves the registry); a DataTransmission goes by payload
 * format: File to the FileTransfer service, Task to the NetworkTaskHandler, MiscData to subscribers only; a
 * PureMessage is logged at Debug level.
 * Channels hand packets to the dispatcher through the PacketInbox (layers/PacketInbox.ts).
 */
import { Cause, Context, Effect, Layer, Ref } from "effect"
import type { Received } from "./Distribution.js"
import type { PacketKind } from "../schema/packets.js"
import { IpAddress, PeerAddress } from "../schema/ids.js"
import { FileTransfer } from "./FileTransfer.js"
import { Category } from "./Logging.js"
import { NetworkTaskHandler } from "./NetworkTasks.js"
import { PeerConnector } from "./PeerConnector.js"
import { PacketInbox } from "./PacketInbox.js"
import { PeerRegistry } from "./PeerRegistry.js"

export type Handlers = { readonly [K in PacketKind]: (received: Received<K>) => Effect.Effect<void, unknown> }

/** At most this many peers of one PeerGroup packet are considered; the rest are ignored. */
export const MAX_PEERS_PER_GROUP = 64

export class PacketHandlers extends Context.Tag("effect-p2pnet/PacketHandlers")<PacketHandlers, Handlers>() {
  /** The default handlers. */
  static readonly layer = Layer.effect(
    this,
    Effect.suspend(() => makeDefaults)
  )
  /** The default handlers with some replaced. */
  static readonly layerWith = (overrides: Partial<Handlers>) =>
    Layer.effect(
      this,
      Effect.map(
        Effect.suspend(() => makeDefaults),
        (defaults) => ({ ...defaults, ...overrides })
      )
    )
}

/** Runs the handlers on the packets of the PacketInbox, in order; counts the ones that failed. */
export class PacketDispatcher extends Context.Tag("effect-p2pnet/PacketDispatcher")<
  PacketDispatcher,
  { readonly failures: Effect.Effect<number> }
>() {
  static readonly layer = Layer.scoped(
    this,
    Effect.suspend(() => makeDispatcher)
  )
  /** No dispatcher: no handler runs. */
  static readonly idle = Layer.succeed(this, this.of({ failures: Effect.succeed(0) }))
}

const makeDefaults = Effect.gen(function* () {
  const registry = yield* PeerRegistry
  const connector = yield* PeerConnector
  const files = yield* FileTransfer
  const tasks = yield* NetworkTaskHandler
  const addKnown = (peer: PeerAddress) =>
    registry.addKnown(peer).pipe(Effect.catchTag("PeerBlocked", () => Effect.void))
  return PacketHandlers.of({
    Identity: ({ channel, packet }) =>
      addKnown(PeerAddress.make({ address: IpAddress.make(channel.address), port: packet.port, id: channel.remoteId })),
    PeerGroup: ({ packet }) =>
      Effect.gen(function* () {
        const queued = yield* connector.offer(packet.peers.slice(0, MAX_PEERS_PER_GROUP))
        yield* Effect.logDebug(`PeerGroup of ${packet.peers.length} peers: ${queued} to dial`)
      }),
    Disconnect: ({ packet }) => Effect.logInfo(`peer disconnected: ${packet.reason}`),
    DataTransmission: (received) =>
      received.packet.format === "File"
        ? files.incoming(received)
        : received.packet.format === "Task"
          ? tasks.incoming(received)
          : Effect.void,
    PureMessage: ({ packet }) => Effect.logDebug(`message: ${packet.message.slice(0, 200)}`)
  })
})

/** A typed failure by its message (an expected refusal, e.g. a hostile file name); a defect with its stack. */
const describe = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (failure._tag === "None") return Cause.pretty(cause)
  const error = failure.value
  return typeof error === "object" && error !== null && "message" in error && typeof error.message === "string"
    ? `${"_tag" in error ? `${String(error._tag)}: ` : ""}${error.message}`
    : String(error)
}

const makeDispatcher = Effect.gen(function* () {
  const handlers = yield* PacketHandlers
  const inbox = yield* PacketInbox
  const failures = yield* Ref.make(0)
  const handle = (received: Received<PacketKind>) =>
    (handlers[received.packet._tag] as (r: Received<PacketKind>) => Effect.Effect<void, unknown>)(received).pipe(
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause)
          ? Effect.failCause(cause)
          : Ref.update(failures, (n) => n + 1).pipe(
              Effect.zipRight(Effect.logWarning(`${received.packet._tag} handler failed: ${describe(cause)}`)),
              Effect.annotateLogs({ peer: received.channel.remoteId, address: received.channel.label })
            )
      )
    )
  yield* Effect.forkScoped(
    inbox.take.pipe(
      Effect.flatMap((batch) => Effect.forEach(batch, (r) => handle(r as Received<PacketKind>), { discard: true })),
      Effect.forever,
      Effect.annotateLogs({ category: Category.Peers })
    )
  )
  return PacketDispatcher.of({ failures: Ref.get(failures) })
})
