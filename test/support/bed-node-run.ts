/**
 * The test-bed node itself, loaded by bed-node.ts once its guard has passed: the node program's node
 * (src/programs/node.ts: settings from P2P_* variables, LAN discovery when P2P_DISCOVERY is true) speaking the line protocol of bed-protocol.ts: events as JSON lines on stdout, commands as JSON
 * lines on stdin. Logs go to stderr. Closing stdin, `{"cmd":"quit"}` or SIGTERM stops it cleanly.
 */
import { NodeRuntime, NodeStream } from "@effect/platform-node"
import { Cause, DateTime, Effect, Either, Layer, Logger, LogLevel, Option, Queue, Ref, Stream } from "effect"
import type { DiscoveryEvent } from "../../src/layers/Discovery.js"
import { Discovery } from "../../src/layers/Discovery.js"
import { DistributionHandler } from "../../src/layers/Distribution.js"
import { PeerConnector } from "../../src/layers/PeerConnector.js"
import { PeerNetwork } from "../../src/layers/PeerNetwork.js"
import { PureMessage } from "../../src/schema/packets.js"
import { DialFailed, nodeLayer, startNode } from "../../src/programs/node.js"
import type { BedCommand, BedEvent, LanStats } from "./bed-protocol.js"
import { decodeCommand, encodeEvent } from "./bed-protocol.js"

const emit = (event: BedEvent) => Effect.sync(() => process.stdout.write(encodeEvent(event) + "\n"))

type Tally = Pick<LanStats, "heard" | "droppedFrom">

const count = (tally: Tally, e: DiscoveryEvent): Tally => {
  if (e._tag === "Discovered") {
    const id = e.peer.id ?? e.peer.label
    const before = tally.heard[id] ?? { address: e.peer.address, broadcast: 0, multicast: 0 }
    return { ...tally, heard: { ...tally.heard, [id]: { ...before, [e.via]: before[e.via] + 1 } } }
  }
  const before = tally.droppedFrom[e.source] ?? {}
  return {
    ...tally,
    droppedFrom: { ...tally.droppedFrom, [e.source]: { ...before, [e.reason]: (before[e.reason] ?? 0) + 1 } }
  }
}

/** Who discovery heard (by sender id and way) and dropped (by source and reason), from its events since the start. */
const tallyDiscovery = Effect.gen(function* () {
  const tally = yield* Ref.make<Tally>({ heard: {}, droppedFrom: {} })
  const discovery = yield* Effect.serviceOption(Discovery)
  if (Option.isSome(discovery)) {
    const events = yield* discovery.value.subscribe
    yield* Effect.forkScoped(Stream.runForEach(events, (e) => Ref.update(tally, (t) => count(t, e))))
  }
  return tally
})

const handle = (command: BedCommand, tally: Ref.Ref<Tally>) =>
  Effect.gen(function* () {
    const network = yield* PeerNetwork
    switch (command.cmd) {
      case "broadcast": {
        const distribution = yield* DistributionHandler
        const packet = PureMessage.make({ message: command.text, origin: network.id, sentAt: yield* DateTime.now })
        const result = yield* distribution.broadcast(packet)
        return yield* emit({
          event: "broadcast",
          text: command.text,
          accepted: result.accepted,
          refused: result.refused.length
        })
      }
      case "peers": {
        const channels = yield* network.channels
        const peers = yield* Effect.forEach(channels, (c) =>
          Effect.map(c.state, (state) => ({
            peer: c.remoteId,
            state,
            address: c.address,
            port: c.port,
            direction: c.direction
          }))
        )
        return yield* emit({ event: "peers", peers })
      }
      case "stats": {
        const connector = yield* (yield* PeerConnector).stats
        const discovery = yield* Effect.serviceOption(Discovery)
        return yield* emit({
          event: "stats",
          connector,
          discovery: Option.isSome(discovery) ? { ...(yield* discovery.value.stats), ...(yield* Ref.get(tally)) } : null
        })
      }
      case "known": {
        const known = yield* network.registry.known
        return yield* emit({
          event: "known",
          peers: known.map((p) => ({ address: p.address, port: p.port, id: p.id }))
        })
      }
      case "dial":
        return yield* network.dial(command.host, command.port).pipe(
          Effect.asVoid,
          Effect.catchAll((e) => emit(DialFailed.make({ peer: `${command.host}:${command.port}`, reason: e.message }))),
          Effect.forkScoped,
          Effect.asVoid
        )
      case "start":
      case "quit":
        return
    }
  })

/** Lines of stdin on a queue; `undefined` once stdin has ended (the test closed it or went away). */
const stdinLines = Effect.gen(function* () {
  const lines = yield* Queue.unbounded<string | undefined>()
  yield* NodeStream.fromReadable<Error>(
    () => process.stdin,
    (e) => (e instanceof Error ? e : new Error(String(e)))
  ).pipe(
    Stream.decodeText(),
    Stream.splitLines,
    Stream.filter((line) => line.trim() !== ""),
    Stream.runForEach((line) => Queue.offer(lines, line)),
    Effect.catchAll((e) => Effect.logWarning(`stdin failed: ${e.message}`)),
    Effect.ensuring(Queue.offer(lines, undefined)),
    Effect.forkScoped
  )
  return lines
})

/** The next command, or undefined at the end of stdin; lines that do not decode are answered and skipped. */
const nextCommand = (lines: Queue.Dequeue<string | undefined>): Effect.Effect<BedCommand | undefined> =>
  Effect.flatMap(Queue.take(lines), (line) => {
    if (line === undefined) return Effect.succeed(undefined)
    return Either.match(decodeCommand(line), {
      onLeft: (e) => Effect.zipRight(emit({ event: "bad-command", line, reason: e.message }), nextCommand(lines)),
      onRight: Effect.succeed
    })
  })

const main = Effect.scoped(
  Effect.gen(function* () {
    const lines = yield* stdinLines
    // P2P_BED_HOLD: say when loaded (the slow part) and build the node on {"cmd":"start"}, so a test can load several
    // nodes side by side and still start listeners before the nodes that dial them
    if (process.env.P2P_BED_HOLD === "true") {
      yield* emit({ event: "loaded" })
      for (;;) {
        const command = yield* nextCommand(lines)
        if (command === undefined || command.cmd === "quit") return
        if (command.cmd === "start") break
      }
    }
    yield* Effect.scoped(
      Effect.gen(function* () {
        const tally = yield* tallyDiscovery
        yield* startNode(emit)
        for (;;) {
          const command = yield* nextCommand(lines)
          if (command === undefined || command.cmd === "quit") return
          yield* handle(command, tally)
        }
      }).pipe(Effect.provide(nodeLayer))
    )
  })
)

// logs on stderr, so stdout carries only the protocol
const logging = Layer.mergeAll(
  Logger.replace(Logger.defaultLogger, Logger.prettyLogger({ stderr: true, colors: false })),
  Logger.minimumLogLevel(LogLevel.fromLiteral((process.env.P2P_LOG_LEVEL as LogLevel.Literal | undefined) ?? "Warning"))
)

NodeRuntime.runMain(
  main.pipe(
    Effect.tapErrorCause((cause) => (Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logError(cause))),
    Effect.provide(logging)
  ),
  { disableErrorReporting: true, disablePrettyLogger: true }
)
