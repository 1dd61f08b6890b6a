/**
 * A node in a child process for tests. Settings come from P2P_* variables. It prints one JSON line per event on
 * stdout: {"ready":{id,port}}, {"received":{tag,from,text?}}. It echoes every packet except Disconnect back to its
 * sender with its own origin, so the parent sees each kind travel both ways.
 */
import { DateTime, Effect, Layer, Logger, LogLevel, Stream } from "effect"
import { networkLayerConfig } from "../../src/layers/Network.js"
import { PeerNetwork } from "../../src/layers/PeerNetwork.js"

const say = (o: unknown) => Effect.sync(() => process.stdout.write(JSON.stringify(o) + "\n"))

const program = Effect.gen(function* () {
  const network = yield* PeerNetwork
  yield* Effect.forkScoped(
    network.registry.packets.pipe(
      Stream.runForEach(({ channel, packet }) =>
        Effect.gen(function* () {
          yield* say({
            received: {
              tag: packet._tag,
              from: channel.remoteId,
              text: packet._tag === "PureMessage" ? packet.message : undefined
            }
          })
          if (packet._tag !== "Disconnect") {
            const echo = { ...packet, origin: network.id, sentAt: yield* DateTime.now }
            yield* channel.send(Object.assign(Object.create(Object.getPrototypeOf(packet)), echo)).pipe(Effect.ignore)
          }
        })
      )
    )
  )
  yield* say({ ready: { id: network.id, port: network.port } })
  // exit when the parent goes away
  yield* Effect.async<void>((resume) => {
    process.stdin.on("end", () => resume(Effect.void))
    process.stdin.on("close", () => resume(Effect.void))
    process.stdin.resume()
  })
})

Effect.runPromise(
  Effect.scoped(program).pipe(
    Effect.provide(networkLayerConfig().pipe(Layer.provide(Logger.minimumLogLevel(LogLevel.Warning)))),
    Effect.provide(Logger.minimumLogLevel(LogLevel.Warning))
  )
).then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(String(e) + "\n")
    process.exit(1)
  }
)
