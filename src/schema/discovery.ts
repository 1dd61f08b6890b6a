/**
 * Data of LAN discovery: the signed discovery datagram, the reasons a received datagram is dropped, and the
 * DiscoverySettings with their defaults (the original's where it had one). docs/protocol.md ("LAN discovery")
 * describes the datagram byte for byte; src/actors/DiscoveryCodec.ts signs and verifies it.
 */
import { Schema } from "effect"
import { NodeId } from "./ids.js"

/** Version of the discovery datagram; a datagram of another version is dropped ("version"). */
export const DISCOVERY_VERSION = 1
/** What the signature and the network-key MAC cover starts with this label. */
export const DISCOVERY_DOMAIN = "effect-p2pnet/discovery"
/** Longest network name a datagram carries. */
export const MAX_NETWORK_NAME = 200

const bytesOfLength = (n: number) =>
  Schema.Uint8ArrayFromBase64.pipe(Schema.filter((b) => b.length === n || `expected ${n} bytes, got ${b.length}`))

/**
 * One announcement: "node `id`, holder of `publicKey`, of network `network`, accepts TCP connections on `port`".
 * It carries no address: a receiver dials the datagram's source address (the original dialled the address in the
 * payload, a reflection hole: B13).
 */
export class DiscoveryDatagram extends Schema.Class<DiscoveryDatagram>("DiscoveryDatagram")({
  version: Schema.Int,
  network: Schema.String.pipe(Schema.maxLength(MAX_NETWORK_NAME)),
  id: NodeId,
  /** The sender's TCP listening port. */
  port: Schema.Int.pipe(Schema.between(1, 65535)),
  /** Raw 32-byte Ed25519 public key (base64 on the wire); `id` must be derived from it. */
  publicKey: bytesOfLength(32),
  /** Sender's clock, epoch milliseconds. */
  sentAt: Schema.Int.pipe(Schema.nonNegative()),
  /** HMAC-SHA256 with the network key over the signed bytes, present iff the network has a key. */
  mac: Schema.optional(bytesOfLength(32)),
  /** Ed25519 signature by `publicKey` over the signed bytes. */
  signature: bytesOfLength(64)
}) {}

/** The datagram as JSON text on the wire. */
export const DiscoveryDatagramJson = Schema.parseJson(DiscoveryDatagram)

/**
 * The bytes the signature and the MAC cover: the UTF-8 of the JSON array
 * `[DISCOVERY_DOMAIN, version, network, id, port, base64(publicKey), sentAt]` (JSON.stringify, no spaces).
 */
export const signedBytes = (d: Omit<DiscoveryDatagram, "mac" | "signature">): Uint8Array =>
  new TextEncoder().encode(
    JSON.stringify([
      DISCOVERY_DOMAIN,
      d.version,
      d.network,
      d.id,
      d.port,
      Buffer.from(d.publicKey).toString("base64"),
      d.sentAt
    ])
  )

/** Why a received datagram was dropped; each is counted in `Discovery.stats`. */
export const DropReason = Schema.Literal(
  /** Interfaces mode "loopback": the source is outside 127.0.0.0/8. */
  "source",
  /** Longer than maxDatagramBytes (checked before parsing). */
  "oversized",
  /** Not UTF-8 JSON, or not a datagram of this shape (missing signature included). */
  "malformed",
  "version",
  /** Another network's name. */
  "network",
  /** `id` is not the identifier derived from `publicKey`. */
  "identity",
  "signature",
  /** The network-key MAC is missing, unexpected or wrong. */
  "networkKey",
  /** `sentAt` is further from this node's clock than maxAgeMillis. */
  "stale",
  /** This node's own announcement (its broadcast and loopback copies come back). */
  "self",
  /** The receive queue was full. */
  "overloaded"
)
export type DropReason = typeof DropReason.Type
export const dropReasons: ReadonlyArray<DropReason> = DropReason.literals

