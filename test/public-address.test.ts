/**
 * PublicIPv4GetPolicy against small HTTP servers on 127.0.0.1 that answer correctly, answer garbage, fail with a
 * status, answer slowly (never, until the test ends) or refuse (a closed port). Timeouts are driven by TestClock
 * once the slow server has seen the request; one live test shows the real bound.
 */
import { FetchHttpClient } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Deferred, Effect, Fiber, Layer, Option, TestClock } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { bootstrapPublicIpSource, PublicAddress, publicIPv4SettingsFromEnv } from "../src/layers/PublicAddress.js"
import { BootstrapConfig, serverLayer, serverUrl } from "../src/layers/BootstrapServer.js"
import { BootstrapStore } from "../src/layers/BootstrapStore.js"
import * as fsp from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import type { PublicIPv4GetPolicy } from "../src/schema/trustPolicy.js"
import { PublicIPv4Settings } from "../src/schema/trustPolicy.js"

const IP = "203.0.113.7"
const OTHER = "198.51.100.9"

const listen = (handler: http.RequestListener) =>
  Effect.acquireRelease(
    Effect.async<http.Server>((resume) => {
      const s = http.createServer(handler)
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) =>
      Effect.async<void>((resume) => {
        s.closeAllConnections()
        s.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((s) => `http://127.0.0.1:${(s.address() as AddressInfo).port}/api/v1/publicip`))

/** A source answering `body` with `status`. */
const answering = (body: string, status = 200) =>
  listen((_req, res) => {
    // no keep-alive: a pooled connection the server closes meanwhile would fail a later lookup under load
    res.writeHead(status, { "content-type": "text/plain", connection: "close" })
    res.end(body)
  })

/** A source that never answers until the test's scope closes; `arrived` completes when a request comes in. */
const slow = Effect.gen(function* () {
  const arrived = yield* Deferred.make<void>()
  const gate = yield* Deferred.make<void>()
  yield* Effect.addFinalizer(() => Deferred.succeed(gate, undefined))
  const url = yield* listen((_req, res) => {
    Effect.runFork(Deferred.succeed(arrived, undefined))
    Effect.runFork(Deferred.await(gate).pipe(Effect.andThen(Effect.sync(() => res.end(IP)))))
  })
  return { url, arrived: Deferred.await(arrived) }
})

/** A port nothing listens on (bound, then closed). */
const refusing = Effect.scoped(listen(() => {}))

const service = (policy: PublicIPv4GetPolicy, sources: ReadonlyArray<string>, quorum = 0) =>
  Layer.build(
    PublicAddress.layer(PublicIPv4Settings.make({ policy, sources, timeoutMillis: 200, quorum })).pipe(
      Layer.provide(FetchHttpClient.layer)
    )
  ).pipe(Effect.map((ctx) => Context.get(ctx, PublicAddress)))

/** Runs a lookup that waits on a slow source: once it has the request, moves the clock past the timeout. */
const lookupPastSlow = (address: Context.Tag.Service<PublicAddress>, arrived: Effect.Effect<void>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(Effect.either(address.lookup))
    yield* arrived
    yield* TestClock.adjust("200 millis")
    return yield* Fiber.join(fiber)
  })

describe("PublicIPv4GetPolicy: SingleStaticURL", () => {
  it.scoped("takes the first source's answer and caches it", () =>
    Effect.gen(function* () {
      const address = yield* service("SingleStaticURL", [yield* answering(`${IP}\n`), yield* answering(OTHER)])
      assert.strictEqual(yield* address.lookup, IP)
      assert.deepStrictEqual(yield* address.cached, Option.some(IP))
    })
  )

  it.scoped("garbage, an HTTP error or a refused connection is PublicAddressUnavailable (no failover)", () =>
    Effect.gen(function* () {
      const good = yield* answering(IP)
      for (const first of [yield* answering("<html>hello</html>"), yield* answering(IP, 500), yield* refusing]) {
        const address = yield* service("SingleStaticURL", [first, good])
        const error = yield* Effect.flip(address.lookup)
        assert.strictEqual(error._tag, "PublicAddressUnavailable")
        if (error._tag === "PublicAddressUnavailable") assert.strictEqual(error.failures.length, 1)
        assert.deepStrictEqual(yield* address.cached, Option.none())
      }
    })
  )

  it.scoped("a source that never answers times out", () =>
    Effect.gen(function* () {
      const { arrived, url } = yield* slow
      const result = yield* lookupPastSlow(yield* service("SingleStaticURL", [url]), arrived)
      assert.isTrue(result._tag === "Left" && result.left.message.includes("no answer within 200 ms"), String(result))
    })
  )

  it.scoped("no sources configured is PublicAddressUnavailable", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip((yield* service("SingleStaticURL", [])).lookup)
      assert.include(error.message, "no public IPv4 source configured")
    })
  )
})

describe("PublicIPv4GetPolicy: StaticURLAndFailover", () => {
  it.scoped("B30: fails over on refusal, HTTP errors, garbage and timeouts, in order", () =>
    Effect.gen(function* () {
      const { arrived, url } = yield* slow
      const sources = [yield* refusing, yield* answering("oops", 503), yield* answering("999.1.2.3"), url]
      const address = yield* service("StaticURLAndFailover", [
        ...sources,
        yield* answering(IP),
        yield* answering(OTHER)
      ])
      const result = yield* lookupPastSlow(address, arrived)
      assert.deepStrictEqual(result._tag === "Right" ? result.right : result.left, IP)
    })
  )

  it.scoped("every source failing is PublicAddressUnavailable listing each failure", () =>
    Effect.gen(function* () {
      const address = yield* service("StaticURLAndFailover", [
        yield* refusing,
        yield* answering("::1"),
        yield* answering(IP, 404)
      ])
      const error = yield* Effect.flip(address.lookup)
      assert.strictEqual(error._tag, "PublicAddressUnavailable")
      if (error._tag === "PublicAddressUnavailable") assert.strictEqual(error.failures.length, 3)
    })
  )
})

