/**
 * A UDP probe for the test bed (run in a host by TestBed.spawn): `recv <port> <group>` binds the port, joins the
 * multicast group on the host's interface and prints {"ready":true}, then {"got":{text,from}} per datagram;
 * `send <port> <address>...` sends one datagram naming the target to each address and exits. It shows that broadcast
 * and multicast cross the bed's bridge, which LAN discovery relies on.
 */
import * as dgram from "node:dgram"
import { checkTestBedHost } from "./bed-guard.js"

const [mode, portText, ...targets] = process.argv.slice(2)
const port = Number(portText)
const say = (o: unknown) => process.stdout.write(JSON.stringify(o) + "\n")

const verdict = checkTestBedHost()
if (verdict._tag === "Refused") {
  say({ refused: verdict.reason })
  process.exit(1)
}
const address = verdict.address
const socket = dgram.createSocket({ type: "udp4", reuseAddr: true })
if (mode === "recv") {
  socket.on("message", (m, r) => say({ got: { text: m.toString(), from: r.address } }))
  socket.bind(port, () => {
    for (const group of targets) socket.addMembership(group, address)
    say({ ready: true })
  })
  // ends with its stdin (the test closing it, or going away)
  process.stdin.on("end", () => process.exit(0)).resume()
} else {
  socket.bind(0, () => {
    socket.setBroadcast(true)
    if (address !== undefined) socket.setMulticastInterface(address)
    let left = targets.length
    for (const to of targets) {
      socket.send(`to ${to}`, port, to, (e) => {
        say(e === null ? { sent: to } : { failed: to, reason: e.message })
        if (--left === 0) socket.close()
      })
    }
  })
}
