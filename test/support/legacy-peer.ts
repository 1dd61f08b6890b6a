/**
 * A scripted P2PNet (.NET) peer for compatibility tests, written from the reference spec
 * (/work/shared/reference/p2pnet-csharp-spec.md sections 1.1-1.5, 2.4, 2.6, 3 and 4.1), not from our codec: it imports
 * nothing from src/. Raw node:net and node:dgram on 127.0.0.1 only. It behaves like the original where it matters:
 * JSON built by hand with System.Text.Json's escaping, `<Tag>json</Tag>` frames written one per write, the original's
 * naive receiver (spec 1.4: the whole read accumulator with the first matching type's tags removed, so two packets in
 * one read become one invalid JSON text) and its default trust protocol ("Ping from <ip>" every interval while the
 * channel is untrusted, trusted after three chunks containing "Ping from", one ping back per ping after six).
 */
import { Deferred, Effect, Exit, Queue, Schedule, Scope } from "effect"
import * as dgram from "node:dgram"
import * as net from "node:net"

/** The original's packet-type tags, in its tag-map order (spec 1.3). */
export const LEGACY_KINDS = ["Identity", "Disconnect", "PeerGroup", "DataTransmit", "Message"] as const
export type LegacyKind = (typeof LEGACY_KINDS)[number]

// ---------------------------------------------------------------------------------------------------------------------
// JSON as System.Text.Json writes it (spec 1.1)
// ---------------------------------------------------------------------------------------------------------------------

const hex4 = (n: number) => n.toString(16).toUpperCase().padStart(4, "0")

/** A JSON string literal with the default JavaScriptEncoder's escaping (uppercase \uXXXX). */
export const jsonString = (s: string): string => {
  let out = '"'
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    const ch = s[i]!
    if (ch === "\\") out += "\\\\"
    else if (c === 0x0a) out += "\\n"
    else if (c === 0x0d) out += "\\r"
    else if (c === 0x09) out += "\\t"
    else if (c === 0x08) out += "\\b"
    else if (c === 0x0c) out += "\\f"
    else if (c >= 0x20 && c <= 0x7e && !"\"&'+<>`".includes(ch)) out += ch
    else out += `\\u${hex4(c)}`
  }
  return out + '"'
}

/** The round-trip DateTime format with trailing fractional zeros trimmed: 2025-04-18T13:48:00.031Z, ...:00Z. */
export const jsonDate = (d: Date = new Date()): string => {
  const iso = d.toISOString() // yyyy-MM-ddTHH:mm:ss.fffZ
  const fraction = iso.slice(20, 23).replace(/0+$/, "")
  return `"${iso.slice(0, 19)}${fraction === "" ? "" : `.${fraction}`}Z"`
}

export interface Origin {
  readonly identifier: string
  readonly time?: Date
}
const base = (o: Origin) =>
  `"SourceOriginIdentifier":${jsonString(o.identifier)},"SourceOriginTime":${jsonDate(o.time)}`

/** IdentifierPacket (also the discovery datagram, spec 1.5). */
export const identifierJson = (o: Origin & { readonly message?: string; readonly port: number; readonly ip: string }) =>
  `{"Message":${jsonString(o.message ?? "discovery")},"Data":${o.port},"IP":${jsonString(o.ip)},${base(o)}}`

export const pureMessageJson = (o: Origin & { readonly message: string }) =>
  `{"Message":${jsonString(o.message)},${base(o)}}`

export interface GenericPeerJson {
  readonly port: number
  readonly address: string
  readonly identifier: string | null
}
/** CollectionSharePacket: `$type` first in every element, or .NET cannot read it. */
export const collectionShareJson = (
  o: Origin & { readonly peers: ReadonlyArray<GenericPeerJson>; readonly data?: number }
) =>
  `{"Data":${o.data ?? 100},"peers":[${o.peers
    .map(
      (p) =>
        `{"$type":"GenericPeer","Port":${p.port},"Address":${jsonString(p.address)},"Identifier":${
          p.identifier === null ? "null" : jsonString(p.identifier)
        }}`
    )
    .join(",")}],${base(o)}}`

