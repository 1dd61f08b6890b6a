/**
 * The trust handshake, run on every new channel after the Hello exchange when RunDefaultTrustProtocol is set. It
 * runs over the secure session and can rely on what the session proved (`HandshakeContext.session`).
 * Replace it with a Layer (`Layer.succeed(TrustHandshake, TrustHandshake.of({ run }))`). The default one replaces the
 * original's "Ping from" strings (B15): each side signs the other's fresh nonce with its Ed25519 key, proves it
 * knows the optional network key, and both exchange a verdict. docs/protocol.md gives the exact transcript.
 */
import { Context, Data, Effect, Exit, Layer } from "effect"
import * as crypto from "node:crypto"
import type { ConnectionLost } from "../schema/errors.js"
import { HandshakeFailed } from "../schema/errors.js"
import type { Hello } from "../schema/handshake.js"
import { HandshakeProof, HandshakeVerdict } from "../schema/handshake.js"
import type { HandshakeMessage } from "../schema/handshake.js"
import type { NetworkSettings } from "../schema/settings.js"
import type { NodeKeys } from "./NodeIdentity.js"
import type { SessionPeer } from "./NoiseTransport.js"
import { nodeIdFromPublicKey, verifySignature } from "./NodeIdentity.js"

/** What a handshake concluded. `Untrusted` keeps the channel open without trust; `Rejected` closes it. */
export type Verdict = Data.TaggedEnum<{
  Trusted: {}
  Untrusted: {}
  Rejected: { readonly reason: string }
}>
export const Verdict = Data.taggedEnum<Verdict>()

export interface HandshakeContext {
  /** True on the side that dialled. */
  readonly initiator: boolean
  readonly local: NodeKeys
  readonly localHello: Hello
  readonly remoteHello: Hello
  /**
   * What the secure session proved during its own handshake (Noise: the remote's node key and network, with the
   * network key when one is set); absent on a plain-text channel. The remote's Hello names the same node and key.
   */
  readonly session?: SessionPeer
  readonly settings: NetworkSettings
  readonly send: (message: HandshakeMessage) => Effect.Effect<void, ConnectionLost>
  /** The next handshake message from the remote; fails if the connection ends first. */
  readonly receive: Effect.Effect<HandshakeMessage, HandshakeFailed>
}

export class TrustHandshake extends Context.Tag("effect-p2pnet/TrustHandshake")<
  TrustHandshake,
  {
    readonly run: (ctx: HandshakeContext) => Effect.Effect<Verdict, HandshakeFailed | ConnectionLost>
  }
>() {
  static readonly layer = Layer.sync(this, () => this.of({ run: defaultHandshake }))
}

const DOMAIN = "effect-p2pnet/v1 handshake"

/** The bytes a signer signs: domain, network, signer id, verifier id, verifier nonce, signer nonce, newline-joined. */
export const transcript = (network: string, signer: Hello, verifier: Hello): Buffer =>
  Buffer.from([DOMAIN, network, signer.nodeId, verifier.nodeId, verifier.nonce, signer.nonce].join("\n"), "utf8")

const mac = (key: string, data: Buffer): string =>
  key === "" ? "" : crypto.createHmac("sha256", key).update(data).digest("base64")

/** Why the remote's Hello and proof are not acceptable, or undefined when they are. */
export const checkProof = (
  settings: NetworkSettings,
  local: Hello,
  remote: Hello,
  proof: HandshakeProof
): string | undefined => {
  if (remote.network !== settings.network) {
    return `network mismatch: peer is in ${JSON.stringify(remote.network)}, this node in ${JSON.stringify(
      settings.network
    )}`
  }
  const publicKey = Buffer.from(remote.publicKey, "base64")
  if (publicKey.length !== 32) return "public key is not 32 bytes"
  if (nodeIdFromPublicKey(publicKey) !== remote.nodeId) return "node id does not match public key"
  if (Buffer.from(remote.nonce, "base64").length !== 32) return "nonce is not 32 bytes"
  const data = transcript(settings.network, remote, local)
  if (!verifySignature(publicKey, data, Buffer.from(proof.signature, "base64"))) return "bad signature"
  if (settings.networkKey !== "") {
    const expected = Buffer.from(mac(settings.networkKey, data), "base64")
    const got = Buffer.from(proof.networkMac, "base64")
    if (got.length !== expected.length || !crypto.timingSafeEqual(got, expected)) return "network key proof failed"
  }
  return undefined
}

const expect = <T extends HandshakeMessage["_tag"]>(ctx: HandshakeContext, tag: T) =>
  Effect.flatMap(ctx.receive, (m) =>
    m._tag === tag
      ? Effect.succeed(m as Extract<HandshakeMessage, { _tag: T }>)
      : Effect.fail(new HandshakeFailed({ reason: `expected ${tag}, got ${m._tag}` }))
  )

/**
 * The default trust handshake. Over a Noise session the peer already proved its key, node id and network (and the
 * network key) inside the Noise handshake, so it is trusted without another message; on a plain-text channel both
 * sides exchange HandshakeProof and HandshakeVerdict. A verdict reached without a message is returned as an Exit
 * (an Effect that has already completed), which lets the channel skip the race and timer a message exchange needs.
 */
export const defaultHandshake = (ctx: HandshakeContext): Effect.Effect<Verdict, HandshakeFailed | ConnectionLost> =>
  ctx.session !== undefined &&
  ctx.session.nodeId === ctx.remoteHello.nodeId &&
  ctx.session.network === ctx.settings.network
    ? Exit.succeed(Verdict.Trusted())
    : proofExchange(ctx)

const proofExchange = (ctx: HandshakeContext): Effect.Effect<Verdict, HandshakeFailed | ConnectionLost> =>
  Effect.gen(function* () {
    const data = transcript(ctx.settings.network, ctx.localHello, ctx.remoteHello)
    yield* ctx.send(
      HandshakeProof.make({
        signature: Buffer.from(ctx.local.sign(data)).toString("base64"),
        networkMac: mac(ctx.settings.networkKey, data)
      })
    )
    const proof = yield* expect(ctx, "HandshakeProof")
    const problem = checkProof(ctx.settings, ctx.localHello, ctx.remoteHello, proof)
    yield* ctx.send(HandshakeVerdict.make({ accepted: problem === undefined, reason: problem ?? "ok" }))
    if (problem !== undefined) return Verdict.Rejected({ reason: problem })
    const theirs = yield* expect(ctx, "HandshakeVerdict")
    return theirs.accepted ? Verdict.Trusted() : Verdict.Rejected({ reason: `peer refused us: ${theirs.reason}` })
  }).pipe(Effect.withSpan("TrustHandshake.default", { attributes: { peer: ctx.remoteHello.nodeId } }))
