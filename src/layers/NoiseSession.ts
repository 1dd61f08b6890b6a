/**
 * The default SecureSession: a Noise XX handshake (Noise_XX_25519_ChaChaPoly_BLAKE2b, from `noise-handshake`), then
 * every byte in Noise transport messages encrypted with libsodium's ChaCha20-Poly1305 (NoiseTransport.ts).
 *
 * The handshake payload (messages 2 and 3) binds the Noise static key to the node's Ed25519 identity key by a
 * signature, carries the network name, and, when a network key is set, an HMAC proving the sender knows it, bound to
 * this handshake. So each side learns and checks the remote NodeId and network during the handshake itself; the trust
 * handshake that follows can rely on it (TrustHandshake's default then needs no message of its own). docs/protocol.md
 * §17 has the byte layout.
 *
 * Round trips: the initiator sends its preamble and message 1 together, the responder its preamble and message 2,
 * and the initiator message 3 with its first frame (the Hello), so a channel opens in two round trips.
 *
 * Resumption: a dial to an address whose static key this session learnt from an earlier handshake uses Noise IK,
 * with the initiator's Hello inside message 1 and the responder's after message 2: one round trip. The responder's
 * stream is `confirmed` only once the initiator's first transport message authenticated (message 1 could be a
 * replay); a responder that cannot read message 1 answers with an empty message and XX follows on that connection.
 */
import { Effect, identity, Layer } from "effect"
import * as crypto from "node:crypto"
// @ts-expect-error noise-handshake ships no type declarations
import NoiseState from "noise-handshake"
// @ts-expect-error noise-handshake ships no type declarations
import curve from "noise-handshake/dh.js"
import type { ByteStream, EarlyFrame } from "../actors/Connection.js"
import { readPrefix, withDeadline } from "../actors/Connection.js"
import { ConnectionLost, HandshakeFailed, PeerIdentityMismatch } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import type { NetworkSettings } from "../schema/settings.js"
import { encodeFrame, PREAMBLE_LENGTH } from "../schema/wire.js"
import { Reject } from "../schema/handshake.js"
import type { NodeKeys } from "./NodeIdentity.js"
import { NodeIdentity, nodeIdFromPublicKey, verifySignature } from "./NodeIdentity.js"
import { NoiseCipher, secureTransport } from "./NoiseTransport.js"
import type { SessionPeer, TransportOptions } from "./NoiseTransport.js"
import { SecureSession } from "./SecureSession.js"
import type { Opening, UpgradeError } from "./SecureSession.js"
import { NetworkConfig } from "./Settings.js"

/** What the Ed25519 key signs: a domain label then the Noise static public key. */
const BINDING_LABEL = Buffer.from("effect-p2pnet noise static key v1:")
const PROOF_LABEL = Buffer.from("effect-p2pnet network key proof v1:")
const PAYLOAD_VERSION = 1

interface Handshake {
  /** The ephemeral key pair; made by the first message that sends it unless set before. */
  e: StaticKeyPair | null
  readonly initialise: (prologue: Uint8Array, remoteStatic?: Uint8Array) => void
  readonly send: (payload?: Uint8Array) => Buffer
  readonly recv: (message: Uint8Array) => Buffer
  readonly getHandshakeHash: () => Buffer
  readonly rs: Buffer | null
  readonly re: Buffer | null
  readonly rx: Buffer
  readonly tx: Buffer
}
export interface StaticKeyPair {
  readonly publicKey: Buffer
  readonly secretKey: Buffer
}
interface Curve {
  readonly dh: (publicKey: Uint8Array, keyPair: StaticKeyPair) => Buffer
}
const newHandshake = (
  pattern: "XX" | "IK",
  initiator: boolean,
  staticKeys: StaticKeyPair,
  dh: (noise: Handshake) => Curve["dh"]
): Handshake => {
  const holder: { noise?: Handshake } = {}
  // noise-handshake takes its DH functions as an option; ours is the package's own, with one shortcut (see `dh`)
  const noise: Handshake = new NoiseState(pattern, initiator, staticKeys, {
    curve: { ...curve, dh: (publicKey: Uint8Array, keyPair: StaticKeyPair) => dh(holder.noise!)(publicKey, keyPair) }
  })
  holder.noise = noise
  return noise
}
const PROLOGUE = Buffer.alloc(0)
/** An XX message 1 is the initiator's ephemeral key alone; an IK message 1 is longer (static key, payload, tags). */
const XX_MESSAGE_1 = 32
/** The payload of a message this handshake can read, or undefined (a message 1 for another static key). */
const readable = (noise: Handshake, message: Buffer): Buffer | undefined => {
  try {
    return noise.recv(message)
  } catch {
    return undefined
  }
}
/** A fresh X25519 key pair for the Noise static key. */
export const generateStaticKeys = (): StaticKeyPair => curve.generateKeyPair()

