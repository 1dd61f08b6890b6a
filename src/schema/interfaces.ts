/**
 * The machine's network interfaces as the interface scan reports them (layers/Interfaces.ts): per interface its IPv4
 * addresses with netmask, prefix and broadcast address, its IPv6 addresses, whether it is loopback or internal, and
 * which one is primary. LAN discovery derives its broadcast targets and multicast interfaces from this table.
 */
import { Option, Schema } from "effect"

export class Ipv4Assignment extends Schema.Class<Ipv4Assignment>("Ipv4Assignment")({
  address: Schema.String,
  netmask: Schema.String,
  /** Prefix length (the "/24" of 192.168.1.20/24). */
  prefix: Schema.Int.pipe(Schema.between(0, 32)),
  /** Directed broadcast address (host bits all ones); none for /31 and /32, which have no broadcast. */
  broadcast: Schema.OptionFromSelf(Schema.String)
}) {}

export class Ipv6Assignment extends Schema.Class<Ipv6Assignment>("Ipv6Assignment")({
  address: Schema.String,
  netmask: Schema.String,
  prefix: Schema.Int.pipe(Schema.between(0, 128)),
  /** Zone index of link-local addresses (the "%4" of fe80::1%4). */
  scopeId: Schema.OptionFromSelf(Schema.Int)
}) {}

export class NetworkInterface extends Schema.Class<NetworkInterface>("NetworkInterface")({
  name: Schema.String,
  /** Not reachable from other hosts (node:os `internal`): loopback and the like. */
  internal: Schema.Boolean,
  /** Carries a loopback address (127.0.0.0/8 or ::1). */
  loopback: Schema.Boolean,
  mac: Schema.String,
  ipv4: Schema.Array(Ipv4Assignment),
  ipv6: Schema.Array(Ipv6Assignment),
  /** The interface this host is reached by: the first non-internal one with an IPv4 address (else loopback). */
  primary: Schema.Boolean
}) {}

export class InterfaceTable extends Schema.Class<InterfaceTable>("InterfaceTable")({
  interfaces: Schema.Array(NetworkInterface),
  /** Epoch milliseconds of the scan. */
  scannedAt: Schema.Number
}) {
  get primary(): Option.Option<NetworkInterface> {
    return Option.fromNullable(this.interfaces.find((i) => i.primary))
  }
  /** Only loopback / internal interfaces: discovery then reaches nodes on this host only. */
  get loopbackOnly(): boolean {
    return this.interfaces.every((i) => i.internal || i.loopback)
  }
}
