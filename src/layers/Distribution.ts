/**
 * DistributionHandler: wraps outgoing data into packets and fans it out to trusted channels; gives incoming packets
 * back as Streams filtered by kind, and unwraps their payloads. It holds no timers and no queue of its own: a
 * broadcast goes straight to each channel's bounded outbox, so a slow channel only holds up itself.
 */
import { Context, DateTime, Effect, Layer, Stream } from "effect"
import type { Scope } from "effect"
import type { OverflowPolicy, PacketReceived, PeerChannel } from "../actors/PeerChannel.js"
import type { ChannelClosed, FrameTooLarge, NotTrusted, OutboxFull, PeerNotFound } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import { DataTransmission } from "../schema/packets.js"
import type { Packet, PacketKind, PayloadFormat } from "../schema/packets.js"
import { frameParts } from "../schema/wire.js"
import { NodeIdentity } from "./NodeIdentity.js"
import { PeerRegistry } from "./PeerRegistry.js"

/** What can be distributed: raw bytes and text are wrapped into a DataTransmission; packets go as they are. */
export type Payload = Uint8Array | string | Packet

export interface DistributeOptions {
  /** Payload format for wrapped bytes or text (default MiscData). */
  readonly format?: PayloadFormat
  /** What to do when a channel's outbox is full (default "wait": that channel alone applies back-pressure). */
  readonly whenFull?: OverflowPolicy
}

/** How a broadcast went: channels that took the packet, and the ones that refused it (with why). */
export interface BroadcastResult {
  readonly accepted: number
  readonly refused: ReadonlyArray<{
    readonly peer: NodeId
    readonly error: NotTrusted | ChannelClosed | FrameTooLarge | OutboxFull
  }>
}

export type Received<K extends PacketKind> = PacketReceived & { readonly packet: Extract<Packet, { _tag: K }> }

export class DistributionHandler extends Context.Tag("effect-p2pnet/DistributionHandler")<
  DistributionHandler,
  {
    /** The packet a payload becomes, with this node as origin. */
    readonly wrap: (payload: Payload, format?: PayloadFormat) => Effect.Effect<Packet>
    /** Sends to every trusted channel at once. */
    readonly broadcast: (payload: Payload, options?: DistributeOptions) => Effect.Effect<BroadcastResult>
    readonly sendTo: (
      peer: NodeId,
      payload: Payload,
      options?: DistributeOptions
    ) => Effect.Effect<void, PeerNotFound | NotTrusted | ChannelClosed | FrameTooLarge | OutboxFull>
    /** Received packets of one kind, from the moment the returned Stream is run. */
    readonly incoming: <K extends PacketKind>(kind: K) => Stream.Stream<Received<K>>
    /** As `incoming`, subscribed now (nothing published after this returns is missed), for the life of the scope. */
    readonly subscribe: <K extends PacketKind>(kind: K) => Effect.Effect<Stream.Stream<Received<K>>, never, Scope.Scope>
  }
>() {
  static readonly layer = Layer.effect(
    this,
    Effect.suspend(() => make)
  )
}

/** The bytes a DataTransmission carries (this protocol never wraps them in tags, unlike the original's B21). */
export const unwrap = (packet: DataTransmission): Uint8Array => packet.data

/** The payload of a DataTransmission as UTF-8 text. */
export const unwrapText = (packet: DataTransmission): string => new TextDecoder().decode(packet.data)

const isKind =
  <K extends PacketKind>(kind: K) =>
  (r: PacketReceived): r is Received<K> =>
    r.packet._tag === kind

const make = Effect.gen(function* () {
  const registry = yield* PeerRegistry
  const keys = yield* NodeIdentity

  const wrap = (payload: Payload, format: PayloadFormat = "MiscData"): Effect.Effect<Packet> =>
    typeof payload === "string" || payload instanceof Uint8Array
      ? Effect.map(DateTime.now, (sentAt) =>
          DataTransmission.make({
            format,
            data: typeof payload === "string" ? new TextEncoder().encode(payload) : payload,
            origin: keys.id,
            sentAt
          })
        )
      : Effect.succeed(payload)

  return DistributionHandler.of({
    wrap,
    broadcast: (payload, options = {}) =>
      Effect.gen(function* () {
        const packet = yield* wrap(payload, options.format)
        const channels = yield* registry.trustedChannels
        // encoded once for every channel; queued at once where there is room, and only the full outboxes are waited
        // on, side by side, so one slow channel holds up nobody else
        const frame = frameParts(packet)
        const refused: Array<BroadcastResult["refused"][number]> = []
        const full: Array<PeerChannel> = []
        let accepted = 0
        for (const channel of channels) {
          const r = channel.tryOffer(packet, frame)
          if (r === true) accepted++
          else if (r === false) full.push(channel)
          else refused.push({ peer: channel.remoteId, error: r })
        }
        if (full.length > 0) {
          const results = yield* Effect.forEach(
            full,
            (channel) => Effect.either(channel.offerFramed(packet, options.whenFull ?? "wait", frame)),
            { concurrency: "unbounded" }
          )
          results.forEach((r, i) => {
            if (r._tag === "Left") refused.push({ peer: full[i]!.remoteId, error: r.left })
            else accepted++
          })
        }
        return { accepted, refused }
      }).pipe(Effect.withSpan("DistributionHandler.broadcast")),
    sendTo: (peer, payload, options = {}) =>
      Effect.gen(function* () {
        const channel = yield* registry.channel(peer)
        const packet = yield* wrap(payload, options.format)
        yield* channel.offer(packet, options.whenFull ?? "wait")
      }),
    incoming: <K extends PacketKind>(kind: K) => registry.packets.pipe(Stream.filter(isKind(kind))),
    subscribe: <K extends PacketKind>(kind: K) => Effect.map(registry.subscribePackets, Stream.filter(isKind(kind)))
  })
})
