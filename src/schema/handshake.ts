/**
 * Messages of the connection handshake. `Hello` is sent by both sides after the preamble (the responder only once it
 * has admitted the initiator, or a `Reject` instead); what
 * follows is up to the TrustHandshake service (the default one exchanges `HandshakeProof` and `HandshakeVerdict`).
 * `Reject` tells the other side why it is being closed before the channel is open.
 */
import { Schema } from "effect"
import { NodeId, Port } from "./ids.js"

/** First frame on every connection, from both sides. */
export class Hello extends Schema.TaggedClass<Hello>()("Hello", {
  /** Wire protocol version the sender speaks (1). */
  version: Schema.Int,
  /** Network name; nodes of different networks refuse each other. */
  network: Schema.String,
  nodeId: NodeId,
  /** Raw 32-byte Ed25519 public key, base64. */
  publicKey: Schema.String,
  /** 32 fresh random bytes, base64: the challenge the other side must sign. */
  nonce: Schema.String,
  /** The sender's TCP listening port (0 if it does not listen). */
  listenPort: Port
}) {}

/** The default handshake's proof of key possession (and of the pre-shared network key when one is set). */
export class HandshakeProof extends Schema.TaggedClass<HandshakeProof>()("HandshakeProof", {
  /** Ed25519 signature, base64, over the transcript described in docs/protocol.md. */
  signature: Schema.String,
  /** HMAC-SHA256 with the network key over the same transcript, base64; empty when no key is configured. */
  networkMac: Schema.String
}) {}

/** The outcome one side reached; both sides must accept for the channel to become trusted. */
export class HandshakeVerdict extends Schema.TaggedClass<HandshakeVerdict>()("HandshakeVerdict", {
  accepted: Schema.Boolean,
  reason: Schema.String
}) {}

/** Free-form message for user-supplied handshakes. */
export class HandshakeData extends Schema.TaggedClass<HandshakeData>()("HandshakeData", {
  payload: Schema.Unknown
}) {}

/** Sent just before closing a connection that cannot proceed (wrong protocol, version, network, duplicate...). */
export class Reject extends Schema.TaggedClass<Reject>()("Reject", {
  reason: Schema.String
}) {}

export const HandshakeMessage = Schema.Union(HandshakeProof, HandshakeVerdict, HandshakeData)
export type HandshakeMessage = typeof HandshakeMessage.Type
