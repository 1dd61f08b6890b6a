/**
 * The PeerNetwork's state: known peers, active channels (at most one per remote node), blocked addresses and
 * identifiers, and the event and packet PubSubs. Channels are registered here once their trust phase has decided;
 * the duplicate tie-break lives in `register`.
 */
import { Context, Data, Effect, Layer, PubSub, Ref, Scope, Stream } from "effect"
import type { ChannelState, PacketReceived, PeerChannel } from "../actors/PeerChannel.js"
import type { CloseReason } from "../schema/errors.js"
import { PeerBlocked, PeerNotFound } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import { PeerAddress } from "../schema/ids.js"

export type NetworkEvent = Data.TaggedEnum<{
  PeerAdded: { readonly peer: PeerAddress }
  PeerRemoved: { readonly peer: PeerAddress }
  ChannelStateChanged: {
    readonly channel: PeerChannel
    readonly state: ChannelState
    readonly reason: CloseReason | undefined
  }
  /** Event-based placement: an inbound peer completed its Hello. */
  IncomingPeer: { readonly address: string; readonly port: number; readonly id: NodeId }
  /** A bootstrap channel (layers/BootstrapClient.ts) changed state: registered, degraded, backingOff, lockedOut... */
  BootstrapStateChanged: {
    readonly url: string
    readonly state: string
    readonly failures: number
    readonly detail: string
  }
}>
export const NetworkEvent = Data.taggedEnum<NetworkEvent>()

interface State {
  readonly known: ReadonlyMap<string, PeerAddress>
  readonly channels: ReadonlyMap<NodeId, PeerChannel>
  readonly blockedAddresses: ReadonlySet<string>
  readonly blockedIds: ReadonlySet<string>
}

const knownKey = (p: PeerAddress) => p.id ?? `${p.address}:${p.port}`

export class PeerRegistry extends Context.Tag("effect-p2pnet/PeerRegistry")<
  PeerRegistry,
  {
    readonly known: Effect.Effect<ReadonlyArray<PeerAddress>>
    /** Adds or updates a known peer; fails if its address or identifier is blocked. */
    readonly addKnown: (peer: PeerAddress) => Effect.Effect<void, PeerBlocked>
    /** Forgets a known peer by identifier or "address:port". */
    readonly removeKnown: (key: string) => Effect.Effect<boolean>
    readonly channels: Effect.Effect<ReadonlyArray<PeerChannel>>
    readonly channel: (id: NodeId) => Effect.Effect<PeerChannel, PeerNotFound>
    /** Waits until a channel to `id` is open (its trust phase done) and returns it. */
    readonly awaitChannel: (id: NodeId) => Effect.Effect<PeerChannel>
    readonly trustedChannels: Effect.Effect<ReadonlyArray<PeerChannel>>
    /**
     * Registers a channel after its trust phase and returns the one that survives. When a channel to the same node
     * exists, the one initiated by the smaller NodeId is kept; between two opened by the same node, the one registered
     * later. A channel that is not trusted never displaces a trusted one (its NodeId may be unproven). A replaced
     * channel is closed with reason "duplicate channel: keeping the one initiated by <id>". Returns undefined, and
     * registers nothing, when the channel's NodeId or address is blocked (checked in the same step as the change).
     */
    readonly register: (channel: PeerChannel, trusted: boolean) => Effect.Effect<PeerChannel | undefined>
    readonly unregister: (channel: PeerChannel) => Effect.Effect<void>
    readonly isBlockedAddress: (address: string) => Effect.Effect<boolean>
    readonly isBlockedId: (id: string) => Effect.Effect<boolean>
    /** Blocks an address: refuses it at accept and dial, and closes its channels. */
    readonly blockAddress: (address: string) => Effect.Effect<void>
    readonly unblockAddress: (address: string) => Effect.Effect<void>
    /** Blocks an identifier: refuses it after Hello, closes its channel and forgets it. */
    readonly blockId: (id: NodeId) => Effect.Effect<void>
    readonly unblockId: (id: NodeId) => Effect.Effect<void>
    readonly elevate: (id: NodeId) => Effect.Effect<void, PeerNotFound>
    readonly demote: (id: NodeId) => Effect.Effect<void, PeerNotFound>
    readonly publish: (event: NetworkEvent) => Effect.Effect<void>
    readonly publishPackets: (batch: ReadonlyArray<PacketReceived>) => Effect.Effect<void>
    readonly events: Stream.Stream<NetworkEvent>
    /**
     * Subscribes now (so nothing published after this returns is missed), for the life of the scope. The Stream reads
     * that one subscription in chunks: run it once (a second run starts after what the first one pulled).
     */
    readonly subscribeEvents: Effect.Effect<Stream.Stream<NetworkEvent>, never, Scope.Scope>
    readonly packets: Stream.Stream<PacketReceived>
    readonly subscribePackets: Effect.Effect<Stream.Stream<PacketReceived>, never, Scope.Scope>
  }
