/**
 * A node in a child process that sends one file, for crash tests. Settings come from P2P_* variables; FILE_PEER_PORT
 * is the port to dial on 127.0.0.1 and FILE_PATH the file. It prints JSON lines on stdout: {"ready":{id}},
 * {"progress":bytes} for each chunk sent, then {"sent":{sha256}} or {"failed":message}; it stays up until stdin ends.
 */
import { Effect, Stream } from "effect"
import { FileTransfer } from "../../src/layers/FileTransfer.js"
import { PeerNetwork } from "../../src/layers/PeerNetwork.js"
import { runChild, say, untilStdinEnds } from "./child-main.js"

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
  yield* untilStdinEnds
})

runChild(program)
