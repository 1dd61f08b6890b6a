/**
 * The receiving process of the channel benchmark, forked by bench/channel.ts with an IPC channel. It runs two
 * effect-p2pnet nodes on 127.0.0.1 (one with default settings, a Noise session; one with `session: "plain"`) and three
 * plain node:net servers for the baseline (small messages, bulk frames, echo). Once armed it counts what arrives on any path and reports when the count is reached.
 * It exits when told to, when its parent goes away, or after ten minutes at most.
 */
import { Context, DateTime, Effect, Layer, Logger, LogLevel, Queue, Stream } from "effect"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { FileTransfer } from "../src/layers/FileTransfer.js"
import type { PeerChannel } from "../src/actors/PeerChannel.js"
import { networkLayerWith } from "../src/layers/Network.js"
import { PeerNetwork } from "../src/layers/PeerNetwork.js"
import { PureMessage } from "../src/schema/packets.js"
import type { FromPeer, ToPeer } from "./shared.js"
import { FrameReader } from "../src/schema/wire.js"
import { lengthPrefix, PING, PONG } from "./shared.js"

const report = (m: FromPeer) => {
  process.send?.(m)
}

/** Counts messages once armed and reports the count reached, with the time from the first to the last. */
const makeTally = () => {
  let expected = 0
  let got = 0
  let bytes = 0
  let firstAt = 0
  let cpuAtArm = process.cpuUsage()
  return {
    arm: (count: number) => {
      expected = count
      got = 0
      bytes = 0
      cpuAtArm = process.cpuUsage()
    },
    hit: (size: number) => {
      if (got >= expected) return
      if (got === 0) firstAt = performance.now()
      got++
      bytes += size
      if (got === expected) {
        const cpu = process.cpuUsage(cpuAtArm)
        report({
          _tag: "Done",
          count: got,
          bytes,
          firstToLastMillis: performance.now() - firstAt,
          cpuMicros: cpu.user + cpu.system
        })
      }
    }
  }
}

/** A plain node:net server on 127.0.0.1 for the baseline; each socket's frames go to `onFrame`. */
const rawServer = (onFrame: (socket: net.Socket) => (body: Buffer) => void) =>
  Effect.acquireRelease(
    Effect.async<net.Server, Error>((resume) => {
      const server = net.createServer({ noDelay: true }, (socket) => {
        // the baseline's 4-byte length framing, split by the same reader the library uses
        const splitter = new FrameReader(Number.MAX_SAFE_INTEGER)
        const handle = onFrame(socket)
        socket.on("data", (chunk: Buffer) =>
          splitter.pushRanges(chunk, (buffer, start, end) => handle(buffer.subarray(start, end)))
        )
        socket.on("error", () => socket.destroy())
      })
      server.once("error", (e) => resume(Effect.fail(e)))
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.sync(() => server.close())
  ).pipe(Effect.map((server) => (server.address() as net.AddressInfo).port))

const main = Effect.gen(function* () {
  const commands = yield* Queue.unbounded<ToPeer>()
  process.on("message", (m) => commands.unsafeOffer(m as ToPeer))
  // the parent went away (exit, crash, kill): nothing left to measure
  process.on("disconnect", () => process.exit(0))
  const tally = makeTally()

  // received files (the file benchmark) land in a temporary inbox, removed once verified and at exit
  const inbox = yield* Effect.acquireRelease(
    Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "p2p-bench-inbox-"))),
    (dir) => Effect.promise(() => fs.rm(dir, { recursive: true, force: true }))
  )
  /** One library node: its files are removed once received; its packets counted, and the handshake probe answered. */
  const startNode = (session: "noise" | "plain") =>
    Effect.gen(function* () {
      const context = yield* Layer.build(networkLayerWith({ host: "127.0.0.1", port: 0, fileInbox: inbox, session }))
      const node = Context.get(context, PeerNetwork)
      const files = Context.get(context, FileTransfer)
      yield* files.received.pipe(
        Stream.runForEach((file) => Effect.promise(() => fs.rm(file.path, { force: true }))),
        Effect.forkScoped
      )
      const packets = yield* node.registry.subscribePackets
      yield* packets.pipe(
        Stream.runForEachChunk((chunk) => {
          const pings: Array<PeerChannel> = []
          for (const { channel, packet } of chunk) {
            if (packet._tag === "PureMessage") {
              if (packet.message === PING) pings.push(channel)
              else tally.hit(packet.message.length)
            } else if (packet._tag === "DataTransmission") tally.hit(packet.data.length)
          }
          if (pings.length === 0) return Effect.void
          return Effect.forEach(
            pings,
            (channel) =>
              channel.send(PureMessage.make({ message: PONG, origin: node.id, sentAt: DateTime.unsafeNow() })),
            { discard: true }
          ).pipe(Effect.ignore)
        }),
        Effect.forkScoped
      )
      return node
    })
  const secure = yield* startNode("noise")
  const plain = yield* startNode("plain")

  const smallPort = yield* rawServer(() => (body) => {
    const m = JSON.parse(body.toString("utf8")) as { message: string }
    tally.hit(m.message.length)
  })
  const bulkPort = yield* rawServer(() => (body) => tally.hit(body.length))
  const echoPort = yield* rawServer((socket) => (body) => {
    socket.cork()
    socket.write(lengthPrefix(body.length))
    socket.write(body)
    socket.uncork()
  })

  report({ _tag: "Ready", libraryPort: secure.port, plainPort: plain.port, smallPort, bulkPort, echoPort })
  while (true) {
    const command = yield* Queue.take(commands)
    if (command._tag === "Quit") return
    tally.arm(command.count)
    report({ _tag: "Armed" })
  }
})

Effect.runFork(
  main.pipe(
    Effect.scoped,
    Effect.timeout("10 minutes"),
    Effect.catchAllCause((cause) =>
      Effect.async<void>((resume) => {
        // wait until the report is flushed: exiting first would lose it
        process.send?.({ _tag: "Failed", detail: String(cause) } satisfies FromPeer, () => resume(Effect.void))
      }).pipe(Effect.timeout("1 second"), Effect.ignore)
    ),
    Effect.provide(Logger.minimumLogLevel(LogLevel.Warning)),
    Effect.ensuring(Effect.sync(() => process.exit(0)))
  )
)
