/**
 * The file benchmark: a 256 MiB file of random bytes sent with FileTransfer.sendFile to the receiving process
 * (bench/peer.ts), timed from the call to the receiver's receipt (stored whole, SHA-256 verified), against the bulk
 * baseline (plain node:net, 64 KiB frames, the same 256 MiB) measured in the same run.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import type { FileTransfer } from "../src/layers/FileTransfer.js"
import type { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { connect, sendBulk } from "./baseline.js"
import type { Options } from "./measure.js"
import { BenchFailed } from "./receiver.js"
import type { Receiver } from "./receiver.js"
import { BULK_BYTES, median } from "./shared.js"

export const FILE_BYTES = 256 * 1024 * 1024

const now = Effect.sync(() => performance.now())

/** A file of `size` random bytes in a temporary directory, removed with the scope. */
const randomFile = (size: number) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), "p2p-bench-file-"))
      const file = path.join(dir, "random.bin")
      const handle = await fs.open(file, "w")
      const block = 16 * 1024 * 1024
      for (let written = 0; written < size; written += block) {
        await handle.write(crypto.randomBytes(Math.min(block, size - written)))
      }
      await handle.close()
      return { dir, file }
    }),
    ({ dir }) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
  ).pipe(Effect.map(({ file }) => file))

export interface FileResult {
  /** MB/s (10^6 bytes per second), medians. */
  readonly library: number
  readonly baseline: number
}

export const fileBench = (
  receiver: Receiver,
  node: PeerNetwork["Type"],
  files: FileTransfer["Type"],
  options: Options
): Effect.Effect<FileResult, BenchFailed, Scope.Scope> =>
  Effect.gen(function* () {
    const file = yield* randomFile(FILE_BYTES)
    const channel = yield* node.dial("127.0.0.1", receiver.ready.libraryPort).pipe(
      Effect.tap((c) => c.awaitTrusted),
      Effect.mapError((e) => new BenchFailed({ detail: `dial: ${e.message}` }))
    )
    const socket = yield* connect(receiver.ready.bulkPort).pipe(
      Effect.mapError((e) => new BenchFailed({ detail: `baseline connect: ${e.message}` }))
    )
    const payload = new Uint8Array(BULK_BYTES).map((_, i) => i & 255)
    const frames = FILE_BYTES / BULK_BYTES
    const baselineRun = Effect.gen(function* () {
      yield* receiver.tell({ _tag: "Arm", count: frames })
      yield* receiver.expect("Armed")
      const start = yield* now
      yield* sendBulk(socket, frames, payload).pipe(
        Effect.mapError((e) => new BenchFailed({ detail: `baseline: ${e.message}` }))
      )
      const done = yield* receiver.expect("Done", 120_000)
      return FILE_BYTES / 1e6 / ((done.at - start) / 1000)
    })
    const libraryRun = Effect.gen(function* () {
      const start = yield* now
      const sent = yield* files.sendFile(channel.remoteId, file).pipe(
        Effect.mapError((e) => new BenchFailed({ detail: `sendFile: ${e.message}` })),
        Effect.timeoutFail({
          duration: "2 minutes",
          onTimeout: () => new BenchFailed({ detail: "sendFile timed out" })
        })
      )
      if (sent.size !== FILE_BYTES) return yield* new BenchFailed({ detail: `sent ${sent.size} bytes` })
      return FILE_BYTES / 1e6 / (((yield* now) - start) / 1000)
    })
    // one warm-up run each
    yield* baselineRun
    yield* libraryRun
    const library: Array<number> = []
    const baseline: Array<number> = []
    const rounds = Math.min(options.rounds, 3)
    for (let round = 0; round < rounds; round++) {
      if (round % 2 === 0) {
        baseline.push(yield* baselineRun)
        library.push(yield* libraryRun)
      } else {
        library.push(yield* libraryRun)
        baseline.push(yield* baselineRun)
      }
    }
    yield* channel.close("benchmark file transfer done")
    return { library: median(library), baseline: median(baseline) }
  })