/** DataPayloadFormat numbers and their data tags (spec 1.2, 1.3). */
export const DATA_TYPES = { File: 0, Task: 1, MiscData: 2 } as const
export type DataFormat = keyof typeof DATA_TYPES

/** DataTransmissionPacket built with the wrapping constructor: Data = <Format> ‖ bytes ‖ </Format>, base64. */
export const dataTransmissionJson = (o: Origin & { readonly format: DataFormat; readonly data: Uint8Array }) => {
  const wrapped = Buffer.concat([Buffer.from(`<${o.format}>`), o.data, Buffer.from(`</${o.format}>`)])
  return `{"Data":"${wrapped.toString("base64")}","DataType":${DATA_TYPES[o.format]},${base(o)}}`
}

/** DisconnectPacket in the shape the spec gives (the original itself cannot serialize it, B22). */
export const disconnectJson = (
  o: Origin & { readonly ip: string; readonly port: number; readonly data: Record<string, string> }
) =>
  `{"IP":${jsonString(o.ip)},"Port":${o.port},"Timestamp":${jsonDate(o.time)},"Data":{${Object.entries(o.data)
    .map(([k, v]) => `${jsonString(k)}:${jsonString(v)}`)
    .join(",")}},${base(o)}}`

/** A NetworkTask (not a NetworkPacket): {"TaskType":n,"TaskData":{...}}. */
export const networkTaskJson = (taskType: number, data: Record<string, string>) =>
  `{"TaskType":${taskType},"TaskData":{${Object.entries(data)
    .map(([k, v]) => `${jsonString(k)}:${jsonString(v)}`)
    .join(",")}}}`

export const frame = (kind: LegacyKind, json: string): Buffer => Buffer.from(`<${kind}>${json}</${kind}>`, "utf8")

// ---------------------------------------------------------------------------------------------------------------------
// The original's receiver (spec 1.4), kept naive on purpose
// ---------------------------------------------------------------------------------------------------------------------

/** What the naive receiver extracted from one read: the kind, the payload text, whether it parses, and when. */
export interface Received {
  readonly kind: LegacyKind
  readonly payload: string
  /** JSON.parse of the payload, or undefined when it is not JSON (e.g. two packets coalesced in one read). */
  readonly json: any
  /** performance.now() at the read. */
  readonly at: number
  /** The raw chunk of that read (the original's DataReceived argument). */
  readonly chunk: string
}

/**
 * One read: decode the chunk alone, append it to the accumulator, and if any type's two tags occur, take the first
 * such type; the payload is the accumulator with every occurrence of its tags removed, and the accumulator is cleared.
 */
