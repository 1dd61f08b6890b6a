/**
 * FileStore: where received files go. A transfer is written to a partial file (`<inbox>/.partial/<key>.part` on disk)
 * and moved to its final name only once complete and verified, so nothing that looks like a finished file is ever
 * half-written. The default store is a directory on disk (NetworkSettings.fileInbox, created on first use); tests and
 * embedders can use the in-memory store. FileTransfer picks up a FileStore provided to the network layer.
 */
import { FileSystem } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { NodeFileSystem } from "@effect/platform-node"
import { Context, Effect, Exit, Fiber, Layer, Option, Scope, Stream } from "effect"
import * as NFS from "node:fs"
import * as path from "node:path"
import { FileStoreError, fileNameProblem } from "../schema/files.js"
import { NetworkConfig } from "./Settings.js"

/** A finished file of the store. */
export interface StoredFile {
  readonly name: string
  readonly size: number
}

/** The partial file of one transfer. After `commit` or `discard` it is done; further calls do nothing or fail. */
export interface PartialFile {
  /**
   * Appends bytes at the end. It may only buffer them (and keep `bytes`, which must not change afterwards): a write
   * error then fails a later `append` or the `commit`.
   */
  readonly append: (bytes: Uint8Array) => Effect.Effect<void, FileStoreError>
  /**
   * Moves the partial to `name` in the inbox, never replacing an existing file (`name (1).ext`, `name (2).ext`... are
   * tried instead); returns where the file now is. `name` must satisfy `fileNameProblem`.
   */
  readonly commit: (name: string) => Effect.Effect<string, FileStoreError>
  /** Removes the partial. Never fails (a leftover is logged, and removed at the next start). */
  readonly discard: Effect.Effect<void>
}

export class FileStore extends Context.Tag("effect-p2pnet/FileStore")<
  FileStore,
  {
    /** Where files land: a directory, or "memory:". */
    readonly location: string
    /** Starts the partial file for `key` (letters, digits, `-`, `_`), replacing one an earlier attempt left. */
    readonly begin: (key: string) => Effect.Effect<PartialFile, FileStoreError>
    /** Removes every partial file (stale ones from an earlier run). */
    readonly clearPartials: Effect.Effect<void, FileStoreError>
    /** The finished files. */
    readonly files: Effect.Effect<ReadonlyArray<StoredFile>, FileStoreError>
    /** The keys of the partial files present. */
    readonly partials: Effect.Effect<ReadonlyArray<string>, FileStoreError>
    /** The content of a finished file, in chunks. */
    readonly read: (name: string) => Stream.Stream<Uint8Array, FileStoreError>
  }
>() {
  /** A directory on disk: NetworkSettings.fileInbox, resolved against the working directory. */
  static readonly layer = Layer.effect(
    this,
    Effect.flatMap(NetworkConfig, (s) => Effect.suspend(() => makeDirectoryStore(s.fileInbox)))
  ).pipe(Layer.provide(NodeFileSystem.layer))
  /** A directory on disk. */
  static readonly layerDirectory = (directory: string) =>
    Layer.effect(
      this,
      Effect.suspend(() => makeDirectoryStore(directory))
    ).pipe(Layer.provide(NodeFileSystem.layer))
  /** Files kept in memory (for tests and small embedded uses). */
  static readonly layerMemory = Layer.sync(this, () => makeMemoryStore())
}

const PARTIAL_DIR = ".partial"
const KEY = /^[0-9A-Za-z_-]{1,128}$/
/** Bytes a partial file gathers before writing them (appends are usually far smaller chunks). */
const WRITE_BYTES = 1024 * 1024
/**
 * Bytes a partial file gathers at most while a write is in flight; beyond this the appender waits for the disk. On a
 * busy host a write's latency is mostly thread pool and event loop scheduling (measured: ~28 ms for a 1 MiB write
 * that takes 2 ms as a system call), much the same for 1 or 4 MiB: a slow write is followed by a larger one rather
 * than stalling the receiver every 1 MiB. Memory stays bounded by about twice this.
 */
const MAX_PENDING_BYTES = 4 * 1024 * 1024
/** Attempts at a free name (`name`, `name (1)`, ... `name (999)`). */
const NAME_ATTEMPTS = 1000

/** The names tried for a file called `name`: the name itself, then ` (n)` before its extension. */
export const candidateNames = function* (name: string): Generator<string> {
  yield name
  const dot = name.lastIndexOf(".")
  const [base, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""]
  for (let i = 1; i < NAME_ATTEMPTS; i++) yield `${base} (${i})${ext}`
}

const badKey = (key: string) => new FileStoreError({ path: key, detail: "invalid partial file key" })
const badName = (name: string, problem: string) => new FileStoreError({ path: name, detail: problem })

