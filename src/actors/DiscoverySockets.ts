/**
 * node:dgram wrapped once for LAN discovery: a scoped UDP socket (closed, and its port released, when the scope
 * closes) and a send that reports its outcome as an Effect. Received datagrams go to a synchronous callback, which
 * only queues them (STYLE: socket handlers stay synchronous).
 */
import { Effect } from "effect"
import * as dgram from "node:dgram"
import { DiscoveryUnavailable } from "../schema/errors.js"

export interface UdpOptions {
  readonly port: number
  readonly address: string
  /** SO_REUSEADDR: several sockets (several nodes on one host) share the port; each gets broadcasts and multicasts. */
  readonly reuseAddr: boolean
  readonly onMessage: (message: Buffer, remote: dgram.RemoteInfo) => void
  /** Errors after binding (the socket stays open). */
  readonly onError: (error: Error) => void
}

const closeSocket = (socket: dgram.Socket) =>
  Effect.async<void>((resume) => {
    try {
      socket.close(() => resume(Effect.void))
    } catch {
      resume(Effect.void) // already closed
    }
  })

/** A bound IPv4 UDP socket for the life of the scope. */
export const udpSocket = (opts: UdpOptions) =>
  Effect.acquireRelease(
    Effect.async<dgram.Socket, DiscoveryUnavailable>((resume) => {
      const socket = dgram.createSocket({ type: "udp4", reuseAddr: opts.reuseAddr })
      let bound = false
      socket.on("error", (e) => {
        if (bound) return opts.onError(e)
        try {
          socket.close()
        } catch {
          // never bound
        }
        resume(
          Effect.fail(
            new DiscoveryUnavailable({ reason: `could not bind UDP ${opts.address}:${opts.port}: ${e.message}` })
          )
        )
      })
      socket.on("message", opts.onMessage)
      socket.bind({ port: opts.port, address: opts.address, exclusive: true }, () => {
        bound = true
        resume(Effect.succeed(socket))
      })
      return closeSocket(socket)
    }),
    closeSocket
  )

/** Sends one datagram; fails with the OS error text. */
export const sendDatagram = (socket: dgram.Socket, bytes: Uint8Array, port: number, address: string) =>
  Effect.async<void, string>((resume) => {
    try {
      socket.send(bytes, port, address, (e) => resume(e ? Effect.fail(e.message) : Effect.void))
    } catch (e) {
      resume(Effect.fail(e instanceof Error ? e.message : String(e)))
    }
  })

/** Runs a socket option setter; its error text on failure (node:dgram throws). */
export const trySocket = (f: () => void): string | undefined => {
  try {
    f()
    return undefined
  } catch (e) {
    return e instanceof Error ? e.message : String(e)
  }
}