export interface NoiseOptions {
  /**
   * A handshake that has not completed after this long fails with HandshakeFailed. Unset, the session sets no timer
   * of its own: PeerNetwork bounds the whole opening (handshake and Hello) with NetworkSettings.handshakeTimeoutMillis.
   */
  readonly handshakeTimeoutMillis?: number
  /** Transport messages per direction between two rekeys (default 2^20). Both sides must use the same value. */
  readonly rekeyInterval?: number
  /** The Noise static key (default: a fresh one per layer). Tests use it to show forward secrecy. */
  readonly staticKeys?: StaticKeyPair
  /**
   * Resumption (default true): a dial to an address whose static key this session learnt from an earlier handshake
   * opens with Noise IK, one round trip, instead of XX; and IK openings are answered. False: XX only, both ways (an
   * IK message 1 is answered with the request to use XX).
   */
  readonly resumption?: boolean
}

/** Prepared openings kept at most (one per address; the oldest is dropped). */
const PREPARED_LIMIT = 64

/** An IK initiator's message 1, made (perhaps ahead of the dial) with the handshake that continues from it. */
interface PreparedIK {
  readonly noise: Handshake
  /** The static key it was made for. */
  readonly remoteStatic: Buffer
  readonly m1: Buffer
  /** The handshake hash after message 1. */
  readonly h1: Buffer
  /** The Hello inside, and the maker that made it. */
  readonly early: EarlyFrame
  readonly maker: () => EarlyFrame
}

const u16 = (n: number) => {
  const b = Buffer.allocUnsafe(2)
  b.writeUInt16BE(n, 0)
  return b
}

/** A read of the handshake, whose end of stream says where it happened. */
const duringHandshake = <A>(read: Effect.Effect<A, ConnectionLost>) =>
  Effect.mapError(read, (reason) => new ConnectionLost({ detail: `during the noise handshake: ${reason.detail}` }))

/** Reads one u16-length-prefixed handshake message; bytes after it are handed back to the stream. */
const readMessage = (stream: ByteStream) =>
  duringHandshake(
    readPrefix(
      stream,
      (got) => (got.length < 2 ? undefined : 2 + got.readUInt16BE(0)),
      (bytes) => bytes.subarray(2)
    )
  )

/**
 * The remote's preamble and the handshake message after it, read together when the preamble is the expected one
 * (byte for byte ours: same magic, session and version); undefined otherwise, with every byte left in the stream for
 * the opening's own check, which names the mismatch and answers it with a Reject.
 */
const readPreambleAndMessage = (stream: ByteStream, expected: Uint8Array) =>
  duringHandshake(
    readPrefix(
      stream,
      (got) =>
        got.length < PREAMBLE_LENGTH
          ? undefined
          : !got.subarray(0, PREAMBLE_LENGTH).equals(expected)
            ? 0
            : got.length < PREAMBLE_LENGTH + 2
              ? undefined
              : PREAMBLE_LENGTH + 2 + got.readUInt16BE(PREAMBLE_LENGTH),
      (bytes) => (bytes.length === 0 ? undefined : bytes.subarray(PREAMBLE_LENGTH + 2))
    )
  )

const networkProof = (settings: NetworkSettings, role: "initiator" | "responder", hash: Uint8Array) =>
  settings.networkKey === ""
    ? Buffer.alloc(0)
    : crypto
        .createHmac("sha256", settings.networkKey)
        .update(PROOF_LABEL)
        .update(role)
        .update("\n")
        .update(settings.network)
        .update("\n")
        .update(hash)
        .digest()

