/**
 * Settings of the compatibility profile (layers/Compat.ts): how this node talks to unmodified P2PNet (.NET) peers on
 * their own wire (reference spec sections 1-4.1). Defaults are the original's where it has one; every timing and port
 * is configurable so tests can use ephemeral ports and short intervals.
 */
import { Schema } from "effect"

const int = (d: number) => Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => d })
const positive = (d: number) => Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => d })
const portNumber = Schema.Int.pipe(Schema.between(0, 65535))

/** An http or https base URL of a legacy (P2PNet .NET) bootstrap server; any path is replaced by the endpoint's (§8.1). */
export const LegacyBootstrapUrl = Schema.String.pipe(
  Schema.filter(
    (s) =>
      (URL.canParse(s) && ["http:", "https:"].includes(new URL(s).protocol)) ||
      `expected an http or https URL, got ${JSON.stringify(s)}`
  )
)

/** Legacy LAN discovery (spec 2): the original's JSON datagram on its designated ports. */
export class LegacyDiscoverySettings extends Schema.Class<LegacyDiscoverySettings>("LegacyDiscoverySettings")({
  /** Start legacy discovery with the profile. */
  enabled: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  /** UDP ports listened on (original: 8001, 8002, 8003). */
  designatedPorts: Schema.optionalWith(Schema.Array(portNumber.pipe(Schema.positive())), {
    default: () => [8001, 8002, 8003]
  }),
  /** The port datagrams are sent to; 0 picks one of the designated ports at random (the original's default). */
  broadcasterPort: Schema.optionalWith(portNumber, { default: () => 0 }),
  /**
   * "all": send to 255.255.255.255 and 127.0.0.1, listen on 0.0.0.0, advertise the primary IPv4 address;
   * "loopback": send to 127.0.0.1 only, listen on 127.0.0.1, advertise 127.0.0.1 (tests).
   */
  interfaces: Schema.optionalWith(Schema.Literal("all", "loopback"), { default: () => "all" as const }),
  /** The original's BroadcastRateControl: a sine between the fast and slow interval (1000..20000 ms, period 120 s). */
  fastIntervalMillis: positive(1_000),
  slowIntervalMillis: positive(20_000),
  wavePeriodMillis: positive(120_000),
  /** Added to every interval, uniformly (original: 100..299 ms). */
  jitterMinMillis: int(100),
  jitterMaxMillis: int(300),
  /** Pause between the broadcast copy and the loopback copy of one round (original: 500 ms). */
  loopbackDelayMillis: int(500),
  /** Larger datagrams are dropped unread. */
  maxDatagramBytes: positive(8 * 1024)
}) {}

export class CompatSettings extends Schema.Class<CompatSettings>("CompatSettings")({
  /** Accept legacy connections on a TCP listener of their own. */
  listen: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  /** Address the legacy listener binds (default: NetworkSettings.host). */
  host: Schema.optional(Schema.String),
  /**
   * The legacy listener's port. Absent: a random free port in the original's range 8051..8999 (spec 2.2); 0: any free
   * port chosen by the OS.
   */
  port: Schema.optional(portNumber),
  /** The original's listening-port range, used when `port` is absent. */
  portRangeStart: positive(8051),
  portRangeEnd: positive(8999),
  /** Written as SourceOriginIdentifier on everything sent to legacy peers (original default: ""). */
  identifier: Schema.optionalWith(Schema.String, { default: () => "" }),
  /** The address written in "Ping from <ip>" and discovery datagrams; empty: found from the interfaces. */
  advertisedAddress: Schema.optionalWith(Schema.String, { default: () => "" }),
  /** Least time between two packets written to one legacy peer (spec 1.4: at least 300 ms; .NET reads every 250 ms). */
  sendSpacingMillis: int(300),
  /** Legacy frames waiting for their turn on one connection before senders wait (back-pressure). */
  sendQueueCapacity: positive(256),
  /** Bytes the legacy stream parser holds for one incomplete frame (spec 1.4 suggests 16 MiB). */
  maxBufferBytes: positive(16 * 1024 * 1024),
  /** Bytes outside any frame accepted on one connection before it is closed as garbage. */
  maxJunkBytes: int(64 * 1024),
  /**
   * The original's default trust protocol (spec 4.1): "Ping from <ip>" every `pingIntervalMillis`, and a legacy peer
   * is trusted after `pingsToTrust` pings from it. It authenticates nothing (B15): off unless asked for.
   */
  pingTrust: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  pingIntervalMillis: positive(3_000),
  pingsToTrust: positive(3),
  /** Pings sent on one connection at most; the original pings forever while untrusted. */
  maxPings: positive(200),
  /** Legacy peers dialled at start ("host:port"). */
  peers: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }),
  /**
   * Legacy (P2PNet .NET) bootstrap servers joined at start (spec 8.3, layers/CompatBootstrap.ts): the peers request,
   * the listed peers dialled as legacy peers, then heartbeats. Empty: none.
   */
  bootstrap: Schema.optionalWith(Schema.Array(LegacyBootstrapUrl), { default: () => [] }),
  /** Between heartbeats to each legacy bootstrap server (original: 8000 ms, spec appendix A). */
  bootstrapHeartbeatMillis: positive(8_000),
  discovery: Schema.optionalWith(LegacyDiscoverySettings, { default: () => LegacyDiscoverySettings.make({}) })
}) {}

type Props<C extends abstract new (...args: any) => any> = Exclude<ConstructorParameters<C>[0], void | undefined>

/** CompatSettings as plain values, every field optional (the discovery ones too). */
export type CompatSettingsInput = Omit<Partial<Props<typeof CompatSettings>>, "discovery"> & {
  readonly discovery?: Partial<Props<typeof LegacyDiscoverySettings>>
}
