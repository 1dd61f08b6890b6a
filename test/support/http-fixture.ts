/**
 * A stand-in HTTP server on 127.0.0.1 for client tests (the original P2PBootstrap server, for one): it records every
 * request in a queue and answers each with what the test's `reply` says, including not answering at all.
 */
import { Effect, Exit, Queue, Scope } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

/** A request as the fixture received it. */
export interface Captured {
  readonly method: string
  readonly path: string
  readonly contentType: string
  readonly body: string
}

/** The answer to one request. */
export interface Canned {
  /** 200 unless given. */
  readonly status?: number
  /** Empty unless given. */
  readonly body?: string | Uint8Array
  /** The fixture's `contentType` option unless given. */
  readonly contentType?: string
  /** Never answer (the server closes the connection when the fixture closes). */
  readonly hang?: boolean
}

export interface HttpFixtureOptions {
  /** 0 (the default): any free port. A closed fixture's port brings it back where it was. */
  readonly port?: number
  /** The content type of an answer that names none; `application/json` unless given. */
  readonly contentType?: string
  /** Send `connection: close` with every answer, so no client reuses a connection to a server that goes away. */
  readonly closeConnections?: boolean
}

/**
 * Listens on 127.0.0.1, answering with `reply` and recording every request in `requests`. `close` stops it
 * (connections included) before the caller's scope ends, which stops it otherwise.
 */
export const httpFixture = (reply: (request: Captured) => Canned, options: HttpFixtureOptions = {}) =>
  Effect.gen(function* () {
    const requests = yield* Queue.unbounded<Captured>()
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const server = yield* Effect.acquireRelease(
      Effect.async<http.Server, Error>((resume) => {
        const s = http.createServer((req, res) => {
          const parts: Array<Buffer> = []
          req.on("data", (c: Buffer) => parts.push(c))
          req.on("end", () => {
            const captured: Captured = {
              method: req.method ?? "",
              path: req.url ?? "",
              contentType: req.headers["content-type"] ?? "",
              body: Buffer.concat(parts).toString("utf8")
            }
            Queue.unsafeOffer(requests, captured)
            const canned = reply(captured)
            if (canned.hang === true) return
            res.writeHead(canned.status ?? 200, {
              "content-type": canned.contentType ?? options.contentType ?? "application/json",
              ...(options.closeConnections === true ? { connection: "close" } : {})
            })
            res.end(canned.body ?? "")
          })
        })
        s.once("error", (e) => resume(Effect.fail(e)))
        s.listen(options.port ?? 0, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.async<void>((resume) => {
          s.closeAllConnections()
          s.close(() => resume(Effect.void))
        })
    ).pipe(Scope.extend(scope))
    const port = (server.address() as AddressInfo).port
    return { url: `http://127.0.0.1:${port}`, port, requests, close: Scope.close(scope, Exit.void) }
  })
