/**
 * The TCP listener: a scoped node:net server. Each accepted socket is handed to `onSocket` synchronously; closing
 * the scope stops accepting and destroys every socket it accepted, so the port can be bound again at once.
 */
import { Effect } from "effect"
import * as net from "node:net"
import { ListenFailed } from "../schema/errors.js"

export interface Listening {
  readonly host: string
  readonly port: number
}

export const listenTcp = (host: string, port: number, onSocket: (socket: net.Socket) => void) =>
  Effect.acquireRelease(
    Effect.async<{ server: net.Server; sockets: Set<net.Socket>; info: Listening }, ListenFailed>((resume) => {
      const sockets = new Set<net.Socket>()
      const server = net.createServer({ noDelay: true })
      server.on("connection", (socket) => {
        sockets.add(socket)
        socket.once("close", () => sockets.delete(socket))
        onSocket(socket)
      })
      server.once("error", (e) => resume(Effect.fail(new ListenFailed({ host, port, detail: e.message }))))
      server.listen(port, host, () => {
        const address = server.address()
        const bound = typeof address === "object" && address !== null ? address.port : port
        resume(Effect.succeed({ server, sockets, info: { host, port: bound } }))
      })
      return Effect.sync(() => server.close())
    }),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const s of sockets) s.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((l) => l.info))
