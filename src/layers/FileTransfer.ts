/**
 * FileTransfer: sends files to peers as streamed transfers and receives them into the FileStore (unlike the original,
 * which dropped every inbound file, B23). A transfer is FileStart, FileChunks in order, FileEnd with the SHA-256,
 * inside DataTransmission packets of format File (schema/files.ts); the receiver answers FileAck or FileReject.
 * Memory stays bounded on both sides: the sender reads the file a block (about 1 MiB) ahead and waits for the socket
 * every 1 MiB sent; the receiver hands each chunk to the FileStore as it comes, so a slow disk back-pressures the
 * channel. The receiver keeps a transfer in a partial file, removed when the transfer fails or the channel it comes
 * on closes (not while an outbound channel is reconnecting), and named only once its hash is verified.
 */
import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import { Cause, Context, DateTime, Deferred, Effect, Either, Exit, Fiber, Layer, Option, PubSub, Stream } from "effect"
import type { Scope } from "effect"
import * as crypto from "node:crypto"
import * as path from "node:path"
import type { PeerChannel } from "../actors/PeerChannel.js"
import { ChannelClosed } from "../schema/errors.js"
import type { CloseReason } from "../schema/errors.js"
import {
  checkFileName,
  ChunkBeyondSize,
  ChunkOutOfOrder,
  decodeFileMessage,
  encodeFileMessage,
  FileAck,
  FileCancel,
  FileChunk,
  FileEnd,
  FileReadFailed,
  FileReceived,
  FileReject,
  FileSent,
  FileStart,
  FileTooLarge,
  HashMismatch,
  layoutChunk,
  ReceiptTimeout,
  TooManyTransfers,
  TransferCancelled,
  TransferFailed,
  TransferId,
  TransferIncomplete,
  TransferInProgress,
  TransferProgress,
  TransferRejected,
  UnknownTransfer
} from "../schema/files.js"
import type { FileEvent, IncomingFileError, SendFileError, TransferDirection } from "../schema/files.js"
import type { NodeId } from "../schema/ids.js"
import { DataTransmission } from "../schema/packets.js"
import type { Received } from "./Distribution.js"
import { FileStore } from "./FileStore.js"
import type { PartialFile } from "./FileStore.js"
import { NodeIdentity } from "./NodeIdentity.js"
import { PeerRegistry } from "./PeerRegistry.js"
import { NetworkConfig } from "./Settings.js"

export interface SendFileOptions {
  /** The name the receiver stores the file under (default: the file's own name). */
  readonly name?: string
  /** Sends again under the id of an earlier attempt: the receiver replaces what it kept of that attempt. */
  readonly transfer?: TransferId
}

/** How a broadcast of a file went: peers that confirmed it, and the ones that did not (with why). */
export interface BroadcastFileResult {
  readonly accepted: number
  readonly sent: ReadonlyArray<FileSent>
  readonly refused: ReadonlyArray<{ readonly peer: NodeId; readonly error: SendFileError }>
}

/** A file being sent: its progress (ending with the last byte sent, or the failure) and its outcome. */
export interface OutgoingTransfer {
  readonly transfer: TransferId
  readonly progress: Stream.Stream<TransferProgress>
  readonly result: Effect.Effect<FileSent, SendFileError>
}

export class FileTransfer extends Context.Tag("effect-p2pnet/FileTransfer")<
  FileTransfer,
  {
    /**
     * Streams a file to a trusted peer and waits for its receipt: the peer stored it whole with the same SHA-256.
     *
     * @example
     * const sent = yield* files.sendFile(peerId, "./report.pdf")
     */
    readonly sendFile: (peer: NodeId, path: string, options?: SendFileOptions) => Effect.Effect<FileSent, SendFileError>
    /**
     * As sendFile, started in the background for the life of the scope, with its own progress Stream.
     *
     * @example
     * const upload = yield* files.startFile(peerId, "./big.iso")
     * yield* upload.progress.pipe(Stream.runForEach((p) => Console.log(`${p.bytes}/${p.total}`)))
     * const sent = yield* upload.result
     */
    readonly startFile: (
      peer: NodeId,
      path: string,
      options?: SendFileOptions
    ) => Effect.Effect<OutgoingTransfer, never, Scope.Scope>
    /** Sends a file to every trusted channel at once (one transfer id for all). */
    readonly broadcastFile: (path: string, options?: { readonly name?: string }) => Effect.Effect<BroadcastFileResult>
    /** Progress, received files and failures, both directions, from the moment the Stream is run. */
    readonly events: Stream.Stream<FileEvent>
    /** As `events`, subscribed now (nothing published after this returns is missed), for the life of the scope. */
    readonly subscribe: Effect.Effect<Stream.Stream<FileEvent>, never, Scope.Scope>
    /** Bytes done of every transfer, sending and receiving. */
    readonly progress: Stream.Stream<TransferProgress>
    /** Files received, verified and stored. */
    readonly received: Stream.Stream<FileReceived>
    /** As `received`, subscribed now, for the life of the scope. */
    readonly subscribeReceived: Effect.Effect<Stream.Stream<FileReceived>, never, Scope.Scope>
    /** Where received files are stored. */
    readonly store: FileStore["Type"]
    /** Handles a received DataTransmission of format File (called by the default DataTransmission handler). */
    readonly incoming: (received: Received<"DataTransmission">) => Effect.Effect<void, IncomingFileError>
  }