/**
 * Writes `buffers` one after the other at `position` of `fd` (the file at `filePath`), one writev per call: the
 * gathered chunks are not copied into one block first (@effect/platform's File has no vectored write). Goes on after
 * a short write.
 */
const writeAllAt = (
  fd: number,
  filePath: string,
  buffers: ReadonlyArray<Uint8Array>,
  position: number
): Effect.Effect<void, FileStoreError> =>
  Effect.async<number, FileStoreError>((resume) =>
    NFS.writev(fd, buffers, position, (error, written) =>
      resume(
        error === null
          ? Effect.succeed(written)
          : Effect.fail(new FileStoreError({ path: filePath, detail: error.message }))
      )
    )
  ).pipe(
    Effect.flatMap((written) => {
      if (written === 0) return new FileStoreError({ path: filePath, detail: "write returned 0 bytes written" })
      let rest = written
      let i = 0
      while (i < buffers.length && rest >= buffers[i]!.length) rest -= buffers[i++]!.length
      if (i === buffers.length) return Effect.void
      return writeAllAt(fd, filePath, [buffers[i]!.subarray(rest), ...buffers.slice(i + 1)], position + written)
    })
  )

/** A FileStore in `directory` (created on first use, not here). */
export const makeDirectoryStore = (directory: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const dir = path.resolve(directory)
    const partialDir = path.join(dir, PARTIAL_DIR)
    const storeError = (p: string) => (e: PlatformError) => new FileStoreError({ path: p, detail: e.message })
    const isNotFound = (e: PlatformError) => e._tag === "SystemError" && e.reason === "NotFound"
    const listing = (d: string) =>
      fs.readDirectory(d).pipe(
        Effect.catchIf(isNotFound, () => Effect.succeed([] as Array<string>)),
        Effect.mapError(storeError(d))
      )

    const begin = (key: string) =>
      Effect.gen(function* () {
        if (!KEY.test(key)) return yield* badKey(key)
        const partialPath = path.join(partialDir, `${key}.part`)
        yield* fs.makeDirectory(partialDir, { recursive: true }).pipe(Effect.mapError(storeError(partialDir)))
        const scope = yield* Scope.make()
        // "w" truncates: a retry of the same transfer replaces what the earlier attempt left
        const file = yield* fs.open(partialPath, { flag: "w" }).pipe(
          Scope.extend(scope),
          Effect.mapError(storeError(partialPath)),
          Effect.tapError(() => Scope.close(scope, Exit.void))
        )
        const close = Scope.close(scope, Exit.void)
        const remove = fs
          .remove(partialPath, { force: true })
          .pipe(Effect.catchAll((e) => Effect.logWarning(`could not remove partial file ${partialPath}: ${e.message}`)))
        let done = false
        const finished = () => new FileStoreError({ path: partialPath, detail: "partial file already finished" })

        const moveTo = (target: string) =>
          fs.link(partialPath, target).pipe(
            Effect.as(true),
            Effect.catchAll((e) => {
              if (e._tag === "SystemError" && e.reason === "AlreadyExists") return Effect.succeed(false)
              // no hard links here (some network or FAT file systems): rename, after checking the name is free
              return fs
                .exists(target)
                .pipe(
                  Effect.flatMap((taken) =>
                    taken ? Effect.succeed(false) : Effect.as(fs.rename(partialPath, target), true)
                  )
                )
            }),
            Effect.mapError(storeError(target))
          )

        // appends are gathered into writes of at least WRITE_BYTES (one system call per block, not one per chunk), and
        // a block is written while the next one gathers. While a write is in flight, appends go on gathering up to
        // MAX_PENDING_BYTES, written as one block once it is done: the caller waits only when the disk is that far behind
        let position = 0
        let pending: Array<Uint8Array> = []
        let pendingBytes = 0
        let writing: Fiber.Fiber<void, FileStoreError> | undefined
        let writeInFlight = false
        const settle = Effect.suspend(() => {
          const previous = writing
          writing = undefined
          return previous === undefined ? Effect.void : Fiber.join(previous)
        })
        const flush = Effect.gen(function* () {
          yield* settle
          if (pendingBytes === 0) return
          const block = pending
          const at = position
          position += pendingBytes
          pending = []
          pendingBytes = 0
          writeInFlight = true
          writing = yield* Effect.forkIn(
            writeAllAt(file.fd, partialPath, block, at).pipe(
              Effect.ensuring(Effect.sync(() => (writeInFlight = false)))
            ),
            scope
          )
        })

        // a write in flight cannot be cancelled: it must end before the descriptor is closed (and maybe reused)
        const closeFile = Effect.zipRight(Effect.ignore(settle), close)

        const partial: PartialFile = {
          append: (bytes) =>
            Effect.suspend(() => {
              if (done) return Effect.fail(finished())
              pending.push(bytes)
              pendingBytes += bytes.length
              if (pendingBytes < WRITE_BYTES) return Effect.void
              return writeInFlight && pendingBytes < MAX_PENDING_BYTES ? Effect.void : flush
            }),
          commit: (name) =>
            Effect.gen(function* () {
              if (done) return yield* finished()
              const problem = fileNameProblem(name)
              if (problem !== undefined) return yield* badName(name, problem)
              yield* flush
              yield* settle
              yield* file.sync.pipe(Effect.mapError(storeError(partialPath)))
              done = true
              yield* close
              for (const candidate of candidateNames(name)) {
                const target = path.join(dir, candidate)
                if (path.dirname(target) !== dir) return yield* badName(candidate, "leaves the inbox")
                if (yield* moveTo(target)) {
                  // after a hard link the partial name still exists: drop it (after a rename this does nothing)
                  yield* remove
                  return target
                }
              }
              return yield* new FileStoreError({ path: path.join(dir, name), detail: "no free file name" })
            }).pipe(Effect.tapError(() => Effect.zipRight(closeFile, remove))),
          discard: Effect.suspend(() => {
            if (done) return Effect.void
            done = true
            pending = []
            return Effect.zipRight(closeFile, remove)
          })
        }
        return partial
      })

    return FileStore.of({
      location: dir,
      begin,
      clearPartials: fs
        .remove(partialDir, { recursive: true, force: true })
        .pipe(Effect.mapError(storeError(partialDir))),
      files: Effect.gen(function* () {
        const names = (yield* listing(dir)).filter((n) => !n.startsWith(".")).sort()
        const out: Array<StoredFile> = []
        for (const name of names) {
          const info = yield* fs.stat(path.join(dir, name)).pipe(Effect.option)
          if (Option.isSome(info) && info.value.type === "File") out.push({ name, size: Number(info.value.size) })
        }
        return out
      }),
      partials: Effect.map(listing(partialDir), (names) =>
        names.filter((n) => n.endsWith(".part")).map((n) => n.slice(0, -".part".length))
      ),
      read: (name) => {
        const problem = fileNameProblem(name)
        if (problem !== undefined) return Stream.fail(badName(name, problem))
        const target = path.join(dir, name)
        return fs.stream(target).pipe(Stream.mapError(storeError(target)))
      }
    })
  })

