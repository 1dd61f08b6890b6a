/**
 * The bundled node program (`npm start`): a peer that listens, dials the peers it is given, finds others by LAN
 * discovery (broadcast and multicast, src/layers/Discovery.ts) and prints one line per event. Options come from
 * command-line flags (@effect/cli) and P2P_* environment variables (Effect Config), flags winning; README.md lists
 * them. Ctrl-C (SIGINT) or SIGTERM closes the node's scope: channels say Disconnect, sockets and fibers close.
 * The test bed's node (test/support/bed-node.ts) runs the same node through `nodeLayer` and `startNode`.
 */
import { Command, Options } from "@effect/cli"
import { Config, Console, DateTime, Effect, Layer, Option, Schema, Stream } from "effect"
import type { CloseReason } from "../schema/errors.js"
import { Category, loggingLayerConfig } from "../layers/Logging.js"
import { networkLayerConfig } from "../layers/Network.js"
import { PeerNetwork } from "../layers/PeerNetwork.js"
import type { NetworkEvent } from "../layers/PeerRegistry.js"
import { NetworkConfig } from "../layers/Settings.js"
import { discoveryLayerConfig } from "../layers/Discovery.js"
import { bootstrapClientLayer, bootstrapSettingsFromEnv } from "../layers/BootstrapClient.js"
import { PublicAddress } from "../layers/PublicAddress.js"
import { FetchHttpClient } from "@effect/platform"
import { bootstrapCommand } from "./bootstrap.js"
import { compatSettingsFromEnv } from "../layers/Compat.js"
import { compatLayerFrom } from "../layers/Compatibility.js"
import { CompatSettings } from "../schema/compat.js"
import { LegacyBootstrapClient } from "../layers/LegacyBootstrapClient.js"
import { configProvider, invalid, logLevelFlag, main, onOff, portFlag, variables } from "./flags.js"

// ---------------------------------------------------------------------------------------------------------------------
// The node's layers
// ---------------------------------------------------------------------------------------------------------------------

/**
 * A whole node configured from P2P_* settings: the network and, when P2P_DISCOVERY is on (the default), LAN discovery
 * on top of it (src/layers/Discovery.ts; it reads P2P_BROADCAST, P2P_MULTICAST, P2P_DESIGNATED_PORTS and the other
 * discovery variables, which the flags below set through the ConfigProvider). Without discovery: drop the
 * `discovery ? ... :` branch (or pass --no-discovery).
 */
export const nodeLayer = Layer.unwrapEffect(
  Effect.map(Config.boolean("P2P_DISCOVERY").pipe(Config.withDefault(true)), (discovery) => {
    const network = networkLayerConfig()
    return discovery ? Layer.provideMerge(discoveryLayerConfig, network) : network
  })
)

/** The node layer, with the WAN bootstrap client on top when P2P_BOOTSTRAP or P2P_BOOTSTRAP_AUTHORITY names servers. */
export const nodeLayerWithBootstrap = Layer.unwrapEffect(
  Effect.map(bootstrapSettingsFromEnv, (settings) =>
    (settings.servers ?? []).length === 0
      ? nodeLayer
      : Layer.provideMerge(
          Layer.merge(
            bootstrapClientLayer(settings),
            // where the node is seen from: its bootstrap servers' public-IP endpoints, asked once in the background
            Layer.effectDiscard(Effect.flatMap(PublicAddress, (address) => address.refresh)).pipe(
              Layer.provideMerge(
                PublicAddress.layerConfigWithBootstrap((settings.servers ?? []).map((s) => s.url)).pipe(
                  Layer.provide(FetchHttpClient.layer)
                )
              )
            )
          ),
          nodeLayer
        )
  )
)

/**
 * The node layer with the compatibility profile on top when P2P_COMPAT is on (`--compat`, src/layers/Compat.ts):
 * unmodified P2PNet (.NET) peers are accepted on a legacy listener (8051..8999 unless P2P_COMPAT_PORT), found by legacy
 * LAN discovery (UDP 8001-8003), dialled at P2P_COMPAT_PEERS (`--legacy-peer`), and found through the legacy bootstrap
 * servers of P2P_COMPAT_BOOTSTRAP (`--legacy-bootstrap`, src/layers/CompatBootstrap.ts). Here the original's "Ping from"
 * trust is on unless P2P_COMPAT_PING_TRUST=false, since .NET peers have no other way to trust: it authenticates
 * nothing, and the node says so at Warning level. Legacy channels are never encrypted.
 */