/** version u8 | Ed25519 key 32 | binding signature 64 | network length u16 | network | proof length u8 | proof */
const encodePayload = (keys: NodeKeys, binding: Uint8Array, network: string, proof: Buffer) => {
  const net = Buffer.from(network, "utf8")
  return Buffer.concat([
    Buffer.from([PAYLOAD_VERSION]),
    keys.publicKey,
    binding,
    u16(net.length),
    net,
    Buffer.from([proof.length]),
    proof
  ])
}

interface Payload {
  readonly publicKey: Buffer
  readonly signature: Buffer
  readonly network: string
  readonly proof: Buffer
  /** Bytes after the payload: the initiator's first frames in an IK message 1; nothing anywhere else. */
  readonly rest: Buffer
}
/** `rest`: bytes may follow the payload (an IK message 1); otherwise the payload must fill the message. */
const decodePayload = (b: Buffer, rest = false): Payload | undefined => {
  if (b.length < 1 + 32 + 64 + 2 + 1 || b[0] !== PAYLOAD_VERSION) return undefined
  const netLen = b.readUInt16BE(97)
  if (b.length < 99 + netLen + 1) return undefined
  const proofLen = b[99 + netLen]!
  const end = 99 + netLen + 1 + proofLen
  if (rest ? b.length < end : b.length !== end) return undefined
  return {
    publicKey: b.subarray(1, 33),
    signature: b.subarray(33, 97),
    network: b.subarray(99, 99 + netLen).toString("utf8"),
    proof: b.subarray(100 + netLen, end),
    rest: b.subarray(end)
  }
}

/**
 * A session's memory of what it learnt (verified bindings, static keys by address, static-static DH results): at most
 * `limit` entries, all forgotten when a new key would pass the limit (an entry is only ever a shortcut).
 */
const boundedCache = <V>(limit = 1024) => {
  const entries = new Map<string, V>()
  return {
    get: (key: string) => entries.get(key),
    set: (key: string, value: V) => {
      if (entries.size >= limit && !entries.has(key)) entries.clear()
      entries.set(key, value)
    },
    delete: (key: string) => entries.delete(key)
  }
}

