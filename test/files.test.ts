/**
 * File transfer between live nodes on 127.0.0.1: a large file streams through with bounded memory and arrives with the
 * same SHA-256; progress is reported on both sides; a transfer cut off midway leaves nothing that looks complete and
 * can be sent again; and hostile file messages are refused with typed errors while the channel keeps working.
 */
import { NodeFileSystem } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Either, Layer, Option, Queue, Stream } from "effect"
import * as fc from "fast-check"
import * as path from "node:path"
import { FileStore, makeDirectoryStore } from "../src/layers/FileStore.js"
import type { FileTransfer } from "../src/layers/FileTransfer.js"
import {
  decodeFileMessage,
  encodeFileMessage,
  FileChunk,
  FileEnd,
  FileMessage,
  FileStart,
  fileNameProblem,
  TransferId
} from "../src/schema/files.js"
import type { FileEvent, FileReceived, TransferFailed, TransferProgress } from "../src/schema/files.js"
import type { NodeId } from "../src/schema/ids.js"
import { retainedBytes } from "./support/memory.js"
import { nextLine } from "./support/child.js"
import { message } from "./support/nodes.js"
import {
  gatedStore,
  listDir,
  sha256Of,
  spawnFileSender,
  startFileNode,
  tempDir,
  writeRandomFile
} from "./support/files.js"

const MiB = 1024 * 1024

/** Retained bytes, the lower of two readings: buffers freed by a collection are released lazily, in the background. */
const retained = () => Math.min(retainedBytes(), retainedBytes())

/** Every file event of a node from now on, in a queue (a test takes several in turn). */
const eventQueue = (files: FileTransfer["Type"]) =>
  Effect.gen(function* () {
    const events = yield* files.subscribe
    const queue = yield* Queue.unbounded<FileEvent>()
    yield* Effect.forkScoped(Stream.runForEach(events, (e) => Queue.offer(queue, e)))
    return queue
  })

/** A guard on a wait: a hang becomes a failure. */
const within = <A, E>(wait: Effect.Effect<A, E>): Effect.Effect<A> =>
  wait.pipe(Effect.timeout("20 seconds"), Effect.orDie)

/** The next event matching `f`, skipping the others. */
const nextEvent = <A extends FileEvent>(queue: Queue.Queue<FileEvent>, f: (e: FileEvent) => e is A) => {
  const loop: Effect.Effect<A> = Effect.flatMap(Queue.take(queue), (e) => (f(e) ? Effect.succeed(e) : loop))
  return within(loop)
}
const isReceived = (e: FileEvent): e is FileReceived => e._tag === "FileReceived"
const isFailed = (e: FileEvent): e is TransferFailed => e._tag === "TransferFailed"

/** Two connected nodes; the receiver `b` stores into `inbox` on disk, or into `store` when given. */
const pair = (dir: string, store?: Layer.Layer<FileStore>) =>
  Effect.gen(function* () {
    const inbox = path.join(dir, "inbox")
    const a = yield* startFileNode({ fileInbox: path.join(dir, "a-inbox") })
    const b = yield* startFileNode({ fileInbox: inbox }, store === undefined ? {} : { store })
    const channel = yield* a.network.dial("127.0.0.1", b.network.port).pipe(Effect.orDie)
    yield* channel.awaitTrusted.pipe(Effect.orDie)
    yield* b.network.awaitChannel(a.network.id)
    return { a, b, inbox, channel }
  })

