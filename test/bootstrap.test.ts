/**
 * The bootstrap server over real HTTP on 127.0.0.1 (port 0), driven by a client derived from the shared API definition
 * (HttpApiClient.make(BootstrapApi)); raw fetch only where the client could not send the bad input. The last test runs
 * the bootstrap program in a child process, SIGKILLs it in the middle of registrations and restarts it.
 */
import { FetchHttpClient, HttpApiClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import {
  Context,
  Deferred,
  Duration,
  Effect,
  Either,
  Encoding,
  Fiber,
  Layer,
  Option,
  Redacted,
  TestClock
} from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { BootstrapAuthority, fingerprintOf, taskHash, verifySignedTask } from "../src/layers/BootstrapAuthority.js"
import type { BootstrapSettings } from "../src/layers/BootstrapServer.js"
import { BootstrapConfig, serverLayer, serverUrl } from "../src/layers/BootstrapServer.js"
import { BootstrapStore } from "../src/layers/BootstrapStore.js"
import type { NodeKeys } from "../src/layers/NodeIdentity.js"
import { generateKeys, keysFromPrivateKey } from "../src/layers/NodeIdentity.js"
import type { HeartbeatRequest, RateLimited, RegisterRequest, SignedTask, TaskWire } from "../src/schema/bootstrap.js"
import { BootstrapApi, heartbeatBytes, registrationBytes, taskBytes } from "../src/schema/bootstrap.js"
import type { Port } from "../src/schema/ids.js"
import { spawnBootstrapProgram } from "./support/bootstrap-program.js"

const TOKEN = "test-admin-token-0123456789"
const b64 = (bytes: Uint8Array) => Encoding.encodeBase64(bytes)

const registration = (keys: NodeKeys, options: { port?: number; sentAt?: number; network?: string } = {}) => {
  const unsigned = {
    id: keys.id,
    port: (options.port ?? 9000) as Port,
    publicKey: b64(keys.publicKey),
    network: options.network ?? "p2pnet",
    sentAt: options.sentAt ?? Date.now()
  }
  return { ...unsigned, signature: b64(keys.sign(registrationBytes(unsigned))) } satisfies RegisterRequest
}

const heartbeat = (keys: NodeKeys, sentAt: number): HeartbeatRequest => ({
  id: keys.id,
  sentAt,
  signature: b64(keys.sign(heartbeatBytes({ id: keys.id, sentAt })))
})

/** The expiry sweep runs in its own fiber: give it turns until `done` holds (bounded, no sleeping). */
const eventually = <A, E>(read: Effect.Effect<A, E>, done: (a: A) => boolean) =>
  Effect.gen(function* () {
    for (let i = 0; i < 1000; i++) {
      const a = yield* read
      if (done(a)) return a
      yield* Effect.yieldNow()
    }
    return yield* read
  })

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "p2p-bootstrap-"))

/** A server on 127.0.0.1:0 for the life of the scope, its store, and clients (plain and with the admin token). */
const startServer = (overrides: Partial<BootstrapSettings> = {}) =>
  Effect.gen(function* () {
    const config = BootstrapConfig.layer({
      host: "127.0.0.1",
      port: 0,
      dataDir: tmpDir(),
      adminToken: Option.some(Redacted.make(TOKEN)),
      ...overrides
    })
    const context = yield* Layer.build(
      serverLayer.pipe(Layer.provideMerge(Layer.merge(config, BootstrapStore.layerMemory)))
    )
    const url = yield* Effect.provide(serverUrl, context)
    const client = yield* HttpApiClient.make(BootstrapApi, { baseUrl: url })
    const withToken = (token: string) =>
      HttpApiClient.make(BootstrapApi, {
        baseUrl: url,
        transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(token))
      })
    const admin = yield* withToken(TOKEN)
    return {
      url,
      client,
      admin,
      withToken,
      store: Context.get(context, BootstrapStore),
      authority: Context.get(context, BootstrapAuthority)
    }
  }).pipe(Effect.provide(FetchHttpClient.layer))

/** Raw HTTP, for input the typed client cannot produce. */
const raw = (url: string, init: RequestInit = {}) =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    const text = await response.text()
    let body: any = text
    try {
      body = JSON.parse(text)
    } catch {
      // plain text
    }
    return {
      status: response.status,
      body,
      contentType: response.headers.get("content-type") ?? "",
      csp: response.headers.get("content-security-policy") ?? ""
    }
  })