/** The session and `forget`, which erases the keys it keeps ready and stops it preparing more (see noiseSession). */
const makeNoiseSession = (keys: NodeKeys, settings: NetworkSettings, options: NoiseOptions) => {
  const staticKeys = options.staticKeys ?? generateStaticKeys()
  const binding = keys.sign(Buffer.concat([BINDING_LABEL, staticKeys.publicKey]))
  const verified = boundedCache<NodeId>()
  const rekeyInterval = options.rekeyInterval ?? 2 ** 20
  const timeout = options.handshakeTimeoutMillis
  const resumption = options.resumption ?? true
  // one ephemeral key pair made ahead, while a handshake waits on the network, so the next handshake need not make
  // its own before its first message; each is used by one handshake only (which erases it when done). It is made
  // once the event loop has run the I/O that is due (the message just written leaves first).
  let spare: StaticKeyPair | undefined
  /** Set by `forget` (the layer's scope closed): nothing more is kept ready. */
  let closed = false
  let making = false
  const takeEphemeral = (noise: Handshake) => {
    noise.e = spare ?? curve.generateKeyPair()
    spare = undefined
  }
  const makeSpare = () => {
    if (spare !== undefined || making || closed) return
    making = true
    setImmediate(() => {
      making = false
      // a layer closed meanwhile keeps no key ready
      if (!closed) spare ??= curve.generateKeyPair()
    })
  }

  /** The remote's identity from its payload, or why it is not acceptable. */
  const check = (
    payload: Payload | undefined,
    remoteStatic: Buffer | null,
    proofRole: "initiator" | "responder",
    hash: Uint8Array
  ): { peer: SessionPeer } | { problem: string } => {
    if (payload === undefined || remoteStatic === null) return { problem: "malformed noise identity payload" }
    const cacheKey = Buffer.concat([payload.publicKey, remoteStatic, payload.signature]).toString("base64")
    let id = verified.get(cacheKey)
    if (id === undefined) {
      if (!verifySignature(payload.publicKey, Buffer.concat([BINDING_LABEL, remoteStatic]), payload.signature)) {
        return { problem: "peer's identity signature does not match its noise static key" }
      }
      id = nodeIdFromPublicKey(payload.publicKey)
      verified.set(cacheKey, id)
    }
    if (payload.network !== settings.network) {
      return {
        problem: `network mismatch: peer is in ${JSON.stringify(payload.network)}, this node in ${JSON.stringify(
          settings.network
        )}`
      }
    }
    if (settings.networkKey !== "") {
      const expected = networkProof(settings, proofRole, hash)
      if (payload.proof.length !== expected.length || !crypto.timingSafeEqual(payload.proof, expected)) {
        return { problem: "network key proof failed (the peer does not know this network's key)" }
      }
    }
    return { peer: { nodeId: id, publicKey: new Uint8Array(payload.publicKey), network: payload.network } }
  }

  const ownPayload = (proof: Buffer) => encodePayload(keys, binding, settings.network, proof)

  /**
   * Resumption: the static key that answered at each dialled address ("host:port"), learnt from a complete handshake.
   * A dial to an address found here opens with IK (one round trip) instead of XX. Bounded (`boundedCache`).
   */
  const known = boundedCache<Buffer>()
  /**
   * Prepared openings: for an address just dialled (at most PREPARED_LIMIT, the most recent), IK's message 1 for the
   * next dial there, made once this turn's I/O has run, with its own ephemeral key and its own Hello from the
   * opening's `early`. A dial that finds one writes it the moment its socket is up (no DH, no Hello to make on the
   * way); each is used once, and its ephemeral secret is erased when it is dropped unused.
   */
  const prepared = new Map<string, PreparedIK>()
  const drop = (ik: PreparedIK) => ik.noise.e?.secretKey.fill(0)
  const remember = (where: string, remoteStatic: Buffer | null, early: Opening["early"]) => {
    if (!resumption || remoteStatic === null || where.endsWith(":0")) return
    known.set(where, Buffer.from(remoteStatic))
    if (early === undefined) return
    setImmediate(() => {
      const rs = known.get(where)
      if (closed || prepared.has(where) || rs === undefined) return
      let ik: PreparedIK
      try {
        ik = makeIK(rs, early)
      } catch {
        return // nothing prepared: the next dial makes its own
      }
      if (prepared.size >= PREPARED_LIMIT) {
        const oldest = prepared.keys().next().value!
        drop(prepared.get(oldest)!)
        prepared.delete(oldest)
      }
      prepared.set(where, ik)
      makeSpare()
    })
  }
  /**
   * The prepared opening for `where`, taken, when it was made for the static key known there now and with this
   * opening's Hello maker (a session shared by two networks never sends one's Hello for the other).
   */
  const takePrepared = (where: string, remoteStatic: Buffer, maker: () => EarlyFrame): PreparedIK | undefined => {
    const ik = prepared.get(where)
    if (ik === undefined) return undefined
    prepared.delete(where)
    if (ik.maker === maker && ik.remoteStatic.equals(remoteStatic)) return ik
    drop(ik)
    return undefined
  }
  /** IK's message 1 to `remoteStatic`, with a Hello from `maker` inside (after the identity payload). */
  const makeIK = (remoteStatic: Buffer, maker: () => EarlyFrame): PreparedIK => {
    const early = maker()
    const noise = newHandshake("IK", true, staticKeys, dh)
    noise.initialise(PROLOGUE, remoteStatic)
    takeEphemeral(noise)
    const proof = networkProof(settings, "initiator", Buffer.concat([noise.e!.publicKey, remoteStatic]))
    const m1 = noise.send(Buffer.concat([ownPayload(proof), early.bytes]))
    return { noise, remoteStatic, m1, h1: Buffer.from(noise.getHandshakeHash()), early, maker }
  }
  /** Erases what this session keeps ready (prepared openings, the spare key) and prepares nothing more. */
  const forget = () => {
    closed = true
    for (const ik of prepared.values()) drop(ik)
    prepared.clear()
    spare?.secretKey.fill(0)
    spare = undefined
  }

  /**
   * X25519 as noise-handshake computes it, except that DH(our static key, a remote static key), the same for every
   * handshake between two nodes (IK's ss), is computed once per remote key and kept (like the static key, for this
   * run only; at most 1,024). Every DH with an ephemeral key is computed fresh.
   */
  const staticShared = boundedCache<Buffer>()
  const dh =
    (noise: Handshake): Curve["dh"] =>
    (publicKey, keyPair) => {
      if (keyPair !== staticKeys || publicKey !== noise.rs || noise.rs === null) return curve.dh(publicKey, keyPair)
      const id = Buffer.from(publicKey).toString("base64")
      let shared = staticShared.get(id)
      if (shared === undefined) {
        shared = Buffer.from(curve.dh(publicKey, keyPair))
        staticShared.set(id, shared)
      }
      return Buffer.from(shared)
    }

  const handshake = (stream: ByteStream, role: "initiator" | "responder", opening: Opening) =>
    Effect.gen(function* () {
      const step = <A>(f: () => A) =>
        Effect.try({
          try: f,
          catch: (e) => new HandshakeFailed({ reason: `noise: ${e instanceof Error ? e.message : String(e)}` })
        })
      const message = (m: Buffer) => [u16(m.length), m]
      /** The remote's preamble, checked, and its first handshake message (one read when the preamble is as expected). */
      const recvFirst = (preambleSent: boolean) =>
        Effect.flatMap(readPreambleAndMessage(stream, opening.preamble), (m) =>
          m !== undefined
            ? Effect.succeed(m)
            : Effect.zipRight(opening.remotePreamble(preambleSent), readMessage(stream))
        )
      /** The transport; `lead` is sent in front of its first message (the initiator's message 3 goes with the Hello). */
      const transportFor = (
        noise: Handshake,
        peer: SessionPeer,
        lead: ReadonlyArray<Uint8Array>,
        options?: TransportOptions
      ) =>
        secureTransport(
          stream,
          peer,
          new NoiseCipher(noise.tx, rekeyInterval),
          new NoiseCipher(noise.rx, rekeyInterval),
          lead,
          options
        )
      /** Tells the remote why inside the session (it can read it now: the handshake is complete), then fails. */
      const refuse = (noise: Handshake, problem: string, lead: ReadonlyArray<Uint8Array>) =>
        transportFor(noise, { nodeId: "" as NodeId, publicKey: new Uint8Array(0), network: "" }, lead)
          .write([encodeFrame(Reject.make({ reason: problem }))])
          .pipe(
            Effect.ignore,
            Effect.zipRight(stream.destroy),
            Effect.zipRight(Effect.fail(new HandshakeFailed({ reason: problem })))
          )
      /**
       * XX as initiator; `first`: the preamble goes with message 1 and the remote's is read before message 2. The
       * opening's early frame (`carried`, or one made while message 2 is on its way) is the first transport message,
       * in the same write as message 3.
       */
      const initiateXX = (where: string, first: boolean, carried?: EarlyFrame) =>
        Effect.gen(function* () {
          const noise = newHandshake("XX", true, staticKeys, dh)
          yield* step(() => noise.initialise(PROLOGUE))
          takeEphemeral(noise)
          const m1 = yield* step(() => noise.send())
          // the preamble and message 1 leave together; the remote's preamble is checked before reading message 2
          yield* stream.write(first ? [opening.preamble, ...message(m1)] : message(m1))
          makeSpare()
          const early = carried ?? (opening.early === undefined ? undefined : yield* step(opening.early))
          const h1 = Buffer.from(noise.getHandshakeHash())
          const m2 = yield* first ? recvFirst(true) : readMessage(stream)
          const theirs = check(decodePayload(yield* step(() => noise.recv(m2))), noise.rs, "responder", h1)
          const m3 = yield* step(() => noise.send(ownPayload(networkProof(settings, "initiator", h1))))
          // message 3 is not written on its own: it leads the first transport write (the Hello, or a Reject)
          if ("problem" in theirs) return yield* refuse(noise, theirs.problem, message(m3))
          remember(where, noise.rs, opening.early)
          const transport = transportFor(noise, theirs.peer, message(m3), {
            pattern: "XX",
            ...(early === undefined ? {} : { earlySent: early })
          })
          if (early !== undefined) yield* transport.write([early.bytes])
          return transport
        })

      /**
       * IK as initiator, to the static key last seen at this address: `ik` is its message 1 (made for this dial, or
       * prepared ahead), with the Hello inside. Undefined when the responder answers that it cannot read message 1
       * (its key changed): XX follows.
       */
      const initiateIK = (where: string, ik: PreparedIK) =>
        Effect.gen(function* () {
          const { noise, h1 } = ik
          yield* stream.write([opening.preamble, ...message(ik.m1)])
          makeSpare()
          const m2 = yield* recvFirst(true)
          if (m2.length === 0) {
            // abandoned: its ephemeral secret is erased as a completed handshake erases it
            drop(ik)
            return undefined
          }
          const theirs = check(decodePayload(yield* step(() => noise.recv(m2))), noise.rs, "responder", h1)
          if ("problem" in theirs) return yield* refuse(noise, theirs.problem, [])
          remember(where, noise.rs, opening.early)
          // the responder waits for a first transport message before it counts this connection as live (message 1
          // alone could be a replay): an empty one leads this turn's first write, or goes alone at its end
          const transport = transportFor(noise, theirs.peer, [], {
            pattern: "IK",
            earlySent: ik.early,
            sendConfirmation: true
          })
          // a stream that cannot hand bytes over outside a fiber sends it now
          if (stream.writeNow === undefined) yield* transport.write([])
          return transport
        })

      /** XX as responder, from message 1; `preambleWith`: its preamble goes with message 2 (not sent yet). */
      const respondXX = (noise: Handshake, preambleWith: boolean) =>
        Effect.gen(function* () {
          const h1 = Buffer.from(noise.getHandshakeHash())
          takeEphemeral(noise)
          const m2 = yield* step(() => noise.send(ownPayload(networkProof(settings, "responder", h1))))
          yield* stream.write(preambleWith ? [opening.preamble, ...message(m2)] : message(m2))
          makeSpare()
          const m3 = yield* readMessage(stream)
          const theirs = check(decodePayload(yield* step(() => noise.recv(m3))), noise.rs, "initiator", h1)
          return "problem" in theirs
            ? yield* refuse(noise, theirs.problem, [])
            : transportFor(noise, theirs.peer, [], { pattern: "XX" })
        })

      /** IK as responder, message 1 read: message 2 leads this side's first transport write (its Hello). */
      const respondIK = (noise: Handshake, payload: Buffer) =>
        Effect.gen(function* () {
          const sent = decodePayload(payload, true)
          const theirs = check(sent, noise.rs, "initiator", Buffer.concat([noise.re!, staticKeys.publicKey]))
          const h1 = Buffer.from(noise.getHandshakeHash())
          takeEphemeral(noise)
          const m2 = yield* step(() => noise.send(ownPayload(networkProof(settings, "responder", h1))))
          makeSpare()
          const lead = [opening.preamble, ...message(m2)]
          if ("problem" in theirs) return yield* refuse(noise, theirs.problem, lead)
          return transportFor(noise, theirs.peer, lead, {
            pattern: "IK",
            // the initiator's first frames, carried in message 1, are read first
            ...(sent!.rest.length > 0 ? { received: sent!.rest } : {}),
            awaitConfirmation: true
          })
        })

      if (role === "initiator") {
        const where = `${stream.remoteAddress}:${stream.remotePort}`
        // a stream that cannot say where it leads (port 0) neither resumes nor is remembered
        const remoteStatic =
          resumption && opening.early !== undefined && stream.remotePort !== 0 ? known.get(where) : undefined
        if (remoteStatic === undefined) return yield* initiateXX(where, true)
        const maker = opening.early!
        const ik = takePrepared(where, remoteStatic, maker) ?? (yield* step(() => makeIK(remoteStatic, maker)))
        // a dial that fails on the way erases the ephemeral secret it took (a completed one is erased by the handshake)
        const resumed = yield* initiateIK(where, ik).pipe(Effect.onError(() => Effect.sync(() => drop(ik))))
        if (resumed !== undefined) return resumed
        // the responder could not read it (it restarted with another static key, or another node answers there); the
        // Hello it carried was never read, so XX sends it instead
        known.delete(where)
        return yield* initiateXX(where, false, ik.early)
      }
      // the responder has nothing to say before message 1: its preamble goes with message 2, in one write
      const m1 = yield* recvFirst(false)
      if (m1.length === XX_MESSAGE_1) {
        const noise = newHandshake("XX", false, staticKeys, dh)
        yield* step(() => noise.initialise(PROLOGUE))
        yield* step(() => noise.recv(m1))
        return yield* respondXX(noise, true)
      }
      if (resumption) {
        const noise = newHandshake("IK", false, staticKeys, dh)
        noise.initialise(PROLOGUE)
        const payload = readable(noise, m1)
        if (payload !== undefined) return yield* respondIK(noise, payload)
      }
      // not for this static key: an empty message asks for XX, whose message 1 follows on the same connection
      yield* stream.write([opening.preamble, u16(0)])
      const xx = newHandshake("XX", false, staticKeys, dh)
      yield* step(() => xx.initialise(PROLOGUE))
      const again = yield* readMessage(stream)
      yield* step(() => xx.recv(again))
      return yield* respondXX(xx, false)
    })

  const service = SecureSession.of({
    name: "noise",
    carriesEarly: true,
    upgrade: (stream, role, opening) =>
      handshake(stream, role, opening).pipe(
        // a timer of its own only when one was asked for (PeerNetwork bounds the whole opening)
        timeout === undefined
          ? identity
          : withDeadline(
              stream,
              timeout,
              () => new HandshakeFailed({ reason: `noise handshake did not complete in ${timeout} ms` })
            ),
        Effect.flatMap((secured): Effect.Effect<ByteStream, UpgradeError | PeerIdentityMismatch> =>
          opening.expectedPeer !== undefined && secured.remoteNodeId !== opening.expectedPeer
            ? Effect.zipRight(
                secured.write([encodeFrame(Reject.make({ reason: "not the node this connection was meant for" }))]),
                Effect.fail(new PeerIdentityMismatch({ expected: opening.expectedPeer, actual: secured.remoteNodeId }))
              ).pipe(Effect.ensuring(stream.destroy))
            : Effect.succeed(secured)
        )
        // no span of its own: the caller's covers the handshake (PeerNetwork.dial, PeerNetwork.accept), one per
        // connection instead of two, on the path every connection waits on
      )
  })
  return { service, forget }
}