describe("FileTransfer", () => {
  it.scopedLive(
    "a 64 MiB file from another process arrives with the same SHA-256, the receiver's memory far below its size",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = path.join(dir, "random.bin")
        const size = 64 * MiB
        const sha256 = yield* writeRandomFile(file, size)
        const inbox = path.join(dir, "inbox")
        const b = yield* startFileNode({ fileInbox: inbox })
        const events = yield* eventQueue(b.files)
        const progress = yield* b.files.subscribe
        const baseline = retained()
        // sample the retained heap every 8 MiB received, while the transfer runs
        const sampler = yield* Effect.fork(
          progress.pipe(
            Stream.filter((e): e is TransferProgress => e._tag === "TransferProgress"),
            Stream.takeUntil((p) => p.bytes === p.total),
            Stream.filter((p) => p.bytes % (8 * MiB) === 0),
            Stream.runFold({ samples: 0, peak: 0, first: 0 }, (s, p) => ({
              samples: s.samples + (p.bytes > 0 ? 1 : 0),
              peak: p.bytes > 0 ? Math.max(s.peak, retained() - baseline) : s.peak,
              first: p.bytes === 0 ? Date.now() : s.first
            }))
          )
        )
        const sender = yield* spawnFileSender(b.network.port, file, { P2P_FILE_INBOX: path.join(dir, "child-inbox") })
        const received = yield* nextEvent(events, isReceived)
        const finished = Date.now()
        const { first, peak, samples } = yield* within(Effect.flatten(sampler.await))
        const millis = finished - first
        yield* Effect.logInfo(
          `64 MiB in ${millis} ms (${(size / MiB / (millis / 1000)).toFixed(0)} MiB/s), ` +
            `peak retained growth ${(peak / MiB).toFixed(1)} MiB over ${samples} samples`
        )
        assert.strictEqual(received.sha256, sha256)
        assert.strictEqual(received.size, size)
        assert.strictEqual(received.path, path.join(inbox, "random.bin"))
        assert.strictEqual(yield* sha256Of(received.path), sha256)
        assert.strictEqual((yield* within(nextLine(sender, "sent"))).sha256, sha256)
        assert.strictEqual(samples, 8)
        assert.isBelow(peak, 32 * MiB, "retained memory growth during the transfer")
        assert.deepStrictEqual(yield* listDir(path.join(inbox, ".partial")), [])
      }),
    30_000
  )

  it.scopedLive("progress is monotonic and ends at the total on both sides (in-memory store)", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "notes.txt")
      const size = 3 * MiB + 12_345
      const sha256 = yield* writeRandomFile(file, size)
      const memory = yield* Layer.build(FileStore.layerMemory)
      const { a, b, inbox } = yield* pair(dir, Layer.succeedContext(memory))
      const receiving = yield* b.files.subscribe
      const upload = yield* a.files.startFile(b.network.id, file, { name: "renamed.txt" })
      const sending = yield* within(Stream.runCollect(upload.progress))
      const sent = yield* within(upload.result)
      const received = yield* receiving.pipe(
        Stream.filter((e) => e.transfer === upload.transfer),
        Stream.takeUntil(isReceived),
        Stream.runCollect,
        within
      )
      const receivedProgress = [...received].filter((e): e is TransferProgress => e._tag === "TransferProgress")
      for (const side of [[...sending], receivedProgress]) {
        const bytes = side.map((p) => p.bytes)
        assert.strictEqual(bytes[0], 0)
        assert.strictEqual(bytes.at(-1), size)
        for (let i = 1; i < bytes.length; i++) assert.isAbove(bytes[i]!, bytes[i - 1]!)
        for (const p of side) assert.strictEqual(p.total, size)
      }
      assert.isAbove(sending.length, 2)
      assert.deepStrictEqual([sent.name, sent.size, sent.sha256], ["renamed.txt", size, sha256])
      const store = b.files.store
      assert.strictEqual(store.location, "memory:")
      assert.deepStrictEqual(yield* store.files, [{ name: "renamed.txt", size }])
      assert.deepStrictEqual(yield* store.partials, [])
      const content = yield* store.read("renamed.txt").pipe(Stream.runCollect)
      assert.strictEqual(Buffer.concat([...content]).length, size)
      assert.deepStrictEqual(yield* listDir(inbox), [], "nothing on disk")
      // a second file of the same name does not replace the first
      const again = yield* a.files.sendFile(b.network.id, file, { name: "renamed.txt" })
      assert.strictEqual(again.sha256, sha256)
      assert.deepStrictEqual(
        (yield* store.files).map((f) => f.name),
        ["renamed (1).txt", "renamed.txt"]
      )
    })
  )

  it.scopedLive(
    "a sender killed midway leaves no complete-looking file and no partial; a fresh sender then succeeds",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const file = path.join(dir, "movie.bin")
        const sha256 = yield* writeRandomFile(file, 24 * MiB)
        const inbox = path.join(dir, "inbox")
        const disk = yield* makeDirectoryStore(inbox).pipe(Effect.provide(NodeFileSystem.layer))
        // the receiver stores a few chunks, then holds: the transfer is midway whatever the machine's speed
        const gated = yield* gatedStore(disk, 4)
        const b = yield* startFileNode({ fileInbox: inbox }, { store: Layer.succeed(FileStore, gated.store) })
        const events = yield* eventQueue(b.files)
        const childEnv = { P2P_FILE_INBOX: path.join(dir, "child-inbox") }

        const first = yield* spawnFileSender(b.network.port, file, childEnv)
        yield* within(gated.held)
        const some = yield* nextEvent(
          events,
          (e): e is TransferProgress => e._tag === "TransferProgress" && e.bytes > 0
        )
        assert.isBelow(some.bytes, some.total)
        yield* first.kill
        yield* gated.release
        const failed = yield* nextEvent(events, isFailed)
        assert.strictEqual(failed.error._tag, "ChannelClosed")
        assert.strictEqual(failed.transfer, some.transfer)
        assert.deepStrictEqual(yield* listDir(inbox), [".partial"], "no file under the final name")
        assert.deepStrictEqual(yield* listDir(path.join(inbox, ".partial")), [], "no leftover partial")

        const second = yield* spawnFileSender(b.network.port, file, childEnv)
        const received = yield* nextEvent(events, isReceived)
        assert.strictEqual(received.sha256, sha256)
        assert.strictEqual(yield* sha256Of(path.join(inbox, "movie.bin")), sha256)
        assert.strictEqual((yield* within(nextLine(second, "sent"))).sha256, sha256)
        assert.deepStrictEqual(yield* listDir(inbox), [".partial", "movie.bin"])
        assert.deepStrictEqual(yield* listDir(path.join(inbox, ".partial")), [])
      }),
    30_000
  )

  it.scopedLive("sending again under the same transfer id replaces what an interrupted attempt left", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "data.bin")
      const sha256 = yield* writeRandomFile(file, MiB)
      const { a, b, inbox } = yield* pair(dir)
      const events = yield* eventQueue(b.files)
      const transfer = TransferId.make("ab".repeat(16))
      const raw = (m: FileMessage) => a.distribution.sendTo(b.network.id, encodeFileMessage(m), { format: "File" })
      yield* raw(FileStart.make({ transfer, name: "data.bin", size: MiB }))
      yield* raw(new FileChunk({ transfer, offset: 0, bytes: new Uint8Array(1000).fill(7) }))
      yield* nextEvent(events, (e): e is TransferProgress => e._tag === "TransferProgress" && e.bytes === 1000)
      assert.strictEqual((yield* listDir(path.join(inbox, ".partial"))).length, 1)
      const sent = yield* a.files.sendFile(b.network.id, file, { transfer })
      assert.strictEqual(sent.sha256, sha256)
      assert.strictEqual(yield* sha256Of(path.join(inbox, "data.bin")), sha256)
      assert.deepStrictEqual(yield* listDir(path.join(inbox, ".partial")), [])
    })
  )

  it.scopedLive(
    "a transfer dropped with its closed channel is refused, once, when the sender goes on over a new one",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const { a, b, channel } = yield* pair(dir)
        const events = yield* eventQueue(b.files)
        const transfer = TransferId.make("ef".repeat(16))
        const raw = (m: FileMessage) => a.distribution.sendTo(b.network.id, encodeFileMessage(m), { format: "File" })
        yield* raw(FileStart.make({ transfer, name: "cut.bin", size: 100 }))
        yield* raw(new FileChunk({ transfer, offset: 0, bytes: new Uint8Array(10) }))
        yield* nextEvent(events, (e): e is TransferProgress => e._tag === "TransferProgress" && e.bytes === 10)
        yield* channel.close("going away")
        const failed = yield* nextEvent(events, isFailed)
        assert.strictEqual(failed.error._tag, "ChannelClosed")
        assert.deepStrictEqual(yield* b.files.store.partials, [])
        const again = yield* a.network.dial("127.0.0.1", b.network.port).pipe(Effect.orDie)
        yield* again.awaitTrusted.pipe(Effect.orDie)
        const replies = yield* a.distribution.subscribe("DataTransmission")
        yield* raw(new FileChunk({ transfer, offset: 10, bytes: new Uint8Array(10) }))
        yield* raw(new FileChunk({ transfer, offset: 20, bytes: new Uint8Array(10) }))
        // a refused start after them, as an end marker: its rejection comes back after anything the chunks caused
        yield* raw(FileStart.make({ transfer: TransferId.make("0".repeat(32)), name: "../marker", size: 1 }))
        const rejects = yield* replies.pipe(
          Stream.map((r) => decodeFileMessage(r.packet.data)),
          Stream.map((r) => (Either.isRight(r) && r.right._tag === "FileReject" ? r.right.error : "?")),
          Stream.takeUntil((error) => error === "UnsafeFileName"),
          Stream.runCollect,
          within
        )
        assert.deepStrictEqual([...rejects], ["ChannelClosed", "UnsafeFileName"])
        assert.strictEqual(yield* b.dispatcher.failures, 1, "late chunks are not failures, the bad name is")
      })
  )

  describe("hostile file messages are refused with a typed error; the channel keeps working", () => {
    const transfer = TransferId.make("0123456789abcdef".repeat(2))
    const cases: ReadonlyArray<{
      readonly title: string
      readonly error: string
      readonly messages: ReadonlyArray<FileMessage>
    }> = [
      {
        title: "a name climbing out of the inbox",
        error: "UnsafeFileName",
        messages: [FileStart.make({ transfer, name: "../../etc/passwd", size: 4 })]
      },
      {
        title: "an absolute path",
        error: "UnsafeFileName",
        messages: [FileStart.make({ transfer, name: "/etc/passwd", size: 4 })]
      },
      {
        title: "a hidden file",
        error: "UnsafeFileName",
        messages: [FileStart.make({ transfer, name: ".bashrc", size: 4 })]
      },
      {
        title: "a chunk beyond the announced size",
        error: "ChunkBeyondSize",
        messages: [
          FileStart.make({ transfer, name: "small.txt", size: 4 }),
          new FileChunk({ transfer, offset: 0, bytes: new Uint8Array(5) })
        ]
      },
      {
        title: "a gap between chunks",
        error: "ChunkOutOfOrder",
        messages: [
          FileStart.make({ transfer, name: "gap.txt", size: 8 }),
          new FileChunk({ transfer, offset: 4, bytes: new Uint8Array(4) })
        ]
      },
      {
        title: "a bad hash",
        error: "HashMismatch",
        messages: [
          FileStart.make({ transfer, name: "hash.txt", size: 4 }),
          new FileChunk({ transfer, offset: 0, bytes: new Uint8Array([1, 2, 3, 4]) }),
          FileEnd.make({ transfer, sha256: "0".repeat(64) })
        ]
      },
      {
        title: "a file above the size limit",
        error: "FileTooLarge",
        messages: [FileStart.make({ transfer, name: "huge.iso", size: 2 * MiB })]
      },
      {
        title: "a chunk of no transfer",
        error: "UnknownTransfer",
        messages: [new FileChunk({ transfer, offset: 0, bytes: new Uint8Array(4) })]
      }
    ]
    for (const c of cases) {
      it.scopedLive(c.title, () =>
        Effect.gen(function* () {
          const dir = yield* tempDir
          const inbox = path.join(dir, "inbox")
          const a = yield* startFileNode({ fileInbox: path.join(dir, "a-inbox") })
          const b = yield* startFileNode({ fileInbox: inbox, maxFileBytes: MiB })
          const channel = yield* a.network.dial("127.0.0.1", b.network.port).pipe(Effect.orDie)
          yield* channel.awaitTrusted.pipe(Effect.orDie)
          const events = yield* eventQueue(b.files)
          const replies = yield* a.distribution.subscribe("DataTransmission")
          const packets = yield* b.network.registry.subscribePackets
          for (const m of c.messages) {
            yield* a.distribution.sendTo(b.network.id, encodeFileMessage(m), { format: "File" })
          }
          const failed = yield* nextEvent(events, isFailed)
          assert.strictEqual(failed.error._tag, c.error)
          assert.strictEqual(failed.direction, "receive")
          // the sender is told, with the same error
          const reply = yield* replies.pipe(
            Stream.map((r) => decodeFileMessage(r.packet.data)),
            Stream.runHead,
            Effect.map(Option.getOrThrow),
            within
          )
          assert.isTrue(Either.isRight(reply) && reply.right._tag === "FileReject" && reply.right.error === c.error)
          assert.strictEqual(yield* b.dispatcher.failures, 1, "the dispatcher saw the typed failure")
          assert.deepStrictEqual(
            (yield* listDir(inbox)).filter((n) => n !== ".partial"),
            []
          )
          assert.deepStrictEqual(yield* listDir(path.join(inbox, ".partial")), [])
          for (const entry of yield* listDir(dir)) assert.strictEqual(entry, "inbox", "nothing outside the inbox")
          // the channel still works
          yield* channel.send(message(a.network.id, "still there?"))
          const text = yield* packets.pipe(
            Stream.filterMap((r) => (r.packet._tag === "PureMessage" ? Option.some(r.packet.message) : Option.none())),
            Stream.runHead,
            Effect.map(Option.getOrThrow),
            within
          )
          assert.strictEqual(text, "still there?")
          assert.isTrue(channel.isTrusted())
        })
      )
    }

    it.scopedLive("more concurrent transfers than allowed from one peer", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const a = yield* startFileNode({ fileInbox: path.join(dir, "a-inbox") })
        const b = yield* startFileNode({ fileInbox: path.join(dir, "inbox"), fileTransfersPerPeer: 2 })
        yield* a.network.dial("127.0.0.1", b.network.port).pipe(Effect.orDie)
        const events = yield* eventQueue(b.files)
        const ids = ["1", "2", "3"].map((d) => TransferId.make(d.repeat(32)))
        for (const id of ids) {
          const start = FileStart.make({ transfer: id, name: `f${id[0]}.bin`, size: 10 })
          yield* a.distribution.sendTo(b.network.id, encodeFileMessage(start), { format: "File" })
        }
        const failed = yield* nextEvent(events, isFailed)
        assert.strictEqual(failed.error._tag, "TooManyTransfers")
        assert.strictEqual(failed.transfer, ids[2])
        assert.strictEqual((yield* b.files.store.partials).length, 2)
      })
    )
  })

  it.scopedLive("sending fails with typed errors: unknown peer, missing file, unsafe name; an empty file is sent", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { a, b } = yield* pair(dir)
      const missing = yield* Effect.flip(a.files.sendFile("f".repeat(40) as NodeId, path.join(dir, "x")))
      assert.strictEqual(missing._tag, "PeerNotFound")
      const nofile = yield* Effect.flip(a.files.sendFile(b.network.id, path.join(dir, "nope.bin")))
      assert.strictEqual(nofile._tag, "FileReadFailed")
      const unsafe = yield* Effect.flip(a.files.sendFile(b.network.id, dir, { name: "../x" }))
      assert.strictEqual(unsafe._tag, "UnsafeFileName")
      const directory = yield* Effect.flip(a.files.sendFile(b.network.id, dir))
      assert.strictEqual(directory._tag, "FileReadFailed")
      const nowhere = yield* a.files.startFile("f".repeat(40) as NodeId, path.join(dir, "x"))
      assert.strictEqual(
        Chunk.size(yield* within(Stream.runCollect(nowhere.progress))),
        0,
        "the progress of a failure ends"
      )
      assert.strictEqual((yield* Effect.flip(nowhere.result))._tag, "PeerNotFound")
      // an empty file is a file too
      const empty = path.join(dir, "empty.txt")
      yield* writeRandomFile(empty, 0)
      assert.strictEqual((yield* a.files.sendFile(b.network.id, empty)).size, 0)
      assert.strictEqual(yield* sha256Of(path.join(dir, "inbox", "empty.txt")), yield* sha256Of(empty))
    })
  )

  it.scopedLive("broadcastFile sends to every trusted channel and counts the confirmations", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = path.join(dir, "share.bin")
      const sha256 = yield* writeRandomFile(file, 300_000)
      const hub = yield* startFileNode({ fileInbox: path.join(dir, "hub") })
      const peers = yield* Effect.all(
        [1, 2, 3].map((i) =>
          startFileNode({ fileInbox: path.join(dir, `peer-${i}`) }, { store: FileStore.layerMemory })
        )
      )
      for (const p of peers) yield* p.network.dial("127.0.0.1", hub.network.port).pipe(Effect.orDie)
      for (const p of peers) yield* (yield* hub.network.awaitChannel(p.network.id)).awaitTrusted.pipe(Effect.orDie)
      const result = yield* hub.files.broadcastFile(file)
      assert.strictEqual(result.accepted, 3)
      assert.deepStrictEqual(result.refused, [])
      for (const s of result.sent) assert.strictEqual(s.sha256, sha256)
      for (const p of peers) assert.deepStrictEqual(yield* p.files.store.files, [{ name: "share.bin", size: 300_000 }])
    })
  )
})

