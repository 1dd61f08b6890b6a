/**
 * The line protocol between a test and a test-bed node (test/support/bed-node.ts): JSON-line commands on the node's
 * stdin, JSON-line events on its stdout. Events are the node program's own (src/programs/node.ts) plus the answers to
 * commands; the test process reaches bed nodes only this way, never over the network (see testbed.ts).
 */
import { Schema } from "effect"
import { NodeEvent } from "../../src/programs/node.js"

export const BedCommand = Schema.Union(
  /** Build and start the node (only awaited when started with P2P_BED_HOLD=true). */
  Schema.Struct({ cmd: Schema.tag("start") }),
  /** Broadcast a PureMessage to every trusted channel; answered by a `broadcast` event. */
  Schema.Struct({ cmd: Schema.tag("broadcast"), text: Schema.String }),
  /** Answered by a `peers` event. */
  Schema.Struct({ cmd: Schema.tag("peers") }),
  /** Answered by a `stats` event. */
  Schema.Struct({ cmd: Schema.tag("stats") }),
  /** Answered by a `known` event: the node's known peers (channels or not). */
  Schema.Struct({ cmd: Schema.tag("known") }),
  /** Dial a peer (from inside the node's namespace); a failure is a `dial-failed` event. */
  Schema.Struct({ cmd: Schema.tag("dial"), host: Schema.String, port: Schema.Int }),
  /** Stop the node: its scope closes and the process exits 0. Closing stdin does the same. */
  Schema.Struct({ cmd: Schema.tag("quit") })
)
export type BedCommand = typeof BedCommand.Type

export const PeerInfo = Schema.Struct({
  peer: Schema.String,
  state: Schema.String,
  address: Schema.String,
  port: Schema.Int,
  direction: Schema.String
})
export type PeerInfo = typeof PeerInfo.Type

const counts = Schema.Record({ key: Schema.String, value: Schema.Number })

/** Discovery.stats, plus what the bed node tallied from Discovery's events since it started. */
export const LanStats = Schema.Struct({
  running: Schema.Boolean,
  broadcasterPort: Schema.Number,
  listening: Schema.Array(Schema.Number),
  sent: Schema.Number,
  sendFailures: Schema.Number,
  received: Schema.Number,
  accepted: Schema.Number,
  offered: Schema.Number,
  /** By drop reason. */
  dropped: counts,
  /** Valid announcements by sender id, by how they came. */
  heard: Schema.Record({
    key: Schema.String,
    value: Schema.Struct({ address: Schema.String, broadcast: Schema.Number, multicast: Schema.Number })
  }),
  /** Dropped datagrams by source address, then by reason. */
  droppedFrom: Schema.Record({ key: Schema.String, value: counts })
})
export type LanStats = typeof LanStats.Type

export const BedAnswer = Schema.Union(
  /** With P2P_BED_HOLD=true: the modules are loaded and the node waits for {"cmd":"start"}. */
  Schema.Struct({ event: Schema.tag("loaded") }),
  Schema.Struct({ event: Schema.tag("peers"), peers: Schema.Array(PeerInfo) }),
  Schema.Struct({
    event: Schema.tag("stats"),
    connector: Schema.Struct({
      refused: Schema.Number,
      duplicates: Schema.Number,
      dropped: Schema.Number,
      dialled: Schema.Number,
      failed: Schema.Number
    }),
    /** LAN discovery's counters, null while the node runs without discovery. */
    discovery: Schema.NullOr(LanStats)
  }),
  Schema.Struct({
    event: Schema.tag("known"),
    peers: Schema.Array(Schema.Struct({ address: Schema.String, port: Schema.Int, id: Schema.NullOr(Schema.String) }))
  }),
  Schema.Struct({
    event: Schema.tag("broadcast"),
    text: Schema.String,
    accepted: Schema.Number,
    refused: Schema.Number
  }),
  /** A command line that did not decode. */
  Schema.Struct({ event: Schema.tag("bad-command"), line: Schema.String, reason: Schema.String }),
  /** The guard refused to run the node (not in its test-bed namespace); the process exits with an error. */
  Schema.Struct({ event: Schema.tag("refused"), reason: Schema.String })
)

export const BedEvent = Schema.Union(NodeEvent, BedAnswer)
export type BedEvent = typeof BedEvent.Type
export type BedEventOf<K extends BedEvent["event"]> = Extract<BedEvent, { readonly event: K }>

export const encodeCommand = (command: BedCommand): string => JSON.stringify(Schema.encodeSync(BedCommand)(command))
export const encodeEvent = (event: BedEvent): string => JSON.stringify(Schema.encodeSync(BedEvent)(event))
export const decodeCommand = Schema.decodeEither(Schema.parseJson(BedCommand))
export const decodeEvent = Schema.decodeUnknownOption(BedEvent)
