/**
 * The node program (`npm start`, src/programs/node.ts) as a user runs it: flags over environment variables, one line
 * per event, and a clean stop on SIGINT. Two programs on loopback, in the test's own namespace.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { startNodeProgram } from "./support/node-program.js"

/** Starts the program with these flags and variables, logging JSON lines at warning level and off the LAN. */
const startProgram = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  // no discovery: these two meet by --peer, and must not meet the nodes of other tests on the same machine
  startNodeProgram(["--log-format", "json", "--no-discovery", ...args], { P2P_LOG_LEVEL: "Warning", ...env })

describe("node program", () => {
  it.scopedLive(
    "flags win over variables; it prints listening, connected, trusted and stops cleanly on SIGINT",
    () =>
      Effect.gen(function* () {
        // a's network comes from its flag (the variable says otherwise); b's from its variable
        const a = yield* startProgram(["--network", "flagnet", "--host", "127.0.0.1", "--port", "0"], {
          P2P_NETWORK: "envnet"
        })
        const listening = yield* a.waitFor((e) => e.event === "listening")
        assert.strictEqual(listening.network, "flagnet")
        assert.strictEqual(listening.address, "127.0.0.1")
        const b = yield* startProgram(["--peer", `127.0.0.1:${listening.port}`], {
          P2P_NETWORK: "flagnet",
          P2P_HOST: "127.0.0.1"
        })
        const bListening = yield* b.waitFor((e) => e.event === "listening")
        yield* b.waitFor((e) => e.event === "channel" && e.peer === listening.id && e.state === "handshaking")
        yield* b.waitFor((e) => e.event === "channel" && e.peer === listening.id && e.state === "trusted")
        yield* a.waitFor((e) => e.event === "channel" && e.peer === bListening.id && e.state === "trusted")
        yield* a.proc.kill("SIGINT")
        assert.strictEqual(yield* a.proc.exitCode, 0)
        yield* a.waitFor((e) => e.event === "stopped")
        // a said Disconnect as its scope closed
        yield* b.waitFor(
          (e) => e.event === "channel" && e.peer === listening.id && e.state !== "trusted" && e.state !== "handshaking"
        )
      }).pipe(Effect.provide(NodeContext.layer)),
    60_000
  )
})