const json = (method: string, body: string, headers: Record<string, string> = {}): RequestInit => ({
  method,
  body,
  headers: { "content-type": "application/json", ...headers }
})

/** The error's tag and status as the client decoded them (the client fails with the API's typed errors). */
const failureTag = <A, E extends { readonly _tag: string }, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.flip(effect), (e) => e._tag)

describe("bootstrap server", () => {
  it.scopedLive("registers a peer and hands out the others, never the requester, at the TCP source address", () =>
    Effect.gen(function* () {
      const { client } = yield* startServer()
      const a = generateKeys()
      const b = generateKeys()
      const first = yield* client.bootstrap.register({ payload: registration(a, { port: 7001 }) })
      assert.deepStrictEqual(first.peers, [])
      assert.strictEqual(first.observedAddress, "127.0.0.1")
      assert.strictEqual(first.mode, "trustless")
      assert.isUndefined(first.serverPublicKey)
      const second = yield* client.bootstrap.registerPost({ payload: registration(b, { port: 7002 }) })
      assert.deepStrictEqual(second.peers, [
        { id: a.id, address: "127.0.0.1", port: 7001 as Port, publicKey: b64(a.publicKey) }
      ])
    })
  )

  it.scopedLive("a peer list holds at most the configured number of peers", () =>
    Effect.gen(function* () {
      const { client } = yield* startServer({ peerListSize: 3 })
      for (let i = 0; i < 6; i++) yield* client.bootstrap.register({ payload: registration(generateKeys()) })
      const last = yield* client.bootstrap.register({ payload: registration(generateKeys()) })
      assert.strictEqual(last.peers.length, 3)
    })
  )

  it.scopedLive("a heartbeat returns the tasks queued for the peer, once", () =>
    Effect.gen(function* () {
      const { admin, client } = yield* startServer()
      const a = generateKeys()
      const target = generateKeys()
      yield* client.bootstrap.register({ payload: registration(a) })
      const action = yield* admin.admin.disconnect({ path: { id: target.id }, payload: { reason: "maintenance" } })
      assert.strictEqual(action.enqueued, 1)
      const now = Date.now()
      const got = yield* client.bootstrap.heartbeat({ payload: heartbeat(a, now) })
      assert.strictEqual(got.tasks.length, 1)
      assert.deepStrictEqual(got.tasks[0]!.task.taskType, "DisconnectPeer")
      assert.deepStrictEqual(got.tasks[0]!.task.taskData, { peer: target.id, reason: "maintenance" })
      assert.isUndefined(got.tasks[0]!.signature) // trustless: nothing signed
      const again = yield* client.bootstrap.heartbeat({ payload: heartbeat(a, now + 1) })
      assert.deepStrictEqual(again.tasks, [])
    })
  )

  it.scoped("registrations idle longer than the expiry are dropped by the periodic check (TestClock)", () =>
    Effect.gen(function* () {
      const { client, store } = yield* startServer({ idleExpiry: Duration.minutes(30) })
      const quiet = generateKeys()
      const chatty = generateKeys()
      yield* client.bootstrap.register({ payload: registration(quiet, { sentAt: 0 }) })
      yield* client.bootstrap.register({ payload: registration(chatty, { sentAt: 1 }) })
      yield* TestClock.adjust("20 minutes")
      yield* client.bootstrap.heartbeat({ payload: heartbeat(chatty, 20 * 60_000) })
      yield* TestClock.adjust("11 minutes")
      const peers = yield* eventually(store.listPeers, (ps) => ps.length === 1)
      assert.deepStrictEqual(
        peers.map((p) => p.id),
        [chatty.id]
      )
      assert.strictEqual(
        yield* failureTag(client.bootstrap.heartbeat({ payload: heartbeat(quiet, 31 * 60_000) })),
        "UnknownPeer"
      )
    })
  )

  it.scopedLive("echoes the caller's address; X-Forwarded-For only from a trusted proxy", () =>
    Effect.gen(function* () {
      const plain = yield* startServer()
      assert.strictEqual(yield* plain.client.bootstrap.publicip(), "127.0.0.1")
      const spoofed = yield* raw(`${plain.url}/api/v1/publicip`, { headers: { "x-forwarded-for": "203.0.113.9" } })
      assert.deepStrictEqual([spoofed.status, spoofed.body], [200, "127.0.0.1"])
      assert.match(spoofed.contentType, /^text\/plain/)
      const proxied = yield* startServer({ trustedProxies: ["127.0.0.1"] })
      const forwarded = yield* raw(`${proxied.url}/api/v1/publicip`, {
        headers: { "x-forwarded-for": "198.51.100.1, 203.0.113.9" }
      })
      assert.strictEqual(forwarded.body, "203.0.113.9")
    })
  )

  it.scopedLive("rate limits registrations and heartbeats per source address with 429", () =>
    Effect.gen(function* () {
      const { client } = yield* startServer({ rateLimitPerMinute: 60, rateLimitBurst: 2 })
      yield* client.bootstrap.register({ payload: registration(generateKeys()) })
      yield* client.bootstrap.register({ payload: registration(generateKeys()) })
      const refused = yield* Effect.flip(client.bootstrap.register({ payload: registration(generateKeys()) }))
      assert.strictEqual(refused._tag, "RateLimited")
      const a = generateKeys()
      const limited = yield* startServer({ rateLimitPerMinute: 60, rateLimitBurst: 1 })
      yield* limited.client.bootstrap.register({ payload: registration(a) })
      yield* limited.client.bootstrap.heartbeat({ payload: heartbeat(a, Date.now()) })
      const second = yield* Effect.flip(limited.client.bootstrap.heartbeat({ payload: heartbeat(a, Date.now() + 1) }))
      assert.strictEqual(second._tag, "RateLimited")
      assert.isAtLeast((second as RateLimited).retryAfterSeconds, 1)
    })
  )
})

