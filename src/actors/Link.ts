/**
 * A Link is one live connection of a channel, after the preamble, the session upgrade and the Hello exchange.
 * Its receiver runs synchronously on socket events: it splits frames, decodes them with Schema and appends them to
 * an inbox Queue, pausing the socket when the inbox is full. The first failure (bad frame, flood, end of stream)
 * stops reading and is appended as a LinkEnd, after every frame decoded before it, so nothing accepted is lost.
 */
import { Clock, Effect, Either, Queue } from "effect"
import * as crypto from "node:crypto"
import type { CloseReason } from "../schema/errors.js"
import { ConnectionLost, PeerFlooding, ProtocolMismatch, RemoteRejected, SessionMismatch } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import { Hello, Reject } from "../schema/handshake.js"
import type { NetworkSettings } from "../schema/settings.js"
import type { FrameValue } from "../schema/wire.js"
import {
  decodeRange,
  encodeFrame,
  FrameReader,
  parsePreamble,
  preamble,
  PREAMBLE_LENGTH,
  PROTOCOL_VERSION
} from "../schema/wire.js"
import type { SessionName } from "../schema/wire.js"
import type { NodeKeys } from "../layers/NodeIdentity.js"
import type { ByteStream, EarlyFrame } from "./Connection.js"
import { readPrefix } from "./Connection.js"
import type { SecureSession } from "../layers/SecureSession.js"

/** Marks the end of a link in its inbox. */
export class LinkEnd {
  constructor(readonly reason: CloseReason) {}
}
/** Put in the inbox by the channel once its trust phase has decided: held packets can now be gated. */
export const TRUST_DECIDED = { _tag: "TrustDecided" } as const
export type InboxItem = FrameValue | LinkEnd | typeof TRUST_DECIDED

/** Mutable per-channel counters; read through PeerChannel.stats. */
export interface ChannelCounters {
  framesIn: number
  bytesIn: number
  framesOut: number
  bytesOut: number
  /** Socket writes (each carries a batch of frames). */
  writesOut: number
  droppedGated: number
  lastIncomingAt: number
}
export const makeCounters = (now: number): ChannelCounters => ({
  framesIn: 0,
  bytesIn: 0,
  framesOut: 0,
  bytesOut: 0,
  writesOut: 0,
  droppedGated: 0,
  lastIncomingAt: now
})

export interface Link {
  readonly stream: ByteStream
  readonly inbox: Queue.Queue<InboxItem>
  readonly localHello: Hello
  readonly remoteHello: Hello
  /** Call after taking `items` from the inbox: resumes reading once it has drained below half. */
  readonly drained: (items: Iterable<InboxItem>) => void
  /** Stops reading and appends a LinkEnd (first reason wins). */
  readonly end: (reason: CloseReason) => void
  readonly write: (frames: ReadonlyArray<Uint8Array>) => Effect.Effect<void, ConnectionLost>
  /** Responder only: sends our Hello, admitting the initiator (it waits for it). A no-op for the initiator. */
  readonly admit: Effect.Effect<void, ConnectionLost>
}

/** A Hello and its encoded frame. */
export interface HelloFrame extends EarlyFrame {
  readonly hello: Hello
}

/**
 * Makes this node's Hellos (a new nonce each). One per network: a secure session may keep a frame it made for a later
 * connection, which it then uses only with the maker that made it. It holds only this node's own values, so the Hello
 * is built without validation.
 */
export const helloMaker = (settings: NetworkSettings, keys: NodeKeys, listenPort: number) => (): HelloFrame => {
  const hello = Hello.make(
    {
      version: PROTOCOL_VERSION,
      network: settings.network,
      nodeId: keys.id,
      publicKey: Buffer.from(keys.publicKey).toString("base64"),
      nonce: crypto.randomBytes(32).toString("base64"),
      listenPort: listenPort as Hello["listenPort"]
    },
    true
  )
  return { hello, bytes: encodeFrame(hello) }
}

/** Reads the remote's 8-byte preamble; bytes after it stay held in the stream. */
const readPreamble = (stream: ByteStream) =>
  readPrefix(
    stream,
    () => PREAMBLE_LENGTH,
    (bytes) => parsePreamble(bytes)
  ).pipe(
    Effect.flatMap(
      Either.match({ onLeft: (reason) => Effect.fail(new ProtocolMismatch({ reason })), onRight: Effect.succeed })
    )
  )

