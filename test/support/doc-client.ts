/**
 * A protocol-v1 client written from docs/protocol.md alone, with node:net and node:crypto and no library code: the
 * preamble (section 3), framing (section 4), NodeId (section 2), Hello and the default handshake (sections 6, 8).
 * test/protocol-doc.test.ts drives it against a real node to show that the document is enough to interoperate.
 */
import { Data, Effect, Queue } from "effect"
import type { Scope } from "effect"
import * as crypto from "node:crypto"
import * as net from "node:net"

/** Section 3: "P2PNET" and version 1 as u16 big-endian. */
export const PREAMBLE = Buffer.from([0x50, 0x32, 0x50, 0x4e, 0x45, 0x54, 0x00, 0x01])
/** Section 12: largest body length accepted. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024
const DOMAIN = "effect-p2pnet/v1 handshake"

export type Header = Readonly<Record<string, unknown>>

export interface Frame {
  readonly header: Header
  readonly attachment: Buffer
}

/** Section 4: u32 body length, u32 header length, UTF-8 JSON header, attachment. */
export const encodeFrame = (header: Header, attachment: Uint8Array = new Uint8Array(0)): Buffer => {
  const json = Buffer.from(JSON.stringify(header), "utf8")
  const frame = Buffer.alloc(8 + json.length + attachment.length)
  frame.writeUInt32BE(4 + json.length + attachment.length, 0)
  frame.writeUInt32BE(json.length, 4)
  json.copy(frame, 8)
  frame.set(attachment, 8 + json.length)
  return frame
}

export class StreamEnded extends Data.TaggedError("StreamEnded")<{ readonly wanted: number; readonly held: number }> {
  override get message() {
    return `stream ended with ${this.held} of ${this.wanted} wanted bytes`
  }
}

export class BadFrame extends Data.TaggedError("BadFrame")<{ readonly detail: string }> {}

export class UnexpectedBytes extends Data.TaggedError("UnexpectedBytes")<{ readonly bytes: Buffer }> {
  override get message() {
    return `expected the end of the stream, got ${this.bytes.length} more bytes: ${this.bytes.toString("hex")}`
  }
}

/** Section 2: the first 20 bytes of SHA-256 of the raw 32-byte Ed25519 public key, as lowercase hex. */
export const nodeIdOf = (rawPublicKey: Uint8Array): string =>
  crypto.createHash("sha256").update(rawPublicKey).digest("hex").slice(0, 40)

export interface RawIdentity {
  readonly id: string
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Buffer
  readonly sign: (data: Buffer) => Buffer
}

export const makeIdentity = (): RawIdentity => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519")
  const raw = Buffer.from(publicKey.export({ format: "der", type: "spki" }).subarray(-32))
  return { id: nodeIdOf(raw), publicKey: raw, sign: (data) => crypto.sign(null, data, privateKey) }
}

/** Ed25519 verification with a raw public key (as a JWK, whose `x` is the base64url raw key). */
export const verifySignature = (rawPublicKey: Buffer, data: Buffer, signature: Buffer): boolean => {
  const jwk = { kty: "OKP", crv: "Ed25519", x: rawPublicKey.toString("base64url") }
  return crypto.verify(null, data, crypto.createPublicKey({ key: jwk, format: "jwk" }), signature)
}

/** Section 8: six lines joined by "\n", nonces as the base64 text of the Hellos. */
export const transcript = (network: string, signer: Header, verifier: Header): Buffer => {
  const lines = [DOMAIN, network, signer["nodeId"], verifier["nodeId"], verifier["nonce"], signer["nonce"]]
  return Buffer.from(lines.map(String).join("\n"), "utf8")
}

/** Section 6: a Hello with a fresh 32-byte nonce; this client does not listen (listenPort 0). */
export const makeHello = (me: RawIdentity, network: string): Header => ({
  _tag: "Hello",
  version: 1,
  network,
  nodeId: me.id,
  publicKey: me.publicKey.toString("base64"),
  nonce: crypto.randomBytes(32).toString("base64"),
  listenPort: 0
})