describe("bootstrap server in authority mode", () => {
  it.scopedLive("signs the tasks it hands out; the signature verifies with the published key, not after a change", () =>
    Effect.gen(function* () {
      const { admin, client } = yield* startServer({ mode: "authority" })
      const info = yield* client.bootstrap.info()
      assert.strictEqual(info.mode, "authority")
      const publicKey = Either.getOrThrow(Encoding.decodeBase64(info.publicKey!))
      const a = generateKeys()
      const registered = yield* client.bootstrap.register({ payload: registration(a) })
      assert.strictEqual(registered.serverPublicKey, info.publicKey)
      const target = generateKeys()
      yield* admin.admin.block({ path: { id: target.id }, payload: {} })
      const { tasks } = yield* client.bootstrap.heartbeat({ payload: heartbeat(a, Date.now()) })
      const signed = tasks[0]!
      assert.strictEqual(signed.task.taskType, "BlockAndRemovePeer")
      assert.strictEqual(signed.task.origin, info.serverId)
      assert.strictEqual(signed.keyFingerprint, info.fingerprint)
      assert.isTrue(verifySignedTask(publicKey, signed))
      // one byte changed anywhere in what is signed: the hash no longer matches, nor the signature
      const altered: SignedTask = { ...signed, task: { ...signed.task, taskData: { peer: flipLast(target.id) } } }
      assert.isFalse(verifySignedTask(publicKey, altered))
      assert.isFalse(verifySignedTask(publicKey, { ...altered, hash: taskHash(altered.task) }))
      assert.isFalse(
        verifySignedTask(publicKey, { ...signed, task: { ...signed.task, sentAt: signed.task.sentAt + 1 } })
      )
      // the verify endpoint knows the hash it signed, and no other
      const known = yield* client.bootstrap.verify({ payload: { hash: signed.hash } })
      assert.deepStrictEqual([known.known, known.signature], [true, signed.signature])
      const unknown = yield* client.bootstrap.verify({ payload: { hash: taskHash(altered.task) } })
      assert.isFalse(unknown.known)
      // and the admin's signing history lists it
      const history = yield* admin.admin.signatures({ urlParams: {} })
      assert.include(
        history.map((h) => h.hash),
        signed.hash
      )
    })
  )

  it.scopedLive("creates its key pair on first start (mode 0600), loads it after, and rotates it (audit-logged)", () =>
    Effect.gen(function* () {
      const dataDir = tmpDir()
      const first = yield* Effect.scoped(
        Effect.flatMap(startServer({ mode: "authority", dataDir }), (s) => s.client.bootstrap.info())
      )
      const keyFile = path.join(dataDir, "authority-key.pem")
      assert.strictEqual(fs.statSync(keyFile).mode & 0o777, 0o600)
      const server = yield* startServer({ mode: "authority", dataDir })
      const second = yield* server.client.bootstrap.info()
      assert.strictEqual(second.publicKey, first.publicKey)
      const rotated = yield* server.admin.admin.rotateKey()
      assert.strictEqual(rotated.previousFingerprint, first.fingerprint)
      assert.strictEqual((yield* server.client.bootstrap.info()).publicKey, rotated.publicKey)
      assert.isTrue(fs.existsSync(`${keyFile}.retired-${first.fingerprint}`))
      const audit = yield* server.admin.admin.audit({ urlParams: {} })
      assert.include(
        audit.map((a) => a.action),
        "rotate-key"
      )
    })
  )
})