/**
 * Reads the remote's preamble and checks its version and session; a mismatch is answered with a Reject, after this
 * node's own preamble when it has not been sent yet.
 */
const checkPreamble = (stream: ByteStream, session: SessionName, own: Uint8Array) => (preambleSent: boolean) =>
  Effect.gen(function* () {
    const remote = yield* readPreamble(stream)
    if (remote.version !== PROTOCOL_VERSION) {
      return yield* new ProtocolMismatch({
        reason: `unsupported protocol version ${remote.version}; this node speaks ${PROTOCOL_VERSION}`
      })
    }
    if (remote.session !== session) return yield* new SessionMismatch({ local: session, remote: remote.session })
  }).pipe(
    Effect.tapError((e) => {
      if (e._tag === "ConnectionLost") return Effect.void
      const reject = encodeFrame(Reject.make({ reason: e._tag === "ProtocolMismatch" ? e.reason : e.message }))
      return stream.write(preambleSent ? [reject] : [own, reject])
    })
  )

export interface EstablishOptions {
  readonly settings: NetworkSettings
  readonly keys: NodeKeys
  readonly secure: SecureSession["Type"]
  /** This node's Hello maker (`helloMaker`, one per network). */
  readonly hello: () => HelloFrame
  readonly counters: ChannelCounters
  /** Initiator: the node this address was dialled for, when known (an authenticating session refuses others). */
  readonly expectedPeer?: NodeId
}

/**
 * Runs the connection-opening sequence of docs/protocol.md on a fresh stream: the session upgrade (which exchanges
 * the preambles), the initiator's Hello. The responder's Hello is sent by `admit`, after the responder has decided to
 * accept (or a Reject instead). A wrong preamble, version or session is answered with a Reject frame before failing.
 */
export const establish = (stream: ByteStream, role: "initiator" | "responder", opts: EstablishOptions) =>
  Effect.gen(function* () {
    // an initiator's Hello leaves as soon as the session allows: a session that carries it makes it itself (while the
    // handshake waits on the network, or ahead of time for the next connection to an address); otherwise it is made
    // before the upgrade. The responder's is made after the upgrade (it is sent only on admission, and the remote's
    // first message should not wait for it). The inbox is made before the upgrade too: cheap, and the remote's first
    // message arrives later than this.
    const makeHello = opts.hello
    const carried = role === "initiator" && opts.secure.carriesEarly === true
    const eager = role === "initiator" && !carried ? makeHello() : undefined
    const inbox = yield* Queue.unbounded<InboxItem>()
    const clock = yield* Effect.clock
    const own = preamble(PROTOCOL_VERSION, opts.secure.name)
    const secured = yield* opts.secure.upgrade(stream, role, {
      preamble: own,
      remotePreamble: checkPreamble(stream, opts.secure.name, own),
      ...(carried ? { early: makeHello } : {}),
      ...(opts.expectedPeer === undefined ? {} : { expectedPeer: opts.expectedPeer })
    })
    // the frames `early` makes are HelloFrames (a prepared one too: this network's maker made it for an earlier dial)
    const sent = secured.earlySent as HelloFrame | undefined
    const { hello: localHello, bytes: helloFrame } = sent ?? eager ?? makeHello()
    const partial = attach(secured, inbox, opts.settings, opts.counters, clock)
    const sendHello = secured.write([helloFrame])
    // the initiator introduces itself first; the responder answers only once it has admitted the initiator
    if (role === "initiator" && sent === undefined) yield* sendHello
    const first = yield* Queue.take(inbox)
    partial.drained([first])
    if (first instanceof LinkEnd) return yield* Effect.fail(first.reason)
    if (first._tag === "Reject") return yield* new RemoteRejected({ reason: first.reason })
    if (first._tag === "TrustDecided") return yield* new ProtocolMismatch({ reason: "unreachable" })
    if (first._tag !== "Hello") {
      return yield* new ProtocolMismatch({ reason: `expected Hello as first frame, got ${first._tag}` })
    }
    if (first.version !== PROTOCOL_VERSION) {
      const reason = `Hello announces version ${first.version}; this node speaks ${PROTOCOL_VERSION}`
      yield* secured.write([encodeFrame(Reject.make({ reason }))]).pipe(Effect.ignore)
      return yield* new ProtocolMismatch({ reason })
    }
    // a secure session proved the peer's key: its Hello must name that node and key, not another
    const proved = secured.peer
    if (
      proved !== undefined &&
      (proved.nodeId !== first.nodeId || Buffer.from(proved.publicKey).toString("base64") !== first.publicKey)
    ) {
      const reason = `Hello names ${first.nodeId} but the secure session authenticated ${proved.nodeId}`
      yield* secured.write([encodeFrame(Reject.make({ reason }))]).pipe(Effect.ignore)
      return yield* new ProtocolMismatch({ reason })
    }
    return {
      ...partial,
      localHello,
      remoteHello: first,
      admit: role === "responder" ? sendHello : Effect.void
    } satisfies Link
  })