describe("PublicIPv4GetPolicy: URLListConsensus", () => {
  it.scoped("takes the majority answer once a slow source times out", () =>
    Effect.gen(function* () {
      const { arrived, url } = yield* slow
      const address = yield* service("URLListConsensus", [
        yield* answering(IP),
        yield* answering(OTHER),
        yield* answering(IP),
        url,
        yield* answering("garbage")
      ])
      // majority of 5 sources is 3; only 2 agree
      const noQuorum = yield* lookupPastSlow(address, arrived)
      assert.isTrue(noQuorum._tag === "Left" && noQuorum.left._tag === "PublicAddressNoQuorum")
      if (noQuorum._tag === "Left" && noQuorum.left._tag === "PublicAddressNoQuorum") {
        assert.deepStrictEqual(noQuorum.left.answers, { [IP]: 2, [OTHER]: 1 })
        assert.strictEqual(noQuorum.left.quorum, 3)
        assert.strictEqual(noQuorum.left.failures.length, 2)
      }
    })
  )

  it.scoped("a configured quorum is met by agreeing sources", () =>
    Effect.gen(function* () {
      const sources = [yield* answering(OTHER), yield* answering(IP), yield* refusing, yield* answering(IP)]
      assert.strictEqual(yield* (yield* service("URLListConsensus", sources, 2)).lookup, IP)
      const strict = yield* Effect.flip((yield* service("URLListConsensus", sources, 3)).lookup)
      assert.strictEqual(strict._tag, "PublicAddressNoQuorum")
    })
  )

  it.scoped("no valid answer at all is PublicAddressUnavailable", () =>
    Effect.gen(function* () {
      const address = yield* service("URLListConsensus", [yield* refusing, yield* answering("nope")])
      assert.strictEqual((yield* Effect.flip(address.lookup))._tag, "PublicAddressUnavailable")
    })
  )

  it.scopedLive("with real time, a silent source costs one timeout, not forever", () =>
    Effect.gen(function* () {
      const { url } = yield* slow
      const address = yield* service("URLListConsensus", [yield* answering(IP), url, yield* answering(IP)])
      const started = Date.now()
      assert.strictEqual(yield* address.lookup, IP)
      assert.isBelow(Date.now() - started, 2_000)
    })
  )
})

describe("PublicAddress service", () => {
  it.scoped("refresh returns at once and runs the lookup in the service's own fiber", () =>
    Effect.gen(function* () {
      const { arrived, url } = yield* slow
      const address = yield* service("SingleStaticURL", [url])
      yield* address.refresh
      yield* arrived
      assert.deepStrictEqual(yield* address.cached, Option.none())
    })
  )

  it.scopedLive("a bootstrap server's own public-IP endpoint is a source: it answers the address it sees", () =>
    Effect.gen(function* () {
      const dir = yield* Effect.acquireRelease(
        Effect.promise(() => fsp.mkdtemp(path.join(os.tmpdir(), "p2p-publicip-"))),
        (d) => Effect.promise(() => fsp.rm(d, { recursive: true, force: true }))
      )
      const server = yield* Layer.build(
        serverLayer.pipe(
          Layer.provideMerge(
            Layer.merge(
              BootstrapConfig.layer({ host: "127.0.0.1", port: 0, dataDir: dir, rateLimitPerMinute: 0 }),
              BootstrapStore.layerMemory
            )
          )
        )
      )
      const url = yield* Effect.provide(serverUrl, server)
      const address = yield* Layer.build(
        PublicAddress.layerConfigWithBootstrap([url]).pipe(Layer.provide(FetchHttpClient.layer))
      ).pipe(Effect.map(Context.get(PublicAddress)), Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))
      assert.strictEqual(bootstrapPublicIpSource(url), new URL("/api/v1/publicip", url).toString())
      assert.strictEqual(yield* address.lookup, "127.0.0.1")
    })
  )

  it.effect("settings come from P2P_PUBLIC_IP_* variables", () =>
    Effect.gen(function* () {
      const settings = yield* publicIPv4SettingsFromEnv().pipe(
        Effect.withConfigProvider(
          ConfigProvider.fromMap(
            new Map([
              ["P2P_PUBLIC_IP_POLICY", "URLListConsensus"],
              ["P2P_PUBLIC_IP_SOURCES", " http://a/ip, http://b/ip ,,"],
              ["P2P_PUBLIC_IP_TIMEOUT_MS", "750"],
              ["P2P_PUBLIC_IP_QUORUM", "2"]
            ])
          )
        )
      )
      assert.deepStrictEqual(
        { ...settings },
        { policy: "URLListConsensus", sources: ["http://a/ip", "http://b/ip"], timeoutMillis: 750, quorum: 2 }
      )
      const defaults = yield* publicIPv4SettingsFromEnv().pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map()))
      )
      assert.deepStrictEqual(defaults.sources, [])
      assert.strictEqual(defaults.policy, "SingleStaticURL")
    })
  )
})