>() {
  static readonly layer = (options: { readonly packetBuffer?: number } = {}) => Layer.scoped(this, make(options))
}

const make = (options: { readonly packetBuffer?: number }) =>
  Effect.gen(function* () {
    const state = yield* Ref.make<State>({
      known: new Map(),
      channels: new Map(),
      blockedAddresses: new Set(),
      blockedIds: new Set()
    })
    const events = yield* Effect.acquireRelease(PubSub.unbounded<NetworkEvent>(), PubSub.shutdown)
    // packets apply back-pressure: a slow subscriber slows the channels, which stop reading their sockets
    const packets = yield* Effect.acquireRelease(
      PubSub.bounded<PacketReceived>(options.packetBuffer ?? 1024),
      PubSub.shutdown
    )
    const publish = (e: NetworkEvent) => PubSub.publish(events, e).pipe(Effect.asVoid)

    const addKnown = (peer: PeerAddress) =>
      Effect.gen(function* () {
        const s = yield* Ref.get(state)
        if (s.blockedAddresses.has(peer.address)) return yield* new PeerBlocked({ target: peer.address })
        if (peer.id !== null && s.blockedIds.has(peer.id)) return yield* new PeerBlocked({ target: peer.id })
        const key = knownKey(peer)
        const isNew = yield* Ref.modify(state, (s) => {
          const known = new Map(s.known)
          const had = known.has(key)
          known.set(key, peer)
          return [!had, { ...s, known }] as const
        })
        if (isNew) yield* publish(NetworkEvent.PeerAdded({ peer }))
      })

    const removeKnown = (key: string) =>
      Effect.gen(function* () {
        const removed = yield* Ref.modify(state, (s) => {
          const peer = s.known.get(key)
          if (peer === undefined) return [undefined, s] as const
          const known = new Map(s.known)
          known.delete(key)
          return [peer, { ...s, known }] as const
        })
        if (removed !== undefined) yield* publish(NetworkEvent.PeerRemoved({ peer: removed }))
        return removed !== undefined
      })

    const channelsWhere = (f: (c: PeerChannel) => boolean) =>
      Effect.map(Ref.get(state), (s) => [...s.channels.values()].filter(f))

    const findChannel = (id: NodeId) =>
      Effect.flatMap(Ref.get(state), (s) => {
        const c = s.channels.get(id)
        return c === undefined || c.isClosed() ? Effect.fail(new PeerNotFound({ peer: id })) : Effect.succeed(c)
      })

    const register = (channel: PeerChannel, trusted: boolean) =>
      Effect.gen(function* () {
        const [winner, loser, known] = yield* Ref.modify(
          state,
          (
            s
          ): readonly [readonly [PeerChannel | undefined, PeerChannel | undefined, PeerAddress | undefined], State] => {
            if (s.blockedIds.has(channel.remoteId) || s.blockedAddresses.has(channel.address)) {
              return [[undefined, undefined, undefined], s]
            }
            const existing = s.channels.get(channel.remoteId)
            const known = s.known.get(channel.remoteId)
            if (existing === channel) return [[channel, undefined, known], s]
            const keepNew =
              existing === undefined ||
              existing.isClosed() ||
              (existing.isTrusted() && !trusted
                ? false
                : existing.initiatorId === channel.initiatorId || channel.initiatorId < existing.initiatorId)
            if (!keepNew) return [[existing, undefined, undefined], s]
            const channels = new Map(s.channels)
            channels.set(channel.remoteId, channel)
            return [[channel, existing, known], { ...s, channels }]
          }
        )
        if (loser !== undefined && !loser.isClosed()) {
          // close sends a Disconnect and ends the loser's link; it does not wait for the loser's fiber
          yield* loser.close(`duplicate channel: keeping the one initiated by ${channel.initiatorId}`)
        }
        // a peer already known at this address (a reconnect) needs no new entry: skipped without building one
        if (
          winner === channel &&
          (known === undefined || known.address !== channel.address || known.port !== channel.remoteListenPort)
        ) {
          yield* addKnown(
            PeerAddress.make({
              address: channel.address as PeerAddress["address"],
              port: channel.remoteListenPort as PeerAddress["port"],
              id: channel.remoteId
            })
          ).pipe(Effect.ignore)
        }
        return winner
      })

    const unregister = (channel: PeerChannel) =>
      Ref.update(state, (s) => {
        if (s.channels.get(channel.remoteId) !== channel) return s
        const channels = new Map(s.channels)
        channels.delete(channel.remoteId)
        return { ...s, channels }
      })

    const closeWhere = (f: (c: PeerChannel) => boolean, reason: string) =>
      Effect.flatMap(
        channelsWhere(f),
        Effect.forEach((c) => c.close(reason), { discard: true })
      )

    const awaitChannel = (id: NodeId): Effect.Effect<PeerChannel> =>
      Effect.scoped(
        Effect.gen(function* () {
          const subscription = yield* PubSub.subscribe(events)
          while (true) {
            const found = yield* Effect.option(findChannel(id))
            if (found._tag === "Some" && (yield* found.value.state) !== "handshaking") return found.value
            yield* subscription.take
          }
        })
      )

    return PeerRegistry.of({
      awaitChannel,
      known: Effect.map(Ref.get(state), (s) => [...s.known.values()]),
      addKnown,
      removeKnown,
      channels: channelsWhere((c) => !c.isClosed()),
      channel: findChannel,
      trustedChannels: channelsWhere((c) => c.isTrusted()),
      register,
      unregister,
      isBlockedAddress: (a) => Effect.map(Ref.get(state), (s) => s.blockedAddresses.has(a)),
      isBlockedId: (id) => Effect.map(Ref.get(state), (s) => s.blockedIds.has(id)),
      blockAddress: (address) =>
        Ref.update(state, (s) => ({ ...s, blockedAddresses: new Set(s.blockedAddresses).add(address) })).pipe(
          Effect.zipRight(closeWhere((c) => c.address === address, "address blocked")),
          Effect.zipRight(Effect.logInfo(`blocked address ${address}`))
        ),
      unblockAddress: (address) =>
        Ref.update(state, (s) => {
          const blockedAddresses = new Set(s.blockedAddresses)
          blockedAddresses.delete(address)
          return { ...s, blockedAddresses }
        }),
      blockId: (id) =>
        Ref.update(state, (s) => ({ ...s, blockedIds: new Set(s.blockedIds).add(id) })).pipe(
          Effect.zipRight(closeWhere((c) => c.remoteId === id, "identifier blocked")),
          Effect.zipRight(removeKnown(id)),
          Effect.zipRight(Effect.logInfo(`blocked identifier ${id}`))
        ),
      unblockId: (id) =>
        Ref.update(state, (s) => {
          const blockedIds = new Set(s.blockedIds)
          blockedIds.delete(id)
          return { ...s, blockedIds }
        }),
      elevate: (id) => Effect.flatMap(findChannel(id), (c) => c.setTrusted(true)),
      demote: (id) => Effect.flatMap(findChannel(id), (c) => c.setTrusted(false)),
      publish,
      publishPackets: (batch) => PubSub.publishAll(packets, batch).pipe(Effect.asVoid),
      events: Stream.fromPubSub(events),
      subscribeEvents: Effect.map(PubSub.subscribe(events), Stream.fromQueue),
      packets: Stream.fromPubSub(packets),
      subscribePackets: Effect.map(PubSub.subscribe(packets), Stream.fromQueue)
    })
  })