describe("file messages and names", () => {
  it("decoding never throws and round-trips what was encoded", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const r = decodeFileMessage(bytes)
        return Either.isLeft(r) ? r.left._tag === "InvalidFileMessage" : true
      })
    )
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), fc.uint8Array({ maxLength: 64 }), (json, tail) => {
        const header = Buffer.from(json, "utf8")
        const data = Buffer.concat([Buffer.from([header.length >> 8, header.length & 255]), header, tail])
        return Either.isLeft(decodeFileMessage(data)) || Either.isRight(decodeFileMessage(data))
      })
    )
    const chunk = new FileChunk({
      transfer: TransferId.make("c".repeat(32)),
      offset: 42,
      bytes: new Uint8Array([9, 8])
    })
    const back = decodeFileMessage(encodeFileMessage(chunk))
    assert.isTrue(Either.isRight(back))
    assert.deepStrictEqual(
      Either.map(back, (m) => (m._tag === "FileChunk" ? [m.offset, [...m.bytes]] : [])),
      Either.right([42, [9, 8]])
    )
    const start = FileStart.make({ transfer: TransferId.make("d".repeat(32)), name: "a b.txt", size: 3 })
    assert.deepStrictEqual(decodeFileMessage(encodeFileMessage(start)), Either.right(start))
    const extra = Buffer.concat([encodeFileMessage(start), Buffer.from([1])])
    assert.isTrue(Either.isLeft(decodeFileMessage(extra)))
  })

  it("file names stay one plain segment inside the inbox", () => {
    for (const ok of ["report.pdf", "Übersicht 2024.txt", "a..b", "photo (1).jpg", "x"]) {
      assert.isUndefined(fileNameProblem(ok), ok)
    }
    const bad = [
      "",
      ".",
      "..",
      "../x",
      "a/b",
      "a\\b",
      "/etc/passwd",
      "C:\\x",
      "C:x",
      ".hidden",
      ".partial",
      "name.",
      " name",
      "name ",
      "evil\u202Etxt.exe",
      "nul\u0000byte",
      "line\nbreak",
      "CON",
      "aux.txt",
      "a?b",
      "x".repeat(201)
    ]
    for (const name of bad) assert.isString(fileNameProblem(name), JSON.stringify(name))
  })
})
