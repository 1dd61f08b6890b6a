/**
 * A man in the middle for the Noise tests: a TCP relay on 127.0.0.1 that records what crosses it and can attack the
 * client → server direction, either chunk by chunk or, knowing the wire layout of a Noise channel (8-byte preamble,
 * u16-length handshake messages, then u16-length transport messages), message by message.
 */
import { Effect } from "effect"
import * as net from "node:net"
import { PREAMBLE_LENGTH } from "../../src/schema/wire.js"

/** The client (initiator) sends messages 1 and 3 of the XX handshake, the server (responder) message 2. */
export const CLIENT_HANDSHAKE_MESSAGES = 2
export const SERVER_HANDSHAKE_MESSAGES = 1

export type UnitKind = "preamble" | "handshake" | "transport"
export interface Unit {
  readonly kind: UnitKind
  /** The whole unit, its u16 length prefix included (none for the preamble). */
  readonly bytes: Buffer
}

/** Splits one direction of a Noise channel into its preamble, handshake messages and transport messages. */
export class UnitSplitter {
  private buffer = Buffer.alloc(0)
  private units = 0
  constructor(private readonly handshakeMessages: number) {}
  /** Bytes of an incomplete unit held. */
  get pending(): number {
    return this.buffer.length
  }
  push(chunk: Uint8Array): Array<Unit> {
    this.buffer = this.buffer.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buffer, chunk])
    const out: Array<Unit> = []
    for (;;) {
      const kind: UnitKind =
        this.units === 0 ? "preamble" : this.units <= this.handshakeMessages ? "handshake" : "transport"
      let size: number
      if (kind === "preamble") size = PREAMBLE_LENGTH
      else if (this.buffer.length < 2) break
      else size = 2 + this.buffer.readUInt16BE(0)
      if (this.buffer.length < size) break
      out.push({ kind, bytes: this.buffer.subarray(0, size) })
      this.buffer = this.buffer.subarray(size)
      this.units++
    }
    return out
  }
}

/** One recorded direction, split; `rest` is what is left after the last complete unit. */
export const splitDirection = (bytes: Buffer, handshakeMessages: number) => {
  const splitter = new UnitSplitter(handshakeMessages)
  const units = splitter.push(bytes)
  return {
    preamble: units.filter((u) => u.kind === "preamble").map((u) => u.bytes),
    /** Handshake messages without their length prefix. */
    handshake: units.filter((u) => u.kind === "handshake").map((u) => u.bytes.subarray(2)),
    /** Transport messages (ciphertext and tag) without their length prefix. */
    transport: units.filter((u) => u.kind === "transport").map((u) => u.bytes.subarray(2)),
    rest: splitter.pending
  }
}

export type Rewrite = (chunk: Buffer) => Buffer

/**
 * What to do to the next client → server transport message: "reorder" holds it and sends it after the one that
 * follows; "cut" sends its first half, then ends the connection to the server (FIN, as a cut cable would not, but a
 * truncating middlebox would).
 */
export type MessageAttack = "reorder" | "cut"

export interface Relay {
  readonly port: number
  /** Every chunk, both directions, in arrival order. */
  readonly recorded: Array<Buffer>
  readonly toServer: Array<Buffer>
  readonly toClient: Array<Buffer>
  /** Rewrites the next raw chunk going client → server. */
  readonly tamper: { next: Rewrite | undefined }
  /** Attacks the next client → server transport message (needs `parse`). */
  readonly attack: { next: MessageAttack | undefined }
  /** Client → server transport messages forwarded so far (needs `parse`). */
  readonly forwarded: () => number
}

/**
 * Forwards every connection to `port`. With `parse` (the default) client → server bytes are forwarded as whole
 * units, which message attacks need; turn it off for plain-text channels, whose frames are not u16 messages.
 */
export const relay = (port: number, options: { readonly parse?: boolean } = {}) =>
  Effect.acquireRelease(
    Effect.async<Relay & { readonly close: () => void }>((resume) => {
      const recorded: Array<Buffer> = []
      const toServer: Array<Buffer> = []
      const toClient: Array<Buffer> = []
      const tamper: Relay["tamper"] = { next: undefined }
      const attack: Relay["attack"] = { next: undefined }
      let forwarded = 0
      const parse = options.parse ?? true
      const sockets = new Set<net.Socket>()
      const server = net.createServer((client) => {
        const upstream = net.connect({ host: "127.0.0.1", port })
        sockets.add(client).add(upstream)
        const splitter = new UnitSplitter(CLIENT_HANDSHAKE_MESSAGES)
        let held: Buffer | undefined
        let cut = false
        const forward = (unit: Unit) => {
          if (cut) return
          if (unit.kind !== "transport") return void upstream.write(unit.bytes)
          const what = held !== undefined ? "release" : attack.next
          if (held === undefined) attack.next = undefined
          forwarded++
          switch (what) {
            case "reorder":
              held = unit.bytes
              return
            case "release":
              upstream.write(unit.bytes)
              upstream.write(held!)
              held = undefined
              return
            case "cut":
              cut = true
              upstream.end(unit.bytes.subarray(0, Math.ceil(unit.bytes.length / 2)))
              return
            default:
              upstream.write(unit.bytes)
          }
        }
        client.on("data", (chunk: Buffer) => {
          recorded.push(Buffer.from(chunk))
          toServer.push(Buffer.from(chunk))
          const rewrite = tamper.next
          tamper.next = undefined
          const bytes = rewrite === undefined ? chunk : rewrite(chunk)
          if (!parse) upstream.write(bytes)
          else for (const unit of splitter.push(bytes)) forward(unit)
        })
        upstream.on("data", (chunk: Buffer) => {
          recorded.push(Buffer.from(chunk))
          toClient.push(Buffer.from(chunk))
          client.write(chunk)
        })
        client.on("close", () => {
          sockets.delete(client)
          upstream.destroy()
        })
        upstream.on("close", () => {
          sockets.delete(upstream)
          client.destroy()
        })
        client.on("error", () => {})
        upstream.on("error", () => {})
      })
      server.listen(0, "127.0.0.1", () =>
        resume(
          Effect.succeed({
            port: (server.address() as net.AddressInfo).port,
            recorded,
            toServer,
            toClient,
            tamper,
            attack,
            forwarded: () => forwarded,
            close: () => {
              for (const s of sockets) s.destroy()
              server.close()
            }
          })
        )
      )
    }),
    (r) => Effect.sync(r.close)
  )