/** Which interfaces discovery uses: every up IPv4 interface plus loopback, or loopback only (one host). */
export const DiscoveryInterfaces = Schema.Literal("all", "loopback")
export type DiscoveryInterfaces = typeof DiscoveryInterfaces.Type

const PortNumber = Schema.Int.pipe(Schema.between(1, 65535))
const millis = (d: number) => Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => d })
const positive = (d: number) => Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => d })

const isMulticastIpv4 = (s: string) => {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s)
  return m !== null && m.slice(1).every((p) => Number(p) <= 255) && Number(m[1]) >= 224 && Number(m[1]) <= 239
}

export class DiscoverySettings extends Schema.Class<DiscoverySettings>("DiscoverySettings")(
  Schema.Struct({
    /** Start discovery when its layer is built. */
    enabled: Schema.optionalWith(Schema.Boolean, { default: () => true }),
    /** UDP ports listened on for broadcasts; the broadcaster sends to one of them (original: 8001, 8002, 8003). */
    designatedPorts: Schema.optionalWith(Schema.Array(PortNumber).pipe(Schema.minItems(1)), {
      default: () => [8001, 8002, 8003]
    }),
    /** The designated port broadcasts go to first; 0 picks one at random (the original's RandomizeBroadcasterPort). */
    broadcasterPort: Schema.optionalWith(Schema.Int.pipe(Schema.between(0, 65535)), { default: () => 0 }),
    /** Broadcast announcements (and listen on the designated ports). */
    broadcast: Schema.optionalWith(Schema.Boolean, { default: () => true }),
    /** Multicast announcements (and listen on the group). The original's multicast never worked (B11). */
    multicast: Schema.optionalWith(Schema.Boolean, { default: () => true }),
    /** Administratively scoped (RFC 2365) IPv4 group; an effect-p2pnet extension, C# nodes do not hear it. */
    multicastGroup: Schema.optionalWith(
      Schema.String.pipe(Schema.filter((s) => isMulticastIpv4(s) || "expected an IPv4 multicast group")),
      { default: () => "239.255.42.99" }
    ),
    multicastPort: Schema.optionalWith(PortNumber, { default: () => 8004 }),
    /** Hops multicast announcements may cross (1: this link only). Loopback mode always uses 0. */
    multicastTtl: Schema.optionalWith(Schema.Int.pipe(Schema.between(0, 255)), { default: () => 1 }),
    interfaces: Schema.optionalWith(DiscoveryInterfaces, { default: () => "all" as const }),
    /** Shortest wait between announcements, at the top of the sine (original: 1000 ms). */
    fastIntervalMillis: positive(1_000),
    /** Longest wait, at the bottom of the sine and when throttled (original: 20 000 ms). */
    slowIntervalMillis: positive(20_000),
    /** Period of the sine the wait follows (original: 120 000 ms). */
    wavePeriodMillis: positive(120_000),
    /** Random extra wait added to each interval, from min (inclusive) to max (exclusive) (original: 100-299 ms). */
    jitterMinMillis: millis(100),
    jitterMaxMillis: millis(300),
    /** With this many trusted channels the broadcaster slows to slowIntervalMillis; 0 never throttles. */
    enoughPeers: millis(8),
    /** Longer datagrams are dropped before parsing. */
    maxDatagramBytes: Schema.optionalWith(Schema.Int.pipe(Schema.between(256, 65507)), { default: () => 1024 }),
    /** A datagram whose sentAt is further than this from the local clock is dropped ("stale"). */
    maxAgeMillis: positive(60_000)
  }).pipe(
    Schema.filter((s) =>
      s.slowIntervalMillis < s.fastIntervalMillis
        ? "slowIntervalMillis must be at least fastIntervalMillis"
        : s.jitterMaxMillis < s.jitterMinMillis
          ? "jitterMaxMillis must be at least jitterMinMillis"
          : s.broadcasterPort !== 0 && !s.designatedPorts.includes(s.broadcasterPort)
            ? "broadcasterPort must be 0 or one of the designated ports"
            : true
    )
  )
) {}
