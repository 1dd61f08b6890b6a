/**
 * A Link (actors/Link.ts) to an unmodified P2PNet (.NET) peer, for the compatibility profile (layers/Compat.ts): no
 * preamble and no Hello on the wire (both Hellos are synthesized, the peer's NodeId derived from where it is), legacy
 * `<Tag>json</Tag>` frames in both directions. Its receiver splits the stream (schema/legacy LegacyStreamParser),
 * decodes and converts each frame to a native packet and appends it to the inbox, pausing the socket when the inbox is
 * full, as Link.attach does; the first failure ends the link with a typed reason. Its sender re-encodes the native
 * frames the channel writes as legacy frames and writes them one per socket write, at least `sendSpacingMillis` apart
 * (spec 1.4: the original's reader loses packets that arrive in one read), from a fiber of its own, so a slow legacy
 * peer only ever holds up its own channel.
 */
import { Clock, Deferred, Effect, Either, Exit, Option, Queue } from "effect"
import * as crypto from "node:crypto"
import type { CloseReason, ConnectionLost as ConnectionLostT } from "../schema/errors.js"
import {
  ConnectionLost,
  FrameNotJson,
  FrameTooLarge,
  FrameTruncated,
  InvalidPacket,
  ProtocolMismatch,
  UnknownPacketKind
} from "../schema/errors.js"
import { Hello } from "../schema/handshake.js"
import type { NodeId, PeerAddress, Port } from "../schema/ids.js"
import type { LegacyConversionError, LegacyDecodeError, LegacyTagError } from "../schema/legacy/errors.js"
import type { LegacyFrame } from "../schema/legacy/stream.js"
import { LegacyStreamParser } from "../schema/legacy/stream.js"
import { decodeLegacyPacket, encodeLegacyFrame, fromNativePacket, toNativePacket } from "../schema/legacy/packets.js"
import { DataTransmission, NetworkTask, packetKinds } from "../schema/packets.js"
import type { Packet, TaskId } from "../schema/packets.js"
import {
  decodeLegacyTask,
  fromNativeTaskRequest,
  legacyTaskBytes,
  toNativeTaskRequest
} from "../schema/legacy/tasks.js"
import { decodeTaskPayload, encodeTaskPayload } from "../schema/tasks.js"
import type { NetworkSettings } from "../schema/settings.js"
import { decodeBody, FrameReader, PROTOCOL_VERSION } from "../schema/wire.js"
import type { ByteStream } from "./Connection.js"
import type { ChannelCounters, InboxItem, Link } from "./Link.js"
import { floodGate, inboxGate, LinkEnd } from "./Link.js"

/**
 * The NodeId standing for a legacy peer, which has no key: the first 20 bytes of SHA-256 of
 * "p2pnet-legacy:<address>:<port>", hex. For a dialled peer the port is the one dialled (its listening port), so every
 * dial of one endpoint gives the same NodeId; for an inbound connection it is the connection's source port (the
 * original never tells its listening port on TCP).
 */
export const legacyNodeId = (address: string, port: number): NodeId =>
  crypto.createHash("sha256").update(`p2pnet-legacy:${address}:${port}`).digest("hex").slice(0, 40) as NodeId

/** The original's default-trust ping (spec 4.1): a PureMessage "Ping from <ip>". Counted, never delivered. */
export const isLegacyPing = (message: string | null) => message !== null && message.startsWith("Ping from")

export interface LegacyLinkOptions {
  readonly settings: NetworkSettings
  readonly localId: NodeId
  readonly remoteId: NodeId
  /** Our legacy listening port, for our synthesized Hello. */
  readonly listenPort: number
  /** The peer's listening port when known (dialled), else 0. */
  readonly remoteListenPort: number
  /** SourceOriginIdentifier written on what we send. */
  readonly identifier: string
  readonly sendSpacingMillis: number
  readonly sendQueueCapacity: number
  readonly maxBufferBytes: number
  readonly maxJunkBytes: number
  readonly pingsToTrust: number
  readonly counters: ChannelCounters
  /** Called (synchronously) with the peers of every PeerGroup received, before it is queued. */
  readonly onPeerGroup?: (peers: ReadonlyArray<PeerAddress>) => void
}

