/**
 * A node in a child process that sends one file, for crash tests. Settings come from P2P_* variables; FILE_PEER_PORT
 * is the port to dial on 127.0.0.1 and FILE_PATH the file. It prints JSON lines on stdout: {"ready":{id}},
 * {"progress":bytes} for each chunk sent, then {"sent":{sha256}} or {"failed":message}; it stays up until stdin ends.
 */
import { Effect, Layer, Logger, LogLevel, Stream } from "effect"
import { FileTransfer } from "../../src/layers/FileTransfer.js"
import { networkLayerConfig } from "../../src/layers/Network.js"
import { PeerNetwork } from "../../src/layers/PeerNetwork.js"

const say = (o: unknown) => Effect.sync(() => process.stdout.write(JSON.stringify(o) + "\n"))

const program = Effect.gen(function* () {
  const network = yield* PeerNetwork
  const files = yield* FileTransfer
  const channel = yield* network.dial("127.0.0.1", Number(process.env["FILE_PEER_PORT"]))
  yield* channel.awaitTrusted
  yield* say({ ready: { id: network.id } })
  const upload = yield* files.startFile(channel.remoteId, process.env["FILE_PATH"]!)
  yield* upload.progress.pipe(Stream.runForEach((p) => say({ progress: p.bytes })))
  yield* upload.result.pipe(
    Effect.matchEffect({
      onFailure: (e) => say({ failed: e.message }),
      onSuccess: (sent) => say({ sent: { sha256: sent.sha256 } })
    })
  )
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