>() {
  /**
   * Needs PeerRegistry, NodeIdentity, NetworkConfig and a FileStore (networkLayer provides them: the store is
   * `FileStore.layer`, the directory NetworkSettings.fileInbox, unless `networkLayer({ fileStore })` gives another).
   */
  static readonly layer = Layer.scoped(
    this,
    Effect.suspend(() => make)
  ).pipe(Layer.provide(NodeFileSystem.layer))
}

/** File bytes a sender has queued on a channel but not yet handed to its socket, at most (about). */
const SEND_WINDOW_BYTES = 1024 * 1024

/** Recently finished or failed transfers: their late chunks are ignored quietly rather than refused one by one. */
const FORGOTTEN_CAPACITY = 1024

/** What is left of a transfer that ended: why, and the channel its sender was told on. */
interface Forgotten {
  readonly error: string
  readonly reason: string
  told: PeerChannel | undefined
}

interface Incoming {
  readonly key: string
  readonly transfer: TransferId
  readonly peer: NodeId
  readonly name: string
  readonly size: number
  readonly partial: PartialFile
  readonly hash: crypto.Hash
  received: number
  /** The channel the last message came on: the transfer is dropped when it closes. */
  channel: PeerChannel
}

const keyOf = (peer: NodeId, transfer: TransferId) => `${peer}:${transfer}`

const newTransferId = Effect.sync(() => TransferId.make(crypto.randomBytes(16).toString("hex")))

const isProgress = (e: FileEvent): e is TransferProgress => e._tag === "TransferProgress"
const isReceived = (e: FileEvent): e is FileReceived => e._tag === "FileReceived"