/**
 * Counts frames in one-second windows of `clock`: called once per received frame, it returns PeerFlooding once more
 * than `limit` arrived in the current window (a limit of 0 disables it).
 */
export const floodGate = (limit: number, clock: Clock.Clock) => {
  let windowStart = clock.unsafeCurrentTimeMillis()
  let windowFrames = 0
  return (): PeerFlooding | undefined => {
    if (limit <= 0) return undefined
    const now = clock.unsafeCurrentTimeMillis()
    if (now - windowStart >= 1000) {
      windowStart = now
      windowFrames = 0
    }
    return ++windowFrames > limit ? new PeerFlooding({ frames: windowFrames, limit }) : undefined
  }
}

/** What an inbox item counts against inboxMaxBytes: its attachment plus a fixed allowance for the rest. */
const inboxBytes = (item: FrameValue): number => (item._tag === "DataTransmission" ? item.data.length + 64 : 64)

/**
 * What a link's inbox holds, by count and by bytes: `added` for each frame put in, `check` after a socket read stops
 * reading once either limit is reached, `drained` after the channel took items resumes below half of both.
 */
export const inboxGate = (settings: NetworkSettings, stream: ByteStream) => {
  let paused = false
  let queued = 0
  let queuedBytes = 0
  return {
    added: (item: FrameValue) => {
      queued++
      queuedBytes += inboxBytes(item)
    },
    check: () => {
      if ((queued >= settings.inboxCapacity || queuedBytes >= settings.inboxMaxBytes) && !paused) {
        paused = true
        stream.pause()
      }
    },
    drained: (items: Iterable<InboxItem>) => {
      for (const item of items) {
        if (item instanceof LinkEnd || item._tag === "TrustDecided") continue
        queued--
        queuedBytes -= inboxBytes(item)
      }
      if (paused && queued < settings.inboxCapacity / 2 && queuedBytes < settings.inboxMaxBytes / 2) {
        paused = false
        stream.resume()
      }
    }
  }
}

const attach = (
  stream: ByteStream,
  inbox: Queue.Queue<InboxItem>,
  settings: NetworkSettings,
  counters: ChannelCounters,
  clock: Clock.Clock
) => {
  const reader = new FrameReader(settings.maxFrameBytes)
  let done = false
  const gate = inboxGate(settings, stream)
  const flooded = floodGate(settings.maxFramesPerSecond, clock)
  // decoded frames are handed to the inbox once per event-loop turn, after every socket read of that turn, so the
  // channel's fibers wake once per turn instead of once per 64 KiB read; the first frame (the Hello the opening waits
  // for) is handed over at once
  let pending: Array<InboxItem> = []
  let scheduled = false
  let first = true
  const flush = () => {
    scheduled = false
    const items = pending
    pending = []
    for (const item of items) inbox.unsafeOffer(item)
  }
  const end = (reason: CloseReason) => {
    if (done) return
    done = true
    stream.receive(undefined)
    pending.push(new LinkEnd(reason))
    flush()
  }
  const onBody = (buffer: Buffer, from: number, to: number) => {
    if (done) return
    counters.framesIn++
    const flood = flooded()
    if (flood !== undefined) return end(flood)
    const decoded = decodeRange(buffer, from, to)
    if (Either.isLeft(decoded)) return end(decoded.left)
    pending.push(decoded.right)
    gate.added(decoded.right)
    if (first) {
      first = false
      flush()
    } else if (!scheduled) {
      scheduled = true
      setImmediate(flush)
    }
  }
  stream.receive({
    onData: (chunk) => {
      if (done) return
      counters.bytesIn += chunk.length
      counters.lastIncomingAt = clock.unsafeCurrentTimeMillis()
      const error = reader.pushRanges(chunk, onBody)
      if (error !== undefined) return end(error)
      gate.check()
    },
    onEnd: (reason) => end(reader.end() ?? reason)
  })
  return {
    stream,
    inbox,
    end,
    drained: gate.drained,
    write: stream.write
  }
}