export const nodeLayerWithCompat = Layer.unwrapEffect(
  Effect.gen(function* () {
    if (!(yield* Config.boolean("P2P_COMPAT").pipe(Config.withDefault(false)))) return nodeLayerWithBootstrap
    const settings = yield* compatSettingsFromEnv
    const pingTrust = yield* Config.boolean("P2P_COMPAT_PING_TRUST").pipe(Config.withDefault(true))
    return Layer.provideMerge(
      compatLayerFrom(CompatSettings.make({ ...settings, pingTrust }), {
        bootstrapClient: LegacyBootstrapClient.layerConfig
      }),
      nodeLayerWithBootstrap
    )
  })
)

// ---------------------------------------------------------------------------------------------------------------------
// Events: what the node prints, one line each (text for people, JSON lines with P2P_LOG_FORMAT=json)
// ---------------------------------------------------------------------------------------------------------------------

export const Listening = Schema.Struct({
  event: Schema.tag("listening"),
  address: Schema.String,
  port: Schema.Int,
  id: Schema.String,
  network: Schema.String,
  /** How channels are protected: "noise" or "plain". */
  session: Schema.String
})
/** A peer became known without a channel to it yet (from discovery or a PeerGroup). */
export const Discovered = Schema.Struct({
  event: Schema.tag("discovered"),
  address: Schema.String,
  port: Schema.Int,
  id: Schema.NullOr(Schema.String)
})
/** A channel changed state: `handshaking` when it opens (connected), then trusted / untrusted / ... / closed. */
export const ChannelChanged = Schema.Struct({
  event: Schema.tag("channel"),
  peer: Schema.String,
  state: Schema.Literal("handshaking", "untrusted", "trusted", "reconnecting", "closed"),
  address: Schema.String,
  port: Schema.Int,
  direction: Schema.Literal("inbound", "outbound"),
  reason: Schema.optional(Schema.String)
})
export const MessageReceived = Schema.Struct({ event: Schema.tag("message"), from: Schema.String, text: Schema.String })
/** Any other packet received. */
export const PacketSeen = Schema.Struct({ event: Schema.tag("received"), from: Schema.String, kind: Schema.String })
export const DialFailed = Schema.Struct({
  event: Schema.tag("dial-failed"),
  peer: Schema.String,
  reason: Schema.String
})
export const Stopped = Schema.Struct({ event: Schema.tag("stopped") })
export const NodeEvent = Schema.Union(
  Listening,
  Discovered,
  ChannelChanged,
  MessageReceived,
  PacketSeen,
  DialFailed,
  Stopped
)
export type NodeEvent = typeof NodeEvent.Type

/** One line of text per event; remote text is JSON-quoted so a peer cannot write control characters to a terminal. */
export const renderEvent = (e: NodeEvent): string => {
  switch (e.event) {
    case "listening":
      return `listening on ${hostPort(e.address, e.port)} as ${e.id} (network ${JSON.stringify(e.network)}, ${
        e.session === "plain" ? "plain text: NOT encrypted" : "noise: encrypted and authenticated"
      })`
    case "discovered":
      return `discovered ${hostPort(e.address, e.port)}${e.id === null ? "" : ` ${e.id}`}`
    case "channel": {
      const at = `${e.peer} at ${hostPort(e.address, e.port)}`
      const why = e.reason === undefined ? "" : `: ${e.reason}`
      switch (e.state) {
        case "handshaking":
          return `connected ${at} (${e.direction})`
        case "trusted":
          return `trusted ${at}`
        case "untrusted":
          return `not trusted ${at}`
        case "reconnecting":
          return `reconnecting ${at}${why}`
        case "closed":
          return `disconnected ${at}${why}`
      }
    }
    case "message":
      return `message from ${e.from}: ${JSON.stringify(e.text)}`
    case "received":
      return `received ${e.kind} from ${e.from}`
    case "dial-failed":
      return `could not connect to ${e.peer}: ${e.reason}`
    case "stopped":
      return "stopped"
  }
}

