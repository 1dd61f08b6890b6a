/**
 * A node in a child process for tests. Settings come from P2P_* variables. It prints one JSON line per event on
 * stdout: {"ready":{id,port}}, {"received":{tag,from,text?}}. It echoes every packet except Disconnect back to its
 * sender with its own origin, so the parent sees each kind travel both ways.
 */
import { DateTime, Effect, Stream } from "effect"
import { PeerNetwork } from "../../src/layers/PeerNetwork.js"
import { runChild, say, untilStdinEnds } from "./child-main.js"

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
  yield* untilStdinEnds
})

runChild(program)