/** A key pair from a 32-byte seed of one repeated byte (the test vectors of docs/protocol.md, section 16). */
const keysFromSeed = (byte: number) =>
  keysFromPrivateKey(
    crypto.createPrivateKey({
      key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), Buffer.alloc(32, byte)]),
      format: "der",
      type: "pkcs8"
    })
  )

describe("bootstrap signatures: docs/protocol.md section 16", () => {
  it("the document's test vectors are what the code signs, and they verify", () => {
    const doc = fs.readFileSync(new URL("../docs/protocol.md", import.meta.url), "utf8")
    const peer = keysFromSeed(7)
    const unsigned = {
      id: peer.id,
      port: 8523 as Port,
      publicKey: b64(peer.publicKey),
      network: "p2pnet",
      sentAt: 1_700_000_000_000
    }
    const bytes = registrationBytes(unsigned)
    assert.include(doc, new TextDecoder().decode(bytes))
    assert.include(doc, JSON.stringify({ ...unsigned, signature: b64(peer.sign(bytes)) }))
    const authority = keysFromSeed(9)
    const task = {
      id: "6f1d2a4e-0000-4000-8000-000000000001" as TaskWire["id"],
      taskType: "BlockAndRemovePeer" as const,
      taskData: { reason: "abuse", peer: peer.id },
      origin: authority.id,
      sentAt: 1_700_000_010_000
    }
    assert.include(doc, new TextDecoder().decode(taskBytes(task)))
    const signed: SignedTask = {
      task,
      hash: taskHash(task),
      signature: b64(authority.sign(taskBytes(task))),
      keyFingerprint: fingerprintOf(authority.publicKey)
    }
    assert.include(doc, JSON.stringify(signed))
    assert.include(doc, b64(authority.publicKey))
    assert.isTrue(verifySignedTask(authority.publicKey, signed))
  })
})

const flipLast = (s: string) => s.slice(0, -1) + (s.endsWith("0") ? "1" : "0")