export interface LegacyLink extends Link {
  /** Queues one encoded legacy frame for the paced sender; succeeds once it is written. */
  readonly sendLegacy: (frame: Uint8Array) => Effect.Effect<void, ConnectionLostT>
  /** "Ping from" messages received so far. */
  readonly pingsReceived: () => number
  /** Succeeds once `pingsToTrust` pings have been received. */
  readonly awaitPings: Effect.Effect<void>
  /** Succeeds with the reason once the link has ended (the receiver stopped). */
  readonly ended: Effect.Effect<CloseReason>
}

type LegacyError = LegacyDecodeError | LegacyTagError | LegacyConversionError

/** The close reason for a legacy decoding failure. */
const reasonOf = (e: LegacyError): CloseReason => {
  switch (e._tag) {
    case "LegacyDecodeError":
      return e.reason === "NotJson"
        ? new FrameNotJson({ detail: `${e.kind}: ${e.detail}` })
        : new InvalidPacket({ kind: e.kind, detail: e.detail })
    case "LegacyTagError":
      return new InvalidPacket({ kind: "DataTransmit", detail: e.message })
    case "LegacyConversionError":
      return new InvalidPacket({ kind: e.kind, detail: e.detail })
  }
}

const KNOWN_TAGS = new Set(["Identity", "Disconnect", "PeerGroup", "DataTransmit", "Message"])
const TAG = /<\/?([A-Za-z][A-Za-z0-9_]{0,63})>/g

/**
 * Finds a tag other than the five frame tags in the raw stream. The original escapes "<" and ">" in every JSON string
 * (spec 1.1), so nothing else that looks like a tag can come from it: such a tag is a peer speaking another protocol.
 * Keeps the end of a chunk after its last "<" to see tags cut by a chunk boundary.
 */
const unknownTagScanner = () => {
  let carry = ""
  return (chunk: Uint8Array): string | undefined => {
    const text = carry + Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("latin1")
    const last = text.lastIndexOf("<")
    carry = last >= 0 && text.indexOf(">", last) < 0 ? text.slice(last, last + 66) : ""
    TAG.lastIndex = 0
    for (let m = TAG.exec(text); m !== null; m = TAG.exec(text)) {
      if (!KNOWN_TAGS.has(m[1]!)) return m[0]
    }
    return undefined
  }
}

/** Bytes a frame took on the wire: both tags and its payload. */
const frameBytes = (f: LegacyFrame) => 2 * f.kind.length + 5 + Buffer.byteLength(f.json, "utf8")

const hello = (settings: NetworkSettings, nodeId: NodeId, listenPort: number) =>
  Hello.make({
    version: PROTOCOL_VERSION,
    network: settings.network,
    nodeId,
    publicKey: "",
    nonce: "",
    listenPort: listenPort as Port
  })

interface Outgoing {
  readonly bytes: Uint8Array
  readonly done: Deferred.Deferred<void, ConnectionLostT>
}

/**
 * Wraps a connected stream as a legacy link for the life of the scope: the sender fiber runs in it, and closing it
 * (or destroying the link's stream) stops the sender and fails what it had not written.
 */
