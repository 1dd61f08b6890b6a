/**
 * The node's Ed25519 key pair and the identifier derived from it. The identifier is the first 20 bytes of
 * SHA-256(raw public key) in hex, so a peer proves it owns an identifier by signing with the matching key.
 */
import { Context, Effect, Layer } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { KeyFileError } from "../schema/errors.js"
import type { NodeId } from "../schema/ids.js"
import { NetworkConfig } from "./Settings.js"

const SPKI_ED25519_PREFIX = Buffer.from("302a300506032b6570032100", "hex")

export const nodeIdFromPublicKey = (raw: Uint8Array): NodeId =>
  crypto.createHash("sha256").update(raw).digest("hex").slice(0, 40) as NodeId

/** Verifies an Ed25519 signature with a raw 32-byte public key; false (never a throw) on any malformed input. */
export const verifySignature = (rawPublicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean => {
  if (rawPublicKey.length !== 32 || signature.length !== 64) return false
  try {
    const key = crypto.createPublicKey({
      key: Buffer.concat([SPKI_ED25519_PREFIX, rawPublicKey]),
      format: "der",
      type: "spki"
    })
    return crypto.verify(null, data, key, signature)
  } catch {
    return false
  }
}

export interface NodeKeys {
  readonly id: NodeId
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array
  readonly sign: (data: Uint8Array) => Uint8Array
  /** PKCS#8 PEM of the private key, to persist or hand to another process. */
  readonly privateKeyPem: string
}

export const keysFromPrivateKey = (privateKey: crypto.KeyObject): NodeKeys => {
  const spki = crypto.createPublicKey(privateKey).export({ format: "der", type: "spki" })
  const publicKey = new Uint8Array(spki.subarray(spki.length - 32))
  return {
    id: nodeIdFromPublicKey(publicKey),
    publicKey,
    sign: (data) => new Uint8Array(crypto.sign(null, data, privateKey)),
    privateKeyPem: privateKey.export({ format: "pem", type: "pkcs8" }).toString()
  }
}

export const generateKeys = (): NodeKeys => keysFromPrivateKey(crypto.generateKeyPairSync("ed25519").privateKey)

export const keysFromPem = (pem: string): NodeKeys => keysFromPrivateKey(crypto.createPrivateKey(pem))

/** Loads the key from `file`, or creates it (mode 0600) when the file does not exist. */
export const loadOrCreateKeys = (file: string) =>
  Effect.try({
    try: () => {
      if (fs.existsSync(file)) return keysFromPem(fs.readFileSync(file, "utf8"))
      const keys = generateKeys()
      fs.mkdirSync(path.dirname(file), { recursive: true })
      fs.writeFileSync(file, keys.privateKeyPem, { mode: 0o600 })
      return keys
    },
    catch: (e) => new KeyFileError({ path: file, detail: e instanceof Error ? e.message : String(e) })
  })

export class NodeIdentity extends Context.Tag("effect-p2pnet/NodeIdentity")<NodeIdentity, NodeKeys>() {
  /** A fresh key pair. */
  static readonly layer = Layer.sync(this, generateKeys)
  /** Given keys (tests, or keys kept elsewhere). */
  static readonly layerKeys = (keys: NodeKeys) => Layer.succeed(this, keys)
  /** From NetworkConfig.keyFile when set, else a fresh key pair. */
  static readonly layerConfig = Layer.effect(
    this,
    Effect.flatMap(NetworkConfig, (s) => (s.keyFile === "" ? Effect.sync(generateKeys) : loadOrCreateKeys(s.keyFile)))
  )
}