describe("bootstrap server: bad input", () => {
  it.scopedLive("answers each bad request with the right 4xx and a body naming the problem, and keeps serving", () =>
    Effect.gen(function* () {
      const { client, url } = yield* startServer()
      const peers = `${url}/api/v1/peers`
      const a = generateKeys()
      const cases: Array<[string, Effect.Effect<{ status: number; body: any }>, number, string]> = [
        ["malformed JSON", raw(peers, json("PUT", "{not json")), 400, "MalformedRequest"],
        [
          "wrong types",
          raw(peers, json("PUT", JSON.stringify({ ...registration(a), port: "x" }))),
          400,
          "HttpApiDecodeError"
        ],
        [
          "oversized body",
          raw(peers, json("PUT", JSON.stringify({ pad: "x".repeat(70_000) }))),
          413,
          "PayloadTooLarge"
        ],
        [
          "a chunked body (no length)",
          raw(peers, {
            ...json("PUT", ""),
            body: new Blob([JSON.stringify({ pad: "x".repeat(70_000) })]).stream(),
            duplex: "half"
          } as RequestInit),
          411,
          "LengthRequired"
        ],
        ["unknown path", raw(`${url}/api/v1/nothing-here`), 404, "NotFound"],
        [
          "bad registration signature",
          raw(peers, json("PUT", JSON.stringify({ ...registration(a), port: 9001 }))),
          400,
          "InvalidSignature"
        ],
        [
          "id not matching the key",
          raw(peers, json("PUT", JSON.stringify({ ...registration(a), id: generateKeys().id }))),
          400,
          "IdMismatch"
        ],
        [
          "an asserted address (B26: the server uses the TCP source)",
          raw(peers, json("PUT", JSON.stringify({ ...registration(a), address: "198.51.100.7" }))),
          400,
          "HttpApiDecodeError"
        ],
        [
          "another network",
          raw(peers, json("PUT", JSON.stringify(registration(a, { network: "other" })))),
          400,
          "WrongNetwork"
        ],
        [
          "a request from far in the past",
          raw(peers, json("PUT", JSON.stringify(registration(a, { sentAt: Date.now() - 3_600_000 })))),
          400,
          "StaleRequest"
        ],
        [
          "a heartbeat of an unknown peer",
          raw(`${url}/api/v1/heartbeat`, json("PUT", JSON.stringify(heartbeat(a, Date.now())))),
          404,
          "UnknownPeer"
        ]
      ]
      for (const [name, request, status, tag] of cases) {
        const response = yield* request
        assert.deepStrictEqual([name, response.status, response.body?._tag], [name, status, tag])
        assert.isString(response.body.message, name)
        assert.strictEqual((yield* client.bootstrap.info()).network, "p2pnet", `still serving after ${name}`)
      }
      // the same signed registration twice is a replay
      const once = registration(a)
      yield* client.bootstrap.register({ payload: once })
      assert.strictEqual(yield* failureTag(client.bootstrap.register({ payload: once })), "StaleRequest")
    })
  )

  it.scopedLive("admin endpoints refuse a missing or wrong token with 401 and work with the right one", () =>
    Effect.gen(function* () {
      const { admin, client, url, withToken } = yield* startServer()
      for (const path of ["/api/v1/admin/status", "/api/v1/admin/peers", "/api/v1/admin/signatures"]) {
        const none = yield* raw(url + path)
        assert.deepStrictEqual([none.status, none.body._tag], [401, "Unauthorized"])
        const wrong = yield* raw(url + path, { headers: { authorization: `Bearer ${TOKEN}x` } })
        assert.deepStrictEqual([wrong.status, wrong.body._tag], [401, "Unauthorized"])
      }
      const wrongClient = yield* withToken("nope")
      assert.strictEqual(
        yield* failureTag(wrongClient.admin.block({ path: { id: generateKeys().id }, payload: {} })),
        "Unauthorized"
      )
      const a = generateKeys()
      yield* client.bootstrap.register({ payload: registration(a) })
      const status = yield* admin.admin.status()
      assert.deepStrictEqual([status.peers, status.mode, status.requests.register], [1, "trustless", 1])
      assert.deepStrictEqual(
        (yield* admin.admin.peers()).map((p) => p.id),
        [a.id]
      )
    }).pipe(Effect.provide(FetchHttpClient.layer))
  )

  it.scopedLive("block queues a task to every registered peer, forgets the peer and refuses its registration", () =>
    Effect.gen(function* () {
      const { admin, client } = yield* startServer({ mode: "authority" })
      const peers = [generateKeys(), generateKeys(), generateKeys()]
      for (const p of peers) yield* client.bootstrap.register({ payload: registration(p) })
      const [bad, ...good] = peers
      const result = yield* admin.admin.block({ path: { id: bad!.id }, payload: { reason: "abuse" } })
      assert.strictEqual(result.enqueued, 2)
      for (const p of good) {
        const { tasks } = yield* client.bootstrap.heartbeat({ payload: heartbeat(p, Date.now()) })
        assert.deepStrictEqual(
          tasks.map((t) => [t.task.taskType, t.task.taskData["peer"], t.hash]),
          [["BlockAndRemovePeer", bad!.id, result.task.hash]]
        )
      }
      assert.strictEqual(yield* failureTag(client.bootstrap.register({ payload: registration(bad!) })), "PeerBlocked")
      const audit = yield* admin.admin.audit({ urlParams: { limit: 10 } })
      assert.include(
        audit.map((a) => a.action),
        "block"
      )
    })
  )

  it.scopedLive("serves the OpenAPI document, the docs page and the dashboard", () =>
    Effect.gen(function* () {
      const { url } = yield* startServer()
      const openapi = yield* raw(`${url}/openapi.json`)
      assert.strictEqual(openapi.status, 200)
      assert.property(openapi.body.paths, "/api/v1/peers")
      assert.strictEqual((yield* raw(`${url}/docs`)).status, 200)
      const index = yield* raw(`${url}/`)
      assert.deepStrictEqual([index.status, index.contentType.startsWith("text/html")], [200, true])
      // the dashboard runs only its own scripts and cannot be framed
      assert.include(index.csp, "default-src 'self'")
      assert.include(index.csp, "frame-ancestors 'none'")
      assert.strictEqual((yield* raw(`${url}/dashboard`)).status, 200)
      assert.strictEqual((yield* raw(`${url}/dashboard/%2e%2e%2f%2e%2e%2fpackage.json`)).status, 404)
    })
  )
})

