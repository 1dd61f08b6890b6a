/**
 * Branded primitives shared by packets, the registry and the wire protocol.
 * A NodeId is derived from the node's Ed25519 public key (see layers/NodeIdentity), so it cannot be chosen freely.
 */
import { Schema } from "effect"

/** A node identifier: 40 lowercase hex characters (the first 20 bytes of SHA-256 of the raw Ed25519 public key). */
export const NodeId = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{40}$/), Schema.brand("NodeId"))
export type NodeId = typeof NodeId.Type

/** A TCP or UDP port number. */
export const Port = Schema.Int.pipe(Schema.between(0, 65535), Schema.brand("Port"))
export type Port = typeof Port.Type

/** An IP address in textual form (IPv4 dotted or IPv6). */
export const IpAddress = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(64), Schema.brand("IpAddress"))
export type IpAddress = typeof IpAddress.Type

/** Where a peer can be reached, with its identifier once known. */
export class PeerAddress extends Schema.Class<PeerAddress>("PeerAddress")({
  address: IpAddress,
  port: Port,
  id: Schema.NullOr(NodeId)
}) {
  get label() {
    return this.address.includes(":") ? `[${this.address}]:${this.port}` : `${this.address}:${this.port}`
  }
}