export const makeLegacyLink = (raw: ByteStream, opts: LegacyLinkOptions) =>
  Effect.gen(function* () {
    const { settings, counters } = opts
    const inbox = yield* Queue.unbounded<InboxItem>()
    const outgoing = yield* Queue.bounded<Outgoing>(opts.sendQueueCapacity)
    const closed = yield* Deferred.make<void>()
    const ended = yield* Deferred.make<CloseReason>()
    const pingsDone = yield* Deferred.make<void>()
    const clock = yield* Effect.clock
    const lost = () => new ConnectionLost({ detail: "legacy connection closed" })

    const stream: ByteStream = {
      ...raw,
      destroy: Effect.zipRight(Deferred.succeed(closed, undefined), raw.destroy)
    }

    // legacy tasks have no id: each gets one here, so the task handler can run it like a native task
    let tasks = 0
    const taskIn = (dt: DataTransmission) => {
      const request = legacyTaskRequest(dt)
      if (request === undefined) return dt
      const task = NetworkTask.make({
        id: `legacy-${++tasks}` as TaskId,
        ...request,
        origin: dt.origin,
        sentAt: dt.sentAt
      })
      return Either.match(encodeTaskPayload(task), {
        onLeft: () => dt,
        onRight: (data) => DataTransmission.make({ format: "Task", data, origin: dt.origin, sentAt: dt.sentAt })
      })
    }

    // ---- receiving ----------------------------------------------------------------------------------------------
    const parser = new LegacyStreamParser({ maxBufferBytes: opts.maxBufferBytes })
    const scan = unknownTagScanner()
    let done = false
    const gate = inboxGate(settings, stream)
    let pings = 0
    let pushed = 0
    let framed = 0
    const flooded = floodGate(settings.maxFramesPerSecond, clock)

    const end = (reason: CloseReason) => {
      if (done) return
      done = true
      stream.receive(undefined)
      inbox.unsafeOffer(new LinkEnd(reason))
      Deferred.unsafeDone(ended, Exit.succeed(reason))
    }

    const onFrame = (frame: LegacyFrame) => {
      counters.framesIn++
      const flood = flooded()
      if (flood !== undefined) return end(flood)
      const legacy = decodeLegacyPacket(frame.kind, frame.json)
      if (Either.isLeft(legacy)) return end(reasonOf(legacy.left))
      const value = legacy.right
      if (value._tag === "PureMessagePacket" && isLegacyPing(value.Message)) {
        if (++pings === opts.pingsToTrust) Deferred.unsafeDone(pingsDone, Exit.void)
        return
      }
      const packet = toNativePacket(value, { origin: opts.remoteId })
      if (Either.isLeft(packet)) return end(reasonOf(packet.left))
      if (packet.right._tag === "PeerGroup") opts.onPeerGroup?.(packet.right.peers)
      const item = packet.right._tag === "DataTransmission" ? taskIn(packet.right) : packet.right
      inbox.unsafeOffer(item)
      gate.added(item)
    }

    stream.receive({
      onData: (chunk) => {
        if (done) return
        counters.bytesIn += chunk.length
        counters.lastIncomingAt = clock.unsafeCurrentTimeMillis()
        const unknown = scan(chunk)
        if (unknown !== undefined) return end(new UnknownPacketKind({ kind: unknown }))
        const frames = parser.push(chunk)
        if (Either.isLeft(frames)) return end(new FrameTooLarge({ size: frames.left.size, max: frames.left.max }))
        pushed += chunk.length
        for (const f of frames.right) {
          framed += frameBytes(f)
          onFrame(f)
          if (done) return
        }
        // junk before a tag is tolerated (spec 1.4), but only so much of it
        const junk = pushed - framed - parser.buffered
        if (junk > opts.maxJunkBytes) {
          return end(new ProtocolMismatch({ reason: `${junk} bytes outside any legacy frame` }))
        }
        gate.check()
      },
      onEnd: (reason) => {
        const truncated = parser.end()
        end(
          Either.isLeft(truncated)
            ? new FrameTruncated({
                expected: truncated.left.bytes + truncated.left.kind.length + 3,
                received: truncated.left.bytes
              })
            : reason
        )
      }
    })

    // ---- sending ------------------------------------------------------------------------------------------------
    /** One write per frame, each at least `sendSpacingMillis` after the previous one completed. */
    const sender = Effect.gen(function* () {
      let last = Number.NEGATIVE_INFINITY
      while (true) {
        const item = yield* Queue.take(outgoing)
        const wait = last + opts.sendSpacingMillis - (yield* Clock.currentTimeMillis)
        if (wait > 0) yield* Effect.sleep(wait)
        const exit = yield* Effect.exit(stream.write([item.bytes]))
        last = yield* Clock.currentTimeMillis
        yield* Deferred.done(item.done, exit)
      }
    })
    yield* Effect.forkScoped(Effect.raceFirst(sender, Deferred.await(closed)))
    // whatever was not written when the link goes fails, so no sender waits forever
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* Deferred.succeed(closed, undefined)
        for (const item of yield* Queue.takeAll(outgoing)) yield* Deferred.fail(item.done, lost())
        yield* raw.destroy
      })
    )

    const sendAll = (frames: ReadonlyArray<Uint8Array>): Effect.Effect<void, ConnectionLostT> =>
      Effect.gen(function* () {
        let last: Deferred.Deferred<void, ConnectionLostT> | undefined
        for (const bytes of frames) {
          const item: Outgoing = { bytes, done: yield* Deferred.make<void, ConnectionLostT>() }
          yield* Queue.offer(outgoing, item)
          last = item.done
        }
        if (last !== undefined) yield* Deferred.await(last)
      }).pipe(Effect.raceFirst(Effect.zipRight(Deferred.await(closed), Effect.fail(lost()))))

    /** The channel writes native frames (schema/wire.ts); each packet among them becomes one legacy frame. */
    const write = (chunks: ReadonlyArray<Uint8Array>): Effect.Effect<void, ConnectionLostT> =>
      Effect.suspend(() => {
        const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)
        const packets: Array<Packet> = []
        const reader = new FrameReader(Number.MAX_SAFE_INTEGER)
        reader.push(bytes, (body) => {
          const value = decodeBody(body)
          // handshake frames (Hello, Reject, proofs) have no legacy form: the original has nothing to read them with
          if (Either.isRight(value) && isPacket(value.right)) packets.push(value.right)
        })
        const frames: Array<Uint8Array> = []
        for (const p of packets) {
          const legacy = p._tag === "DataTransmission" ? taskOut(p) : p
          if (legacy !== undefined)
            frames.push(encodeLegacyFrame(fromNativePacket(legacy, { identifier: opts.identifier })))
        }
        return sendAll(frames)
      })

    const link: LegacyLink = {
      stream,
      inbox,
      localHello: hello(settings, opts.localId, opts.listenPort),
      remoteHello: hello(settings, opts.remoteId, opts.remoteListenPort),
      drained: gate.drained,
      end,
      write,
      admit: Effect.void,
      sendLegacy: (frame) => sendAll([frame]),
      pingsReceived: () => pings,
      awaitPings: Deferred.await(pingsDone),
      ended: Deferred.await(ended)
    }
    return link
  })

