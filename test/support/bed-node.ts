/**
 * A node for one host of the multi-host test bed, started by TestBed.startNode (testbed.ts) with `ip netns exec`.
 * It checks first, before loading anything that could open a socket, that it runs inside its test-bed namespace
 * (bed-guard.ts); outside, it prints {"event":"refused","reason":...} and exits 1. Then it runs bed-node-run.ts.
 */
import { checkTestBedHost } from "./bed-guard.js"

const verdict = checkTestBedHost()
if (verdict._tag === "Refused") {
  process.stdout.write(JSON.stringify({ event: "refused", reason: verdict.reason }) + "\n")
  process.stderr.write(`refusing to run outside the test bed: ${verdict.reason}\n`)
  process.exit(1)
}
await import("./bed-node-run.js")