const make = Effect.gen(function* () {
  const settings = yield* NetworkConfig
  const registry = yield* PeerRegistry
  const keys = yield* NodeIdentity
  const fs = yield* FileSystem.FileSystem
  const store = yield* FileStore
  const events = yield* Effect.acquireRelease(PubSub.unbounded<FileEvent>(), PubSub.shutdown)
  const publish = (e: FileEvent) => Effect.asVoid(PubSub.publish(events, e))
  // incoming transfers change on the dispatcher fiber and on channel close: one at a time
  const lock = yield* Effect.makeSemaphore(1)
  const layerScope = yield* Effect.scope
  const incoming = new Map<string, Incoming>()
  const forgotten = new Map<string, Forgotten>()
  const outgoing = new Map<string, Deferred.Deferred<FileAck, TransferRejected>>()

  const forget = (key: string, error: { readonly _tag: string; readonly message: string }, told?: PeerChannel) => {
    forgotten.delete(key)
    forgotten.set(key, { error: error._tag, reason: error.message.slice(0, 1024), told })
    if (forgotten.size > FORGOTTEN_CAPACITY) forgotten.delete(forgotten.keys().next().value!)
  }

  const packetOf = (data: Uint8Array) =>
    Effect.map(DateTime.now, (sentAt) => DataTransmission.make({ format: "File", data, origin: keys.id, sentAt }))

  /** A best-effort answer: never waits for outbox room (the dispatcher must not stall on a slow sender). */
  const reply = (channel: PeerChannel, message: FileAck | FileReject | FileCancel) =>
    packetOf(encodeFileMessage(message)).pipe(
      Effect.flatMap((packet) => channel.offer(packet, "fail")),
      Effect.catchAll((e) => Effect.logDebug(`could not send ${message._tag} to ${channel.label}: ${e.message}`))
    )

  // published after every chunk on both sides: built unchecked, since every field comes from a value already
  // validated (the transfer's id, peer, name and size, and byte counts that never pass the size)
  const progress =
    (direction: TransferDirection, t: { transfer: TransferId; peer: NodeId; name: string }) =>
    (bytes: number, total: number) =>
      publish(new TransferProgress({ transfer: t.transfer, peer: t.peer, direction, name: t.name, bytes, total }, true))

  // -------------------------------------------------------------------------------------------------------------------
  // Receiving

  /** Ends an incoming transfer: partial removed, later chunks ignored, TransferFailed published. */
  const drop = (t: Incoming, error: TransferFailed["error"], told: PeerChannel | undefined) =>
    Effect.gen(function* () {
      incoming.delete(t.key)
      forget(t.key, error, told)
      yield* t.partial.discard
      yield* publish(
        TransferFailed.make({ transfer: t.transfer, peer: t.peer, direction: "receive", name: t.name, error })
      )
    })

  /** Refuses a transfer: drops what there is of it, tells the sender, and fails with the error (the dispatcher logs). */
  const refuse = (channel: PeerChannel, transfer: TransferId, name: string, error: IncomingFileError) =>
    Effect.gen(function* () {
      const key = keyOf(channel.remoteId, transfer)
      const t = incoming.get(key)
      if (t !== undefined) yield* drop(t, error, channel)
      else {
        forget(key, error, channel)
        yield* publish(
          TransferFailed.make({
            transfer,
            peer: channel.remoteId,
            direction: "receive",
            name: name.slice(0, 300),
            error
          })
        )
      }
      yield* reply(channel, FileReject.make({ transfer, error: error._tag, reason: error.message.slice(0, 1024) }))
      return yield* Effect.fail(error)
    })

  /**
   * The open transfer a chunk or end belongs to; undefined (ignore it) for one that recently ended. The sender of a
   * transfer that ended without it knowing (its channel closed, and it goes on over a new one) is told once.
   */
  const openTransfer = (channel: PeerChannel, transfer: TransferId) => {
    const key = keyOf(channel.remoteId, transfer)
    const t = incoming.get(key)
    if (t !== undefined) {
      t.channel = channel
      return Effect.succeed(t)
    }
    const ended = forgotten.get(key)
    if (ended === undefined) return refuse(channel, transfer, "", new UnknownTransfer({ transfer }))
    if (ended.told === channel) return Effect.succeed(undefined)
    ended.told = channel
    return Effect.as(reply(channel, FileReject.make({ transfer, error: ended.error, reason: ended.reason })), undefined)
  }

  const onStart = (channel: PeerChannel, m: FileStart) =>
    Effect.gen(function* () {
      const peer = channel.remoteId
      const key = keyOf(peer, m.transfer)
      const name = checkFileName(m.name)
      if (Either.isLeft(name)) return yield* refuse(channel, m.transfer, m.name, name.left)
      if (m.size > settings.maxFileBytes) {
        return yield* refuse(
          channel,
          m.transfer,
          m.name,
          new FileTooLarge({ size: m.size, max: settings.maxFileBytes })
        )
      }
      const previous = incoming.get(key)
      if (previous !== undefined) {
        // a retry of the same transfer replaces what the earlier attempt left
        incoming.delete(key)
        yield* previous.partial.discard
      } else {
        let open = 0
        for (const t of incoming.values()) if (t.peer === peer) open++
        if (open >= settings.fileTransfersPerPeer) {
          return yield* refuse(
            channel,
            m.transfer,
            m.name,
            new TooManyTransfers({ peer, max: settings.fileTransfersPerPeer })
          )
        }
      }
      forgotten.delete(key)
      const partial = yield* store
        .begin(`${peer}-${m.transfer}`)
        .pipe(Effect.catchAll((e) => refuse(channel, m.transfer, m.name, e)))
      const t: Incoming = {
        key,
        transfer: m.transfer,
        peer,
        name: name.right,
        size: m.size,
        partial,
        hash: crypto.createHash("sha256"),
        received: 0,
        channel
      }
      incoming.set(key, t)
      yield* watch(channel)
      yield* progress("receive", t)(0, t.size)
    })

  const onChunk = (channel: PeerChannel, m: FileChunk) =>
    Effect.gen(function* () {
      const t = yield* openTransfer(channel, m.transfer)
      if (t === undefined) return
      if (m.offset !== t.received) {
        return yield* refuse(
          channel,
          t.transfer,
          t.name,
          new ChunkOutOfOrder({ transfer: t.transfer, expected: t.received, offset: m.offset })
        )
      }
      const end = t.received + m.bytes.length
      if (end > t.size) {
        return yield* refuse(
          channel,
          t.transfer,
          t.name,
          new ChunkBeyondSize({ transfer: t.transfer, size: t.size, end })
        )
      }
      yield* t.partial.append(m.bytes).pipe(Effect.catchAll((e) => refuse(channel, t.transfer, t.name, e)))
      t.hash.update(m.bytes)
      t.received = end
      yield* progress("receive", t)(end, t.size)
    })

  const onEnd = (channel: PeerChannel, m: FileEnd) =>
    Effect.gen(function* () {
      const t = yield* openTransfer(channel, m.transfer)
      if (t === undefined) return
      if (t.received !== t.size) {
        return yield* refuse(
          channel,
          t.transfer,
          t.name,
          new TransferIncomplete({ transfer: t.transfer, size: t.size, received: t.received })
        )
      }
      const actual = t.hash.digest("hex")
      if (actual !== m.sha256) {
        return yield* refuse(
          channel,
          t.transfer,
          t.name,
          new HashMismatch({ transfer: t.transfer, expected: m.sha256, actual })
        )
      }
      const stored = yield* t.partial
        .commit(t.name)
        .pipe(Effect.catchAll((e) => refuse(channel, t.transfer, t.name, e)))
      incoming.delete(t.key)
      forget(t.key, { _tag: "AlreadyReceived", message: `transfer ${t.transfer} was received` }, channel)
      yield* Effect.logInfo(`received file ${t.name} (${t.size} bytes) as ${stored}`)
      yield* publish(
        FileReceived.make({
          transfer: t.transfer,
          peer: t.peer,
          name: t.name,
          path: stored,
          size: t.size,
          sha256: actual
        })
      )
      yield* reply(channel, FileAck.make({ transfer: t.transfer, sha256: actual }))
    })

  const onCancel = (channel: PeerChannel, m: FileCancel) =>
    Effect.suspend(() => {
      const t = incoming.get(keyOf(channel.remoteId, m.transfer))
      return t === undefined
        ? Effect.void
        : drop(t, new TransferCancelled({ transfer: t.transfer, reason: m.reason }), channel)
    })

  /** The sender's side of a receipt: completes the waiting sendFile. Unknown transfers are ignored. */
  const onReceipt = (channel: PeerChannel, m: FileAck | FileReject) =>
    Effect.suspend(() => {
      const outcome = outgoing.get(keyOf(channel.remoteId, m.transfer))
      if (outcome === undefined) return Effect.void
      return m._tag === "FileAck"
        ? Deferred.succeed(outcome, m)
        : Deferred.fail(
            outcome,
            new TransferRejected({ transfer: m.transfer, peer: channel.remoteId, error: m.error, reason: m.reason })
          )
    })

  const onIncoming = ({ channel, packet }: Received<"DataTransmission">): Effect.Effect<void, IncomingFileError> => {
    const decoded = decodeFileMessage(packet.data)
    if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
    const m = decoded.right
    switch (m._tag) {
      case "FileAck":
      case "FileReject":
        return Effect.asVoid(onReceipt(channel, m))
      case "FileStart":
        return lock.withPermits(1)(onStart(channel, m))
      case "FileChunk":
        return lock.withPermits(1)(onChunk(channel, m))
      case "FileEnd":
        return lock.withPermits(1)(onEnd(channel, m))
      case "FileCancel":
        return lock.withPermits(1)(onCancel(channel, m))
    }
  }

  /**
   * Watches a channel that has a transfer arriving, until it closes for good (one fiber per such channel, in the
   * layer's scope). Only those channels are watched: a node that receives no file pays nothing per connection.
   */
  const watched = new Set<PeerChannel>()
  const watch = (channel: PeerChannel) =>
    Effect.suspend(() => {
      if (watched.has(channel)) return Effect.void
      watched.add(channel)
      return channel.awaitClosed.pipe(
        Effect.flatMap((reason) => onChannelClosed(channel, reason)),
        Effect.ensuring(Effect.sync(() => watched.delete(channel))),
        Effect.forkIn(layerScope),
        Effect.asVoid
      )
    })

  /** A channel closed for good (not reconnecting): the transfers arriving on it will not continue. */
  const onChannelClosed = (channel: PeerChannel, reason: CloseReason | undefined) =>
    lock.withPermits(1)(
      Effect.forEach(
        [...incoming.values()].filter((t) => t.channel === channel),
        (t) => drop(t, new ChannelClosed({ peer: channel.label, reason: reason?.message ?? "closed" }), undefined),
        { discard: true }
      )
    )

  // stale partials of an earlier run; the inbox itself is created on first use
  yield* store.clearPartials.pipe(
    Effect.catchAll((e) => Effect.logWarning(`could not remove stale partial files: ${e.message}`))
  )
  yield* Effect.addFinalizer(() =>
    lock.withPermits(1)(
      Effect.forEach(incoming.values(), (t) => t.partial.discard, { discard: true }).pipe(
        Effect.zipRight(Effect.sync(() => incoming.clear()))
      )
    )
  )

  // -------------------------------------------------------------------------------------------------------------------
  // Sending

  const readFailed = (filePath: string) => (e: { readonly message: string }) =>
    new FileReadFailed({ path: filePath, detail: e.message })

  /** Sends one transfer whose id is known; any failure is published as TransferFailed. */
  const send = (peer: NodeId, filePath: string, name: string, transfer: TransferId) => {
    let started = false
    let channel: PeerChannel | undefined
    let outcome: Deferred.Deferred<FileAck, TransferRejected> | undefined
    return Effect.gen(function* () {
      yield* checkFileName(name)
      const ch = yield* registry.channel(peer)
      channel = ch
      const key = keyOf(peer, transfer)
      if (outgoing.has(key)) return yield* new TransferInProgress({ transfer })
      const receipt = yield* Deferred.make<FileAck, TransferRejected>()
      outcome = receipt
      outgoing.set(key, receipt)
      const report = progress("send", { transfer, peer, name })
      const window = Math.max(2, Math.ceil(SEND_WINDOW_BYTES / settings.fileChunkBytes))
      const failed = readFailed(filePath)

      const streaming = Effect.scoped(
        Effect.gen(function* () {
          const file = yield* fs.open(filePath, { flag: "r" }).pipe(Effect.mapError(failed))
          const info = yield* file.stat.pipe(Effect.mapError(failed))
          if (info.type !== "File") return yield* new FileReadFailed({ path: filePath, detail: "not a regular file" })
          const size = Number(info.size)
          started = true
          yield* ch.send(yield* packetOf(encodeFileMessage(FileStart.make({ transfer, name, size }))))
          yield* report(0, size)
          const hash = crypto.createHash("sha256")
          // the file is read in blocks of about SEND_WINDOW_BYTES (one system call each, not one per chunk), a block
          // ahead of the sending, and cut into chunk packets
          const chunkBytes = settings.fileChunkBytes
          const blockBytes = chunkBytes * Math.max(1, Math.floor(SEND_WINDOW_BYTES / chunkBytes))
          const blocks = Stream.unfoldEffect(0, (offset) =>
            offset >= size
              ? Effect.succeed(Option.none())
              : Effect.gen(function* () {
                  const block = Buffer.allocUnsafeSlow(Math.min(blockBytes, size - offset))
                  for (let filled = 0; filled < block.length;) {
                    const n = Number(yield* file.read(block.subarray(filled)).pipe(Effect.mapError(failed)))
                    if (n === 0) {
                      return yield* new FileReadFailed({ path: filePath, detail: "the file shrank while being sent" })
                    }
                    filled += n
                  }
                  hash.update(block)
                  const chunks: Array<{ readonly data: Uint8Array; readonly end: number }> = []
                  for (let at = 0; at < block.length; at += chunkBytes) {
                    const piece = block.subarray(at, at + chunkBytes)
                    const { bytes, data } = layoutChunk(transfer, offset + at, piece.length)
                    bytes.set(piece)
                    chunks.push({ data, end: offset + at + piece.length })
                  }
                  return Option.some([chunks, offset + block.length] as const)
                })
          )
          let sent = 0
          yield* blocks.pipe(
            Stream.buffer({ capacity: 1 }),
            Stream.runForEach((chunks) =>
              Effect.forEach(
                chunks,
                ({ data, end }) =>
                  Effect.gen(function* () {
                    const packet = yield* packetOf(data)
                    // every `window` chunks, wait until the socket took them: the outbox never holds more than that
                    yield* ++sent % window === 0 ? ch.sendAndAwait(packet) : ch.send(packet)
                    yield* report(end, size)
                  }),
                { discard: true }
              )
            )
          )
          const sha256 = hash.digest("hex")
          yield* ch.sendAndAwait(yield* packetOf(encodeFileMessage(FileEnd.make({ transfer, sha256 }))))
          return { sha256, size }
        })
      )
      // a refusal from the receiver stops the sending at once
      const refused = Deferred.await(receipt).pipe(Effect.zipRight(Effect.never))
      const { sha256, size } = yield* Effect.raceFirst(streaming, refused)
      const closed = ch.awaitClosed.pipe(
        Effect.flatMap((reason) => Effect.fail(new ChannelClosed({ peer: ch.label, reason: reason.message })))
      )
      yield* Deferred.await(receipt).pipe(
        Effect.raceFirst(closed),
        Effect.timeoutFail({
          duration: settings.fileReceiptTimeoutMillis,
          onTimeout: () => new ReceiptTimeout({ transfer, millis: settings.fileReceiptTimeoutMillis })
        })
      )
      return FileSent.make({ transfer, peer, name, size, sha256 })
    }).pipe(
      Effect.onExit((exit) =>
        Effect.gen(function* () {
          const key = keyOf(peer, transfer)
          if (outcome !== undefined && outgoing.get(key) === outcome) outgoing.delete(key)
          if (Exit.isSuccess(exit)) return
          const error = Cause.failureOption(exit.cause)
          // tell the receiver to drop what it has, unless it is the one that refused
          if (started && channel !== undefined && !(Option.isSome(error) && error.value._tag === "TransferRejected")) {
            const reason = Option.match(error, { onNone: () => "interrupted", onSome: (e) => e.message })
            yield* reply(channel, FileCancel.make({ transfer, reason: reason.slice(0, 1024) }))
          }
          if (Option.isSome(error)) {
            yield* publish(TransferFailed.make({ transfer, peer, direction: "send", name, error: error.value }))
          }
        })
      )
    )
  }

  const sendFile = Effect.fn("FileTransfer.sendFile")(function* (
    peer: NodeId,
    filePath: string,
    options: SendFileOptions = {}
  ) {
    const transfer = options.transfer ?? (yield* newTransferId)
    return yield* send(peer, filePath, options.name ?? path.basename(filePath), transfer)
  })

  const startFile = (peer: NodeId, filePath: string, options: SendFileOptions = {}) =>
    Effect.gen(function* () {
      const transfer = options.transfer ?? (yield* newTransferId)
      const subscription = yield* PubSub.subscribe(events)
      const fiber = yield* Effect.forkScoped(send(peer, filePath, options.name ?? path.basename(filePath), transfer))
      const ownEvents = Stream.fromQueue(subscription).pipe(
        Stream.filter((e) => e._tag !== "FileReceived" && e.transfer === transfer && e.direction === "send"),
        Stream.takeUntil((e) => e._tag === "TransferFailed" || (isProgress(e) && e.bytes === e.total))
      )
      return {
        transfer,
        progress: Stream.filter(ownEvents, isProgress),
        result: Fiber.join(fiber)
      } satisfies OutgoingTransfer
    })

  const broadcastFile = Effect.fn("FileTransfer.broadcastFile")(function* (
    filePath: string,
    options: { readonly name?: string } = {}
  ) {
    const transfer = yield* newTransferId
    const name = options.name ?? path.basename(filePath)
    const channels = yield* registry.trustedChannels
    const results = yield* Effect.forEach(
      channels,
      (channel) => Effect.either(send(channel.remoteId, filePath, name, transfer)),
      { concurrency: "unbounded" }
    )
    const sent: Array<FileSent> = []
    const refused: Array<BroadcastFileResult["refused"][number]> = []
    results.forEach((r, i) => {
      if (Either.isRight(r)) sent.push(r.right)
      else refused.push({ peer: channels[i]!.remoteId, error: r.left })
    })
    return { accepted: sent.length, sent, refused } satisfies BroadcastFileResult
  })

  return FileTransfer.of({
    sendFile,
    startFile,
    broadcastFile,
    events: Stream.fromPubSub(events),
    subscribe: Effect.map(PubSub.subscribe(events), Stream.fromQueue),
    progress: Stream.filter(Stream.fromPubSub(events), isProgress),
    received: Stream.filter(Stream.fromPubSub(events), isReceived),
    subscribeReceived: Effect.map(PubSub.subscribe(events), (q) => Stream.filter(Stream.fromQueue(q), isReceived)),
    store,
    incoming: onIncoming
  })
})
