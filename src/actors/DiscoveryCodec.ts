/**
 * Signing and checking discovery datagrams. `encodeAnnouncement` builds this node's datagram; `checkDatagram` runs a
 * received one through every check in a fixed order and says why it is dropped. Neither throws, whatever the bytes.
 */
import { Either, Schema } from "effect"
import * as crypto from "node:crypto"
import type { NodeKeys } from "../layers/NodeIdentity.js"
import { nodeIdFromPublicKey, verifySignature } from "../layers/NodeIdentity.js"
import type { DropReason } from "../schema/discovery.js"
import { DISCOVERY_VERSION, DiscoveryDatagram, DiscoveryDatagramJson, signedBytes } from "../schema/discovery.js"

const mac = (networkKey: string, data: Uint8Array) =>
  new Uint8Array(crypto.createHmac("sha256", networkKey).update(data).digest())

/** This node's announcement as the bytes to send. */
export const encodeAnnouncement = (
  keys: NodeKeys,
  fields: { readonly network: string; readonly networkKey: string; readonly port: number; readonly sentAt: number }
): Uint8Array => {
  const unsigned = {
    version: DISCOVERY_VERSION,
    network: fields.network,
    id: keys.id,
    port: fields.port,
    publicKey: keys.publicKey,
    sentAt: fields.sentAt
  }
  const signed = signedBytes(unsigned)
  const datagram = DiscoveryDatagram.make({
    ...unsigned,
    ...(fields.networkKey === "" ? {} : { mac: mac(fields.networkKey, signed) }),
    signature: keys.sign(signed)
  })
  return new TextEncoder().encode(Schema.encodeSync(DiscoveryDatagramJson)(datagram))
}

export interface Rejection {
  readonly reason: DropReason
  readonly detail: string
}

export interface CheckContext {
  readonly network: string
  readonly networkKey: string
  readonly self: string
  readonly now: number
  readonly maxAgeMillis: number
  readonly maxDatagramBytes: number
}

const utf8 = new TextDecoder("utf-8", { fatal: true })
const reject = (reason: DropReason, detail: string) => Either.left<Rejection>({ reason, detail })
const decode = Schema.decodeUnknownEither(DiscoveryDatagram)

/**
 * The checks, in order: size (before parsing), UTF-8 JSON, version, shape, network name, identifier derived from the
 * key, signature, network-key MAC, timestamp window, not this node itself.
 */
export const checkDatagram = (bytes: Uint8Array, ctx: CheckContext): Either.Either<DiscoveryDatagram, Rejection> => {
  if (bytes.length > ctx.maxDatagramBytes) {
    return reject("oversized", `${bytes.length} bytes, limit ${ctx.maxDatagramBytes}`)
  }
  let json: unknown
  try {
    json = JSON.parse(utf8.decode(bytes))
  } catch (e) {
    return reject("malformed", e instanceof Error ? e.message : "not UTF-8 JSON")
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) return reject("malformed", "not an object")
  const version = (json as { version?: unknown }).version
  if (typeof version === "number" && version !== DISCOVERY_VERSION) {
    return reject("version", `version ${version}, expected ${DISCOVERY_VERSION}`)
  }
  const decoded = decode(json)
  if (Either.isLeft(decoded)) return reject("malformed", decoded.left.message.slice(0, 300))
  const d = decoded.right
  if (d.network !== ctx.network) return reject("network", `network ${JSON.stringify(d.network)}`)
  if (nodeIdFromPublicKey(d.publicKey) !== d.id) return reject("identity", `id ${d.id} is not derived from the key`)
  const signed = signedBytes(d)
  if (!verifySignature(d.publicKey, signed, d.signature)) return reject("signature", `bad signature from ${d.id}`)
  if (ctx.networkKey === "" ? d.mac !== undefined : d.mac === undefined) {
    return reject("networkKey", d.mac === undefined ? "no network-key MAC" : "MAC present but no network key here")
  }
  if (d.mac !== undefined && !crypto.timingSafeEqual(d.mac, mac(ctx.networkKey, signed))) {
    return reject("networkKey", "wrong network-key MAC")
  }
  if (Math.abs(ctx.now - d.sentAt) > ctx.maxAgeMillis) {
    return reject("stale", `sent ${Math.round((ctx.now - d.sentAt) / 1000)} s from this node's clock`)
  }
  if (d.id === ctx.self) return reject("self", "own announcement")
  return Either.right(d)
}