export class NaiveReceiver {
  private acc = ""
  read(chunk: Buffer, at: number): Received | undefined {
    const text = chunk.toString("utf8")
    this.acc += text
    const kind = LEGACY_KINDS.find((k) => this.acc.includes(`<${k}>`) && this.acc.includes(`</${k}>`))
    if (kind === undefined) return undefined
    const payload = this.acc.split(`<${kind}>`).join("").split(`</${kind}>`).join("")
    this.acc = ""
    if (payload === "") return undefined
    let json: any
    try {
      json = JSON.parse(payload)
    } catch {
      json = undefined
    }
    return { kind, payload, json, at, chunk: text }
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// TCP connections
// ---------------------------------------------------------------------------------------------------------------------

export interface LegacyPeerOptions {
  /** The address this peer says it has ("Ping from <ip>", IP of its datagrams). */
  readonly ip?: string
  /** Its PeerNetwork.Identifier (SourceOriginIdentifier of what it sends). */
  readonly identifier?: string
  /** RunDefaultTrustProtocol: ping on every new connection until trusted. */
  readonly runTrustProtocol?: boolean
  /** The ping period; the original's is 3000 ms. */
  readonly pingIntervalMillis?: number
  /** The pause after each write; the original's is 100 ms. */
  readonly writePauseMillis?: number
}

export interface LegacyConnection {
  readonly socket: net.Socket
  /** Every packet the naive receiver extracted, in order (pings included). */
  readonly received: Queue.Queue<Received>
  /** Every received packet so far (pings included). */
  readonly log: ReadonlyArray<Received>
  /** Resolves once three chunks containing "Ping from" arrived (the original's trust test). */
  readonly trusted: Deferred.Deferred<void>
  readonly pingsReceived: () => number
  readonly pingsSent: () => number
  /** The running count of pings this peer queued, one item per ping (to wait for "n pings sent"). */
  readonly pingQueued: Queue.Queue<number>
  /** Queues a frame: written alone, after the write pause (the original's sender). */
  readonly send: (kind: LegacyKind, json: string) => Effect.Effect<void>
  /** Queues bytes to be written as they are, in one write (several frames in one write: a coalesced read). */
  readonly sendRaw: (bytes: Uint8Array) => Effect.Effect<void>
  /** Resolves when the socket has closed. */
  readonly closed: Deferred.Deferred<void>
  /** The next received packet other than a ping. */
  readonly next: Effect.Effect<Received>
}

/** Runs the original's channel over a connected socket, for the life of the scope. */
const channel = (socket: net.Socket, opts: Required<LegacyPeerOptions>) =>
  Effect.gen(function* () {
    const received = yield* Queue.unbounded<Received>()
    const nonPing = yield* Queue.unbounded<Received>()
    const outgoing = yield* Queue.bounded<Buffer>(1024)
    const pingQueued = yield* Queue.unbounded<number>()
    const trusted = yield* Deferred.make<void>()
    const closed = yield* Deferred.make<void>()
    const log: Array<Received> = []
    const receiver = new NaiveReceiver()
    let pings = 0
    let sent = 0
    const ping = () =>
      frame("Message", pureMessageJson({ identifier: opts.identifier, message: `Ping from ${opts.ip}` }))
    socket.on("data", (chunk: Buffer) => {
      const at = performance.now()
      const text = chunk.toString("utf8")
      // DataReceived: counted per raw chunk, whatever it decodes to
      if (opts.runTrustProtocol && text.includes("Ping from")) {
        pings++
        if (pings >= 3) Deferred.unsafeDone(trusted, Exit.void)
        if (pings > 6) Queue.unsafeOffer(outgoing, ping())
      }
      const r = receiver.read(chunk, at)
      if (r === undefined) return
      log.push(r)
      Queue.unsafeOffer(received, r)
      if (!(r.kind === "Message" && r.json !== undefined && String(r.json.Message).startsWith("Ping from"))) {
        Queue.unsafeOffer(nonPing, r)
      }
    })
    socket.on("error", () => {})
    socket.on("close", () => Deferred.unsafeDone(closed, Exit.void))
    yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
    const write = (bytes: Uint8Array) =>
      Effect.async<void>((resume) => {
        if (socket.destroyed) return resume(Effect.void)
        socket.write(bytes, () => resume(Effect.void))
      })
    // the sender: one write per packet, the next no sooner than the original's write pause after it (its behaviour
    // on the wire, not a synchronisation of this test)
    yield* Effect.forkScoped(
      Queue.take(outgoing).pipe(
        Effect.flatMap(write),
        Effect.repeat(Schedule.spaced(`${opts.writePauseMillis} millis`))
      )
    )
    if (opts.runTrustProtocol) {
      // a ping every interval, at most 1000, until trusted or closed
      const pingOnce = Effect.gen(function* () {
        if ((yield* Deferred.isDone(trusted)) || (yield* Deferred.isDone(closed))) return false
        yield* Queue.offer(outgoing, ping())
        sent++
        yield* Queue.offer(pingQueued, sent)
        return true
      })
      yield* Effect.forkScoped(
        pingOnce.pipe(
          Effect.repeat({
            schedule: Schedule.spaced(`${opts.pingIntervalMillis} millis`).pipe(
              Schedule.intersect(Schedule.recurs(999))
            ),
            while: (more) => more
          })
        )
      )
    }
    const connection: LegacyConnection = {
      socket,
      received,
      log,
      trusted,
      pingsReceived: () => pings,
      pingsSent: () => sent,
      pingQueued,
      send: (kind, json) => Queue.offer(outgoing, frame(kind, json)).pipe(Effect.asVoid),
      sendRaw: (bytes) => Queue.offer(outgoing, Buffer.from(bytes)).pipe(Effect.asVoid),
      closed,
      next: Queue.take(nonPing)
    }
    return connection
  })

export interface LegacyPeer {
  /** The TCP port it listens on (127.0.0.1). */
  readonly port: number
  readonly ip: string
  readonly identifier: string
  /** Connections the node opened to it, in order. */
  readonly accepted: Queue.Queue<LegacyConnection>
  /** Opens a connection to a node's legacy listener. */
  readonly connect: (port: number) => Effect.Effect<LegacyConnection, Error, Scope.Scope>
  /** Connects to 127.0.0.1:`port` and writes `bytes` raw, with no handshake (for malformed-input tests). */
  readonly connectRaw: (port: number) => Effect.Effect<net.Socket, Error, Scope.Scope>
}

/** Starts the scripted peer: a TCP listener on 127.0.0.1 (port 0) accepting connections as the original would. */
export const startLegacyPeer = (options: LegacyPeerOptions = {}): Effect.Effect<LegacyPeer, Error, Scope.Scope> =>
  Effect.gen(function* () {
    const opts: Required<LegacyPeerOptions> = {
      ip: "127.0.0.1",
      identifier: "legacy_peer",
      runTrustProtocol: true,
      pingIntervalMillis: 3000,
      writePauseMillis: 100,
      ...options
    }
    const scope = yield* Effect.scope
    const accepted = yield* Queue.unbounded<LegacyConnection>()
    const runtime = yield* Effect.runtime<never>()
    const server = yield* Effect.acquireRelease(
      Effect.async<net.Server, Error>((resume) => {
        const s = net.createServer((socket) => {
          Effect.runFork(
            Effect.flatMap(Scope.extend(channel(socket, opts), scope), (c) => Queue.offer(accepted, c)).pipe(
              Effect.provide(runtime)
            )
          )
        })
        s.once("error", (e) => resume(Effect.fail(e)))
        s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) => Effect.async<void>((resume) => void s.close(() => resume(Effect.void)))
    )
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    const connectRaw = (to: number) =>
      Effect.acquireRelease(
        Effect.async<net.Socket, Error>((resume) => {
          const socket = net.connect({ host: "127.0.0.1", port: to })
          socket.once("error", (e) => resume(Effect.fail(e)))
          socket.once("connect", () => resume(Effect.succeed(socket)))
        }),
        (s) => Effect.sync(() => s.destroy())
      )
    return {
      port,
      ip: opts.ip,
      identifier: opts.identifier,
      accepted,
      connect: (to) => Effect.flatMap(connectRaw(to), (socket) => channel(socket, opts)),
      connectRaw
    } satisfies LegacyPeer
  })

// ---------------------------------------------------------------------------------------------------------------------
// LAN discovery datagrams (spec 2.4, 2.6)
// ---------------------------------------------------------------------------------------------------------------------

export interface Datagram {
  readonly text: string
  readonly json: any
  readonly source: string
}

/** A UDP socket on 127.0.0.1:`port` (0: any free one) collecting the datagrams it receives. */
export const udpListener = (port = 0) =>
  Effect.gen(function* () {
    const datagrams = yield* Queue.unbounded<Datagram>()
    const socket = yield* Effect.acquireRelease(
      Effect.async<dgram.Socket, Error>((resume) => {
        const s = dgram.createSocket({ type: "udp4", reuseAddr: true })
        s.once("error", (e) => resume(Effect.fail(e)))
        s.on("message", (m, info) => {
          let json: any
          try {
            json = JSON.parse(m.toString("utf8"))
          } catch {
            json = undefined
          }
          Queue.unsafeOffer(datagrams, { text: m.toString("utf8"), json, source: info.address })
        })
        s.bind(port, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) => Effect.async<void>((resume) => void s.close(() => resume(Effect.void)))
    )
    return { port: socket.address().port, datagrams, socket } as const
  })

/** Sends one raw discovery datagram (the original sends the IdentifierPacket JSON with no tags) to 127.0.0.1:`port`. */
export const sendDatagram = (text: string, port: number) =>
  Effect.acquireUseRelease(
    Effect.sync(() => dgram.createSocket("udp4")),
    (s) =>
      Effect.async<void, Error>((resume) => {
        s.send(Buffer.from(text, "utf8"), port, "127.0.0.1", (e) => resume(e ? Effect.fail(e) : Effect.void))
      }),
    (s) => Effect.sync(() => s.close())
  )