/** Section 8: the proof `me` sends, signing as signer with the remote as verifier. */
export const makeProof = (me: RawIdentity, network: string, mine: Header, theirs: Header, networkKey = ""): Header => {
  const data = transcript(network, mine, theirs)
  const mac = (key: string) => crypto.createHmac("sha256", Buffer.from(key, "utf8")).update(data).digest("base64")
  return {
    _tag: "HandshakeProof",
    signature: me.sign(data).toString("base64"),
    networkMac: networkKey === "" ? "" : mac(networkKey)
  }
}

export interface RawConnection {
  readonly write: (...chunks: ReadonlyArray<Uint8Array>) => Effect.Effect<void>
  /** Exactly `n` bytes; fails if the stream ends first. */
  readonly readBytes: (n: number) => Effect.Effect<Buffer, StreamEnded>
  /** One whole frame, parsed as section 4 says. */
  readonly readFrame: Effect.Effect<Frame, StreamEnded | BadFrame>
  /** Waits for the remote to close the connection; fails if any byte arrives first. */
  readonly awaitEnd: Effect.Effect<void, UnexpectedBytes>
}

/** A TCP connection to 127.0.0.1:port, closed with the scope. Socket events feed a queue; reads take from it. */
export const connect = (port: number): Effect.Effect<RawConnection, never, Scope.Scope> =>
  Effect.gen(function* () {
    const incoming = yield* Queue.unbounded<Buffer | "end">()
    const socket = yield* Effect.acquireRelease(
      Effect.async<net.Socket>((resume) => {
        const s = net.connect({ host: "127.0.0.1", port })
        let connected = false
        s.on("data", (chunk: Buffer) => incoming.unsafeOffer(chunk))
        s.on("close", () => incoming.unsafeOffer("end"))
        // once connected, a reset is reported as "error" then "close"; the close is what readers see
        s.on("error", (e) => {
          if (!connected) resume(Effect.die(e))
        })
        s.once("connect", () => {
          connected = true
          resume(Effect.succeed(s))
        })
      }),
      (s) => Effect.sync(() => s.destroy())
    )
    let held = Buffer.alloc(0)
    let ended = false

    /** Takes one more chunk into `held`; false once the stream has ended. */
    const pull = Effect.suspend(() =>
      ended
        ? Effect.succeed(false)
        : Effect.map(Queue.take(incoming), (item) => {
            if (item === "end") ended = true
            else held = Buffer.concat([held, item])
            return !ended
          })
    )

    const readBytes = (n: number) =>
      Effect.gen(function* () {
        // each pass consumes one chunk or the end marker, so this stops once the remote closes
        while (held.length < n) {
          if (!(yield* pull)) return yield* new StreamEnded({ wanted: n, held: held.length })
        }
        const out = held.subarray(0, n)
        held = held.subarray(n)
        return Buffer.from(out)
      })

    const readFrame = Effect.gen(function* () {
      const length = (yield* readBytes(4)).readUInt32BE(0)
      if (length > MAX_FRAME_BYTES || length < 4) return yield* new BadFrame({ detail: `body length ${length}` })
      const body = yield* readBytes(length)
      const headerLength = body.readUInt32BE(0)
      if (headerLength > length - 4) return yield* new BadFrame({ detail: `header length ${headerLength}` })
      const header: unknown = yield* Effect.try({
        try: () => JSON.parse(body.subarray(4, 4 + headerLength).toString("utf8")),
        catch: (e) => new BadFrame({ detail: String(e) })
      })
      if (typeof header !== "object" || header === null || Array.isArray(header)) {
        return yield* new BadFrame({ detail: "header is not a JSON object" })
      }
      return { header: header as Header, attachment: body.subarray(4 + headerLength) }
    })

    const awaitEnd = Effect.gen(function* () {
      while (yield* pull) {
        if (held.length > 0) return yield* new UnexpectedBytes({ bytes: held })
      }
      if (held.length > 0) return yield* new UnexpectedBytes({ bytes: held })
    })

    const write = (...chunks: ReadonlyArray<Uint8Array>) =>
      Effect.async<void>((resume) => {
        socket.write(Buffer.concat(chunks), () => resume(Effect.void))
      })

    return { write, readBytes, readFrame, awaitEnd }
  })