// ---------------------------------------------------------------------------------------------------------------------
// The program in a child process, killed with SIGKILL
// ---------------------------------------------------------------------------------------------------------------------

/** `npm run bootstrap` as a child process; resolves with its printed URL; SIGKILLed when the scope closes. */
const spawnBootstrap = (dataDir: string) =>
  Effect.gen(function* () {
    const { process: proc, url } = yield* spawnBootstrapProgram(
      ["--port", "0", "--data-dir", dataDir, "--mode", "authority"],
      { BOOTSTRAP_ADMIN_TOKEN: TOKEN, BOOTSTRAP_RATE_LIMIT_PER_MINUTE: "0" },
      "SIGKILL"
    ).pipe(Effect.orDie)
    const exited = Effect.async<void>((resume) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resume(Effect.void)
      proc.once("exit", () => resume(Effect.void))
    })
    return {
      url,
      kill: Effect.zipRight(
        Effect.sync(() => proc.kill("SIGKILL")),
        exited
      )
    }
  })

describe("bootstrap program", () => {
  it.scopedLive(
    "loses no acknowledged registration and no signing record when SIGKILLed mid-write and restarted",
    () =>
      Effect.gen(function* () {
        const dataDir = tmpDir()
        const first = yield* spawnBootstrap(dataDir)
        const client = yield* HttpApiClient.make(BootstrapApi, { baseUrl: first.url })
        const admin = yield* HttpApiClient.make(BootstrapApi, {
          baseUrl: first.url,
          transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(TOKEN))
        })
        const acknowledged: Array<string> = []
        const signatures: Array<string> = []
        const enough = yield* Deferred.make<void>()
        // writers that keep registering (and signing) until the process dies; only 2xx answers count
        const writer = Effect.forever(
          Effect.gen(function* () {
            const keys = generateKeys()
            yield* client.bootstrap.register({ payload: registration(keys) })
            acknowledged.push(keys.id)
            if (acknowledged.length % 5 === 0) {
              const action = yield* admin.admin.disconnect({ path: { id: keys.id }, payload: {} })
              signatures.push(action.task.hash)
            }
            if (acknowledged.length >= 40) yield* Deferred.succeed(enough, undefined)
          })
        ).pipe(Effect.ignore)
        const writers = yield* Effect.forkAll(Array.from({ length: 8 }, () => writer))
        yield* Deferred.await(enough).pipe(Effect.timeout("60 seconds"))
        yield* first.kill
        yield* Fiber.join(writers)
        const ids = [...acknowledged]
        const hashes = [...signatures]
        assert.isAtLeast(ids.length, 40)

        const second = yield* spawnBootstrap(dataDir)
        const admin2 = yield* HttpApiClient.make(BootstrapApi, {
          baseUrl: second.url,
          transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(TOKEN))
        })
        const registered = new Set((yield* admin2.admin.peers()).map((p) => p.id as string))
        assert.deepStrictEqual(
          ids.filter((id) => !registered.has(id)),
          []
        )
        const history = new Set((yield* admin2.admin.signatures({ urlParams: { limit: 1000 } })).map((s) => s.hash))
        assert.deepStrictEqual(
          hashes.filter((h) => !history.has(h)),
          []
        )
        const client2 = yield* HttpApiClient.make(BootstrapApi, { baseUrl: second.url })
        if (hashes.length > 0) assert.isTrue((yield* client2.bootstrap.verify({ payload: { hash: hashes[0]! } })).known)
        // the key pair survived too
        const keyText = fs.readFileSync(path.join(dataDir, "authority-key.pem"), "utf8")
        assert.strictEqual(
          (yield* client2.bootstrap.info()).publicKey,
          b64(new Uint8Array(crypto.createPublicKey(keyText).export({ format: "der", type: "spki" }).subarray(12)))
        )
      }).pipe(Effect.provide(FetchHttpClient.layer)),
    { timeout: 180_000 }
  )
})