/**
 * A legacy NetworkTask (`{"TaskType":n,"TaskData":{...}}` in a Task DataTransmission) as a native task request, or
 * undefined when the data is not one or its TaskType is unknown (then it goes on as it is, and the task handler
 * rejects and counts it: never a crash, unlike the original's B4).
 */
const legacyTaskRequest = (dt: DataTransmission) => {
  if (dt.format !== "Task") return undefined
  const text = Buffer.from(dt.data.buffer, dt.data.byteOffset, dt.data.byteLength).toString("utf8")
  if (!/"TaskType"\s*:/.test(text)) return undefined
  const legacy = decodeLegacyTask(text)
  if (Either.isLeft(legacy)) return undefined
  return Option.getOrUndefined(toNativeTaskRequest(legacy.right))
}

/**
 * What a Task DataTransmission becomes for a legacy peer: a native NetworkTask becomes the original's NetworkTask JSON
 * (its id is lost: the original has none); a TaskReply has no legacy form and is not sent; other data goes as it is.
 */
const taskOut = (dt: DataTransmission): DataTransmission | undefined => {
  if (dt.format !== "Task") return dt
  const payload = decodeTaskPayload(dt.data)
  if (Either.isLeft(payload)) return dt
  if (payload.right._tag === "TaskReply") return undefined
  const legacy = fromNativeTaskRequest(payload.right)
  return Option.match(legacy, {
    onNone: () => dt,
    onSome: (task) =>
      DataTransmission.make({ format: "Task", data: legacyTaskBytes(task), origin: dt.origin, sentAt: dt.sentAt })
  })
}

const PACKET_TAGS: ReadonlySet<string> = new Set(packetKinds)
const isPacket = (v: { readonly _tag: string }): v is Packet => PACKET_TAGS.has(v._tag)
