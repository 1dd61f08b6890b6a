/** Nodes for network-task tests: a network with its task handler, data store and identifier, on 127.0.0.1:0. */
import { Context, Effect, Layer } from "effect"
import { DataStore } from "../../src/layers/DataStore.js"
import type { NetworkOverrides } from "../../src/layers/Network.js"
import { networkLayerWith } from "../../src/layers/Network.js"
import { NetworkTaskHandler } from "../../src/layers/NetworkTasks.js"
import { PeerNetwork } from "../../src/layers/PeerNetwork.js"
import { LocalIdentifier } from "../../src/layers/TaskPolicy.js"
import { fastSettings } from "./nodes.js"

export const startTaskNode = (overrides: NetworkOverrides = {}) =>
  Layer.build(networkLayerWith(fastSettings, overrides)).pipe(
    Effect.map((ctx) => ({
      network: Context.get(ctx, PeerNetwork),
      tasks: Context.get(ctx, NetworkTaskHandler),
      store: Context.get(ctx, DataStore),
      identifier: Context.get(ctx, LocalIdentifier),
      id: Context.get(ctx, PeerNetwork).id
    })),
    Effect.orDie
  )
export type TaskNode = Effect.Effect.Success<ReturnType<typeof startTaskNode>>

/** Every wait in these tests is bounded. */
export const bounded = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  self.pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "timed out waiting" }), Effect.orDie)

/** Dials b from a and waits until both ends trust the channel; returns a's channel. */
export const connect = (a: TaskNode, b: TaskNode) =>
  Effect.gen(function* () {
    const channel = yield* a.network.dial("127.0.0.1", b.network.port)
    yield* channel.awaitTrusted
    yield* Effect.flatMap(b.network.awaitChannel(a.id), (c) => c.awaitTrusted)
    return channel
  }).pipe(bounded)
