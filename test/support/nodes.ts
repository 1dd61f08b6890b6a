/** Test fixtures: networks on 127.0.0.1 with port 0, packet builders, and event waiters. */
import { Context, DateTime, Effect, Layer, Option, Stream } from "effect"
import type { Scope } from "effect"
import type { NetworkOverrides } from "../../src/layers/Network.js"
import { networkLayerWith } from "../../src/layers/Network.js"
import { PeerNetwork } from "../../src/layers/PeerNetwork.js"
import { DistributionHandler } from "../../src/layers/Distribution.js"
import type { NetworkEvent } from "../../src/layers/PeerRegistry.js"
import type { NodeId } from "../../src/schema/ids.js"
import { IpAddress, PeerAddress, Port } from "../../src/schema/ids.js"
import { DataTransmission, Disconnect, Identity, PeerGroup, PureMessage } from "../../src/schema/packets.js"
import type { Packet } from "../../src/schema/packets.js"
import type { NetworkSettings } from "../../src/schema/settings.js"
import type { ChannelState, PeerChannel } from "../../src/actors/PeerChannel.js"

export const fastSettings: Partial<ConstructorParameters<typeof NetworkSettings>[0]> = {
  host: "127.0.0.1",
  port: 0,
  handshakeTimeoutMillis: 3_000,
  connectTimeoutMillis: 2_000,
  reconnectDelayMillis: 100,
  reconnectRetries: 30
}

/** Starts a network in the current scope. */
export const startNode = (
  settings: Partial<ConstructorParameters<typeof NetworkSettings>[0]> = {},
  overrides: NetworkOverrides = {}
): Effect.Effect<PeerNetwork["Type"], never, Scope.Scope> =>
  Layer.build(networkLayerWith({ ...fastSettings, ...settings }, overrides)).pipe(
    Effect.map(Context.get(PeerNetwork)),
    Effect.orDie
  )

export const now = DateTime.unsafeMake(1_700_000_000_000)

export const packetsFrom = (origin: NodeId): ReadonlyArray<Packet> => [
  Identity.make({
    message: "discovery",
    address: IpAddress.make("127.0.0.1"),
    port: Port.make(8051),
    origin,
    sentAt: now
  }),
  PeerGroup.make({
    peers: [PeerAddress.make({ address: IpAddress.make("127.0.0.1"), port: Port.make(9000), id: null })],
    origin,
    sentAt: now
  }),
  DataTransmission.make({ format: "MiscData", data: new Uint8Array([0, 1, 2, 255]), origin, sentAt: now }),
  PureMessage.make({ message: "hello <world> & ünïcode 😀", origin, sentAt: now }),
  Disconnect.make({ address: "127.0.0.1", port: Port.make(1), reason: "bye", data: { k: "v" }, origin, sentAt: now })
]

export const message = (origin: NodeId, text: string) => PureMessage.make({ message: text, origin, sentAt: now })

/** Waits for the first event matching `f` on a subscription taken before the action that causes it. */
export const waitFor = <A>(events: Stream.Stream<NetworkEvent>, f: (e: NetworkEvent) => Option.Option<A>) =>
  events.pipe(Stream.filterMap(f), Stream.runHead, Effect.map(Option.getOrThrow))

/** Waits until the channel reaches `state` (already there counts). */
export const waitState = (channel: PeerChannel, state: ChannelState) =>
  channel.stateChanges.pipe(
    Stream.filter((s) => s === state),
    Stream.runHead,
    Effect.asVoid
  )

/** Starts a network in the current scope and returns its main services. */
export const startServices = (
  settings: Partial<ConstructorParameters<typeof NetworkSettings>[0]> = {},
  overrides: NetworkOverrides = {}
) =>
  Layer.build(networkLayerWith({ ...fastSettings, ...settings }, overrides)).pipe(
    Effect.map((ctx) => ({
      network: Context.get(ctx, PeerNetwork),
      distribution: Context.get(ctx, DistributionHandler)
    })),
    Effect.orDie
  )
