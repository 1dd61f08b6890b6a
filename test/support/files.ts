/** Test fixtures for file transfer: temporary directories, random files, nodes with a chosen FileStore, a child sender. */
import { Context, Deferred, Effect, Layer } from "effect"
import type { Scope } from "effect"
import * as crypto from "node:crypto"
import * as fsp from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { DistributionHandler } from "../../src/layers/Distribution.js"
import { FileStore } from "../../src/layers/FileStore.js"
import type { PartialFile } from "../../src/layers/FileStore.js"
import { FileTransfer } from "../../src/layers/FileTransfer.js"
import type { NetworkOverrides } from "../../src/layers/Network.js"
import { networkLayerWith } from "../../src/layers/Network.js"
import { PacketDispatcher } from "../../src/layers/PacketHandlers.js"
import { PeerNetwork } from "../../src/layers/PeerNetwork.js"
import type { NetworkSettings } from "../../src/schema/settings.js"
import { spawnScript } from "./child.js"
import { fastSettings } from "./nodes.js"

/** A fresh temporary directory, removed with everything in it when the scope closes. */
export const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.promise(() => fsp.mkdtemp(path.join(os.tmpdir(), "p2p-files-"))),
  (dir) => Effect.promise(() => fsp.rm(dir, { recursive: true, force: true }))
)

/** Writes `size` random bytes to `file`, 1 MiB at a time; returns their SHA-256 (hex). */
export const writeRandomFile = (file: string, size: number) =>
  Effect.promise(async () => {
    const hash = crypto.createHash("sha256")
    const handle = await fsp.open(file, "w")
    try {
      for (let done = 0; done < size;) {
        const piece = crypto.randomBytes(Math.min(1024 * 1024, size - done))
        hash.update(piece)
        await handle.write(piece)
        done += piece.length
      }
    } finally {
      await handle.close()
    }
    return hash.digest("hex")
  })

/** SHA-256 (hex) of a file on disk, read as a stream. */
export const sha256Of = (file: string) =>
  Effect.promise(async () => {
    const hash = crypto.createHash("sha256")
    const handle = await fsp.open(file, "r")
    try {
      for await (const chunk of handle.createReadStream()) hash.update(chunk as Buffer)
    } finally {
      await handle.close().catch(() => undefined)
    }
    return hash.digest("hex")
  })

/** The entries of a directory ([] when it does not exist), hidden ones included. */
export const listDir = (dir: string) =>
  Effect.promise(() => fsp.readdir(dir).catch(() => [] as Array<string>)).pipe(Effect.map((names) => names.sort()))

/** Starts a network in the current scope, with the FileStore layer given (the default disk store otherwise). */
export const startFileNode = (
  settings: Partial<ConstructorParameters<typeof NetworkSettings>[0]> = {},
  options: { readonly store?: Layer.Layer<FileStore>; readonly overrides?: NetworkOverrides } = {}
) => {
  const network = networkLayerWith(
    { ...fastSettings, ...settings },
    options.store === undefined ? (options.overrides ?? {}) : { ...options.overrides, fileStore: options.store }
  )
  return Layer.build(network).pipe(
    Effect.map((ctx) => ({
      network: Context.get(ctx, PeerNetwork),
      files: Context.get(ctx, FileTransfer),
      distribution: Context.get(ctx, DistributionHandler),
      dispatcher: Context.get(ctx, PacketDispatcher)
    })),
    Effect.orDie
  )
}

/**
 * A store that holds every append after the first `free` ones until `release` is done, so a test can keep a transfer
 * midway without timing; `held` is done when an append is waiting.
 */
export const gatedStore = (inner: FileStore["Type"], free: number) =>
  Effect.gen(function* () {
    const release = yield* Deferred.make<void>()
    const held = yield* Deferred.make<void>()
    let appends = 0
    const gate = (partial: PartialFile): PartialFile => ({
      ...partial,
      append: (bytes) =>
        Effect.suspend(() =>
          ++appends <= free
            ? partial.append(bytes)
            : Deferred.succeed(held, undefined).pipe(
                Effect.zipRight(Deferred.await(release)),
                Effect.zipRight(partial.append(bytes))
              )
        )
    })
    const store = FileStore.of({ ...inner, begin: (key) => Effect.map(inner.begin(key), gate) })
    return { store, release: Deferred.succeed(release, undefined), held: Deferred.await(held) }
  })

const senderEntry = path.resolve(import.meta.dirname, "file-sender.ts")

/** Runs test/support/file-sender.ts: it dials 127.0.0.1:`port` and sends `file`; scoped (closing the scope kills it). */
export const spawnFileSender = (port: number, file: string, env: Record<string, string> = {}) =>
  spawnScript(senderEntry, { P2P_PORT: "0", FILE_PEER_PORT: String(port), FILE_PATH: file, ...env })
