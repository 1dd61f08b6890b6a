/**
 * The bundled node program (`npm start`): a peer that listens, optionally dials the peers named in P2P_PEERS
 * ("host:port,host:port"), and logs every channel event and received packet. All settings come from P2P_*
 * environment variables with working defaults (README.md).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Effect, Layer, Stream } from "effect"
import { Category, loggingLayerConfig } from "../layers/Logging.js"
import { networkLayerConfig } from "../layers/Network.js"
import { PeerNetwork } from "../layers/PeerNetwork.js"

const parsePeer = (s: string) => {
  const i = s.lastIndexOf(":")
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(s.slice(i + 1)) }
}

export const program = Effect.gen(function* () {
  const network = yield* PeerNetwork
  const peers = yield* Config.array(Config.string(), "P2P_PEERS").pipe(Config.withDefault([]))
  yield* Effect.forkScoped(
    network.registry.packets.pipe(
      Stream.runForEach(({ channel, packet }) =>
        Effect.logInfo(`received ${packet._tag}`).pipe(
          Effect.annotateLogs({ category: Category.Peers, peer: channel.remoteId, address: channel.label })
        )
      )
    )
  )
  yield* Effect.forEach(
    peers.filter((p) => p.trim() !== "").map(parsePeer),
    ({ host, port }) =>
      network
        .dial(host, port)
        .pipe(Effect.catchAll((e) => Effect.logWarning(`could not open a channel to ${host}:${port}: ${e.message}`))),
    { concurrency: "unbounded", discard: true }
  )
  yield* Effect.logInfo(`node ${network.id} ready on port ${network.port}; press Ctrl-C to stop`)
  return yield* Effect.never
}).pipe(Effect.annotateLogs({ category: Category.Peers }))

const main = Effect.scoped(program).pipe(Effect.provide(networkLayerConfig().pipe(Layer.provide(loggingLayerConfig))))

NodeRuntime.runMain(Effect.provide(main, loggingLayerConfig))