/** A FileStore in memory. */
export const makeMemoryStore = (): FileStore["Type"] => {
  const partials = new Map<string, { readonly chunks: Array<Uint8Array> }>()
  const files = new Map<string, Uint8Array>()
  const begin = (key: string) =>
    Effect.sync(() => {
      if (!KEY.test(key)) return Effect.fail(badKey(key))
      const entry = { chunks: [] as Array<Uint8Array> }
      partials.set(key, entry)
      let done = false
      const finish = () => {
        done = true
        if (partials.get(key) === entry) partials.delete(key)
      }
      const finished = () => new FileStoreError({ path: key, detail: "partial file already finished" })
      const partial: PartialFile = {
        // a copy: the chunk is a view into a received frame, which must not stay reachable
        append: (bytes) =>
          Effect.suspend(() => (done ? Effect.fail(finished()) : Effect.sync(() => entry.chunks.push(bytes.slice())))),
        commit: (name) =>
          Effect.suspend(() => {
            if (done) return Effect.fail(finished())
            const problem = fileNameProblem(name)
            if (problem !== undefined) return Effect.fail(badName(name, problem))
            finish()
            for (const candidate of candidateNames(name)) {
              if (!files.has(candidate)) {
                files.set(candidate, Buffer.concat(entry.chunks))
                return Effect.succeed(candidate)
              }
            }
            return Effect.fail(new FileStoreError({ path: name, detail: "no free file name" }))
          }),
        discard: Effect.sync(finish)
      }
      return Effect.succeed(partial)
    }).pipe(Effect.flatten)
  return FileStore.of({
    location: "memory:",
    begin,
    clearPartials: Effect.sync(() => partials.clear()),
    files: Effect.sync(() => [...files].map(([name, bytes]) => ({ name, size: bytes.length })).sort(byName)),
    partials: Effect.sync(() => [...partials.keys()]),
    read: (name) =>
      Stream.suspend(() => {
        const bytes = files.get(name)
        return bytes === undefined
          ? Stream.fail(new FileStoreError({ path: name, detail: "no such file" }))
          : Stream.succeed(bytes)
      })
  })
}

const byName = (a: StoredFile, b: StoredFile) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
