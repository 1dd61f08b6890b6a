/**
 * A forger of discovery datagrams for the test bed (run in a host by TestBed.spawn), built from docs/protocol.md
 * section 15 alone, as a foreign implementation would be: it listens on TCP `<port>` and prints
 * {"ready":true,"id":...}, then {"connection":{"from":...}} per connection made to it. Each stdin line
 * {"to":...,"port":...,"claim":...} sends to `to:port`, from this host: garbage bytes, a datagram with a bad signature,
 * and a validly signed announcement of TCP `<port>` whose payload also names `claim` as its address (fields a receiver
 * must ignore: B13); then it prints {"sent":[...]}. Without stdin lines it is a plain TCP probe. Ends with its stdin.
 */
import * as crypto from "node:crypto"
import * as dgram from "node:dgram"
import * as net from "node:net"
import * as readline from "node:readline"
import { checkTestBedHost } from "./bed-guard.js"

const say = (o: unknown) => process.stdout.write(JSON.stringify(o) + "\n")

const verdict = checkTestBedHost()
if (verdict._tag === "Refused") {
  say({ refused: verdict.reason })
  process.exit(1)
}

const tcpPort = Number(process.argv[2])
const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519")
const rawPublicKey = publicKey.export({ format: "der", type: "spki" }).subarray(-32)
const id = crypto.createHash("sha256").update(rawPublicKey).digest("hex").slice(0, 40)

/** This forger's announcement of `tcpPort`, signed as section 15 says, plus `extra` fields. */
const announcement = (extra: Record<string, unknown>) => {
  const fields = {
    version: 1,
    network: process.env.P2P_NETWORK ?? "p2pnet",
    id,
    port: tcpPort,
    publicKey: rawPublicKey.toString("base64"),
    sentAt: Date.now()
  }
  const signed = JSON.stringify(["effect-p2pnet/discovery", ...Object.values(fields)])
  const signature = crypto.sign(null, Buffer.from(signed), privateKey).toString("base64")
  return { ...fields, signature, ...extra }
}

const server = net.createServer((socket) => {
  say({ connection: { from: socket.remoteAddress } })
  socket.destroy()
})
server.listen(tcpPort, "0.0.0.0", () => say({ ready: true, id }))

const forge = async (to: string, port: number, claim: string) => {
  const claims = { address: claim, host: claim, ip: claim, endpoint: `${claim}:${tcpPort}` }
  const datagrams: ReadonlyArray<readonly [string, Buffer]> = [
    ["garbage", Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0x7b])],
    ["bad-signature", Buffer.from(JSON.stringify({ ...announcement(claims), port: tcpPort + 1 }))],
    ["claims-another-address", Buffer.from(JSON.stringify(announcement(claims)))]
  ]
  const socket = dgram.createSocket("udp4")
  await new Promise<void>((resolve) => socket.bind(0, resolve))
  for (const [, bytes] of datagrams) {
    await new Promise<void>((resolve, reject) => socket.send(bytes, port, to, (e) => (e ? reject(e) : resolve())))
  }
  socket.close()
  say({ sent: datagrams.map(([kind]) => kind) })
}

const lines = readline.createInterface({ input: process.stdin })
lines.on("line", (line) => {
  const { claim, port, to } = JSON.parse(line) as { to: string; port: number; claim: string }
  forge(to, port, claim).catch((e: unknown) => say({ failed: String(e) }))
})
lines.on("close", () => process.exit(0))
