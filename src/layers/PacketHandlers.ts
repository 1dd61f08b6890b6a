/**
 * One handler per packet kind, run by the packet dispatcher for packets that passed the trust gate. Users replace any
 * handler (`networkLayer({ handlers: { PureMessage: ... } })` or their own PacketHandlers layer). A handler that
 * fails is logged with its channel and counted; the channel and the node keep working (unlike B6).
 * Defaults: Identity and PeerGroup add known peers (the connect policy below; the source address of the channel is
 * used, never an address the payload asserts, B13); a Disconnect is logged (the channel itself closes and leaves the
 * registry); a DataTransmission goes by payload format: File to the FileTransfer service, Task to the
 * NetworkTaskHandler, MiscData to subscribers only; a PureMessage is logged at Debug level.
 * Channels hand packets to the dispatcher through the PacketInbox (layers/PacketInbox.ts).
 */
import { Cause, Context, Effect, Layer, Ref } from "effect"
import { isIP } from "node:net"
import type { Received } from "./Distribution.js"
import type { PacketKind } from "../schema/packets.js"
import { IpAddress, PeerAddress } from "../schema/ids.js"
import { FileTransfer } from "./FileTransfer.js"
import { Category } from "./Logging.js"
import { NetworkTaskHandler } from "./NetworkTasks.js"
import { NodeIdentity } from "./NodeIdentity.js"
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

/** The connect policy for shared peers: a plausible address and port, and never this node itself. */
export const plausiblePeer = (peer: PeerAddress, self: { readonly id: string }): boolean =>
  isIP(peer.address) !== 0 && peer.port >= 1 && peer.port <= 65535 && peer.id !== self.id

const makeDefaults = Effect.gen(function* () {
  const registry = yield* PeerRegistry
  const keys = yield* NodeIdentity
  const files = yield* FileTransfer
  const tasks = yield* NetworkTaskHandler
  const addKnown = (peer: PeerAddress) =>
    registry.addKnown(peer).pipe(Effect.catchTag("PeerBlocked", () => Effect.void))
  return PacketHandlers.of({
    Identity: ({ channel, packet }) =>
      addKnown(PeerAddress.make({ address: IpAddress.make(channel.address), port: packet.port, id: channel.remoteId })),
    PeerGroup: ({ packet }) =>
      Effect.gen(function* () {
        const candidates = packet.peers.slice(0, MAX_PEERS_PER_GROUP).filter((p) => plausiblePeer(p, keys))
        yield* Effect.forEach(candidates, addKnown, { discard: true })
        yield* Effect.logInfo(`added ${candidates.length} of ${packet.peers.length} peers from a PeerGroup`)
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
              Effect.zipRight(Effect.logWarning(`${received.packet._tag} handler failed: ${Cause.pretty(cause)}`)),
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