const hostPort = (host: string, port: number) => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`)

/** "host:port" or "[v6]:port". */
const parsePeer = (s: string): { readonly host: string; readonly port: number } | undefined => {
  const i = s.lastIndexOf(":")
  const port = Number(s.slice(i + 1))
  const host = s.slice(0, i).replace(/^\[|\]$/g, "")
  return i > 0 && host !== "" && Number.isInteger(port) && port >= 1 && port <= 65535 ? { host, port } : undefined
}

const reasonText = (reason: CloseReason | undefined) => (reason === undefined ? undefined : reason.message)

// ---------------------------------------------------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------------------------------------------------

/**
 * Starts reporting the node's events to `emit` (subscribed before anything can happen, so nothing is missed), reports
 * where it listens, and dials the peers of P2P_PEERS ("host:port,host:port") in the background. Returns the network;
 * the reporting fibers live as long as the scope.
 */
export const startNode = (emit: (event: NodeEvent) => Effect.Effect<void>) =>
  Effect.gen(function* () {
    const network = yield* PeerNetwork
    const settings = yield* NetworkConfig
    const registry = network.registry
    const events = yield* registry.subscribeEvents
    const packets = yield* registry.subscribePackets
    const onEvent = (e: NetworkEvent): Effect.Effect<void> => {
      switch (e._tag) {
        case "ChannelStateChanged":
          return emit(
            ChannelChanged.make({
              peer: e.channel.remoteId,
              state: e.state,
              address: e.channel.address,
              port: e.channel.port,
              direction: e.channel.direction,
              ...(e.reason === undefined ? {} : { reason: reasonText(e.reason) })
            })
          )
        case "PeerAdded": {
          // a channel's own peer is recorded as known when it opens: that is "connected", not "discovered"
          const discovered = emit(Discovered.make({ address: e.peer.address, port: e.peer.port, id: e.peer.id }))
          return e.peer.id === null
            ? discovered
            : Effect.flatMap(Effect.either(registry.channel(e.peer.id)), (found) =>
                found._tag === "Right" ? Effect.void : discovered
              )
        }
        default:
          return Effect.void
      }
    }
    yield* Effect.forkScoped(Stream.runForEach(events, onEvent))
    yield* Effect.forkScoped(
      Stream.runForEach(packets, ({ channel, packet }) =>
        packet._tag === "PureMessage"
          ? emit(MessageReceived.make({ from: channel.remoteId, text: packet.message }))
          : emit(PacketSeen.make({ from: channel.remoteId, kind: packet._tag }))
      )
    )
    yield* emit(
      Listening.make({
        address: settings.host,
        port: network.port,
        id: network.id,
        network: settings.network,
        session: settings.session
      })
    )
    const peers = yield* Config.array(Config.string(), "P2P_PEERS").pipe(Config.withDefault([]))
    for (const peer of peers.map((p) => p.trim()).filter((p) => p !== "")) {
      const target = parsePeer(peer)
      yield* Effect.forkScoped(
        target === undefined
          ? emit(DialFailed.make({ peer, reason: "expected host:port" }))
          : network.dial(target.host, target.port).pipe(
              Effect.asVoid,
              Effect.catchAll((e) => emit(DialFailed.make({ peer, reason: e.message })))
            )
      )
    }
    return network
  }).pipe(Effect.annotateLogs({ category: Category.Peers }))

/** Prints events on stdout: text lines, or JSON lines when P2P_LOG_FORMAT is json. */
const printEvents = Effect.map(
  Config.literal("pretty", "json")("P2P_LOG_FORMAT").pipe(Config.withDefault("pretty")),
  (format) =>
    (event: NodeEvent): Effect.Effect<void> =>
      Effect.flatMap(DateTime.now, (now) => {
        const time = DateTime.formatIso(now)
        return format === "json"
          ? Console.log(JSON.stringify({ time, ...Schema.encodeSync(NodeEvent)(event) }))
          : Console.log(`${time.slice(11, 23)} ${renderEvent(event)}`)
      })
)

/** The program: a node that runs until interrupted, printing its events. */
export const program = Effect.gen(function* () {
  const emit = yield* printEvents
  const network = yield* startNode(emit)
  yield* Console.log(`node ${network.id} running; press Ctrl-C to stop`)
  return yield* Effect.never.pipe(Effect.onInterrupt(() => emit(Stopped.make({}))))
})

// ---------------------------------------------------------------------------------------------------------------------
// Command line: each flag overrides its P2P_* variable (flags > environment > defaults)
// ---------------------------------------------------------------------------------------------------------------------

/** `--name` / `--no-name` for a setting that is on by default. */
const toggle = (name: string, what: string, variable: string) =>
  onOff(name, `Turn ${what} on (${variable}, default on).`, `Turn ${what} off (${variable}=false).`)

const portList = (text: string) => {
  const ports = text.split(",").map((p) => p.trim())
  return ports.every((p) => /^\d+$/.test(p) && Number(p) >= 1 && Number(p) <= 65535)
    ? Effect.succeed(ports.map(Number))
    : invalid(`expected ports from 1 to 65535 separated by commas, got ${JSON.stringify(text)}`)
}

export const flags = {
  port: portFlag("TCP listening port; 0 picks a free one (P2P_PORT, default 0)."),
  host: Options.text("host").pipe(
    Options.withDescription("Address the listener binds (P2P_HOST, default 0.0.0.0)."),
    Options.optional
  ),
  network: Options.text("network").pipe(
    Options.withAlias("n"),
    Options.withDescription("Network name; peers of other networks are refused (P2P_NETWORK, default p2pnet)."),
    Options.optional
  ),
  bootstrap: Options.text("bootstrap").pipe(
    Options.withDescription("A trustless bootstrap server URL; repeat for more (P2P_BOOTSTRAP, comma-separated)."),
    Options.repeated
  ),
  peers: Options.text("peer").pipe(
    Options.withDescription("A peer to dial at start, host:port; repeat for more (P2P_PEERS, comma-separated)."),
    Options.repeated
  ),
  keyFile: Options.text("key-file").pipe(
    Options.withDescription("Ed25519 key (PKCS#8 PEM), created if missing: a stable identity (P2P_KEY_FILE)."),
    Options.optional
  ),
  designatedPorts: Options.text("designated-ports").pipe(
    Options.withDescription(
      "UDP ports of LAN discovery, comma-separated (P2P_DESIGNATED_PORTS, default 8001,8002,8003)."
    ),
    Options.mapEffect(portList),
    Options.optional
  ),
  discovery: toggle("discovery", "LAN discovery", "P2P_DISCOVERY"),
  broadcast: toggle("broadcast", "discovery by broadcast", "P2P_BROADCAST"),
  multicast: toggle("multicast", "discovery by multicast", "P2P_MULTICAST"),
  compat: onOff(
    "compat",
    "Compatibility profile: also talk to unmodified P2PNet (.NET) peers on their own wire, with their " +
      "unauthenticated ping trust (P2P_COMPAT, default off; P2P_COMPAT_* settings in README).",
    "No compatibility profile (P2P_COMPAT=false)."
  ),
  legacyPeers: Options.text("legacy-peer").pipe(
    Options.withDescription(
      "A P2PNet (.NET) peer to dial at start with --compat, host:port; repeat for more (P2P_COMPAT_PEERS)."
    ),
    Options.repeated
  ),
  legacyBootstrap: Options.text("legacy-bootstrap").pipe(
    Options.withDescription(
      "A P2PNet (.NET) bootstrap server URL to join with --compat (peers request, then a heartbeat every 8 s); " +
        "repeat for more (P2P_COMPAT_BOOTSTRAP, comma-separated). Tasks it sends are logged, never executed."
    ),
    Options.repeated
  ),
  logFormat: Options.choice("log-format", ["pretty", "json"]).pipe(
    Options.withDescription("pretty text or JSON lines, for events and logs (P2P_LOG_FORMAT, default pretty)."),
    Options.optional
  ),
  session: Options.choice("session", ["noise", "plain"]).pipe(
    Options.withDescription(
      "noise encrypts and authenticates every channel (P2P_SESSION, default noise); plain is clear text for " +
        "debugging, and peers must choose the same: a noise node refuses a plain one."
    ),
    Options.optional
  )
}

type Flags = Command.Command.ParseConfig<typeof flags>

/** The variables the given flags override (absent flags leave their variable, or its default, in force). */
export const flagVariables = (f: Flags, logLevel: Option.Option<string>): Map<string, string> =>
  variables({
    P2P_PORT: f.port,
    P2P_HOST: f.host,
    P2P_NETWORK: f.network,
    P2P_PEERS: f.peers,
    P2P_BOOTSTRAP: f.bootstrap,
    P2P_KEY_FILE: f.keyFile,
    P2P_DESIGNATED_PORTS: f.designatedPorts,
    P2P_DISCOVERY: f.discovery,
    P2P_BROADCAST: f.broadcast,
    P2P_MULTICAST: f.multicast,
    P2P_LOG_FORMAT: f.logFormat,
    P2P_COMPAT: f.compat,
    P2P_COMPAT_PEERS: f.legacyPeers,
    P2P_COMPAT_BOOTSTRAP: f.legacyBootstrap,
    P2P_SESSION: f.session,
    P2P_LOG_LEVEL: logLevel
  })

/** Flags, then the environment, then the program's defaults (shared with the bootstrap program). */
export { configProvider }

export const command = Command.make("p2pnet-node", flags, (f) =>
  Effect.gen(function* () {
    const provider = configProvider(flagVariables(f, yield* logLevelFlag))
    return yield* Effect.scoped(program).pipe(
      Effect.provide(nodeLayerWithCompat),
      Effect.provide(loggingLayerConfig),
      Effect.withConfigProvider(provider)
    )
  })
).pipe(
  Command.withDescription("Run an effect-p2pnet peer node; every flag overrides its P2P_* variable."),
  // `p2pnet-node bootstrap ...` runs the bootstrap server instead (src/programs/bootstrap.ts)
  Command.withSubcommands([bootstrapCommand])
)

main(import.meta.url, command, { name: "p2pnet-node", version: "0.1.0" })