/**
 * One per node: the static key, its binding signature (made once), and a small cache of bindings already verified
 * (the same identity key, static key and signature always verify the same way), so repeated connections between the
 * same nodes skip the Ed25519 verification. What it keeps ready for later handshakes (a spare ephemeral key, prepared
 * openings) lives until the process ends; `noiseSessionLayer` erases it when its scope closes.
 */
export const noiseSession = (keys: NodeKeys, settings: NetworkSettings, options: NoiseOptions = {}) =>
  makeNoiseSession(keys, settings, options).service

/**
 * The Noise session for this node's identity and settings, whatever NetworkSettings.session says.
 *
 * @example
 * networkLayer({ secure: noiseSessionLayer({ rekeyInterval: 1024 }) })
 */
export const noiseSessionLayer = (
  options: NoiseOptions = {}
): Layer.Layer<SecureSession, never, NetworkConfig | NodeIdentity> =>
  Layer.scoped(
    SecureSession,
    Effect.gen(function* () {
      const made = makeNoiseSession(yield* NodeIdentity, yield* NetworkConfig, options)
      yield* Effect.addFinalizer(() => Effect.sync(made.forget))
      return made.service
    })
  )

/** The default session: Noise, or clear text when NetworkSettings.session is "plain". */
export const sessionLayer: Layer.Layer<SecureSession, never, NetworkConfig | NodeIdentity> = Layer.unwrapEffect(
  Effect.map(NetworkConfig, (settings) => (settings.session === "plain" ? SecureSession.plain : noiseSessionLayer()))
)
