/**
 * Legacy bootstrap (P2PNet .NET, reference spec §8): our server in legacy mode answers requests written as the .NET
 * client writes them, and our legacy client reads answers written as the .NET server writes them. Every fixture is a
 * literal from spec §1.5 / §8.4 (or built here with a few lines of escaping written from the §1.1 table), never our
 * codec's output; real HTTP on 127.0.0.1 with ephemeral ports.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Queue } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import { LegacyBootstrapClient } from "../src/layers/LegacyBootstrapClient.js"
import type { LegacyBootstrapClientSettings } from "../src/layers/LegacyBootstrapClient.js"
import type { LegacyTime } from "../src/schema/legacy/index.js"
import { LegacyNetworkTask } from "../src/schema/legacy/index.js"
import type { Canned } from "./support/http-fixture.js"
import { httpFixture } from "./support/http-fixture.js"
import { startLegacyBootstrapServer } from "./support/legacy-bootstrap-server.js"

// ---------------------------------------------------------------------------------------------------------------------
// Spec fixtures
// ---------------------------------------------------------------------------------------------------------------------

/** `T` of spec §1.5. */
const T = "2025-04-18T13:48:00.0314159Z"
const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64")
const unb64 = (text: string) => Buffer.from(text, "base64").toString("utf8")
const md5 = (text: string) => crypto.createHash("md5").update(text, "utf8").digest("base64")

/** A .NET JSON string literal, from the §1.1 escaping table (enough of it for these fixtures). */
const dotnetString = (s: string) =>
  '"' +
  s.replace(/[\\"&'+<>`\n\r\t]/g, (c) =>
    c === "\\"
      ? "\\\\"
      : c === "\n"
        ? "\\n"
        : c === "\r"
          ? "\\r"
          : c === "\t"
            ? "\\t"
            : "\\u" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")
  ) +
  '"'

/** §1.5 "Initial bootstrap request body": the IdentifierPacket inside `<MiscData>`, in a DTP of DataType 2. */
const identifierJson = (identifier: string, ip: string, port: number) =>
  `{"Message":"discovery","Data":${port},"IP":"${ip}","SourceOriginIdentifier":"${identifier}","SourceOriginTime":"${T}"}`
const initialRequest = (identifier = "peer_one", ip = "203.0.113.7", port = 8523) =>
  `{"Data":"${b64(`<MiscData>${identifierJson(identifier, ip, port)}</MiscData>`)}","DataType":2,"SourceOriginIdentifier":"${identifier}","SourceOriginTime":"${T}"}`

/** §1.5 "Heartbeat request body", literally. */
const heartbeatRequest = (identifier = "peer_one") =>
  `{"Data":"PFRhc2s+eyJUYXNrVHlwZSI6MTUsIlRhc2tEYXRhIjp7fX08L1Rhc2s+","DataType":1,"SourceOriginIdentifier":"${identifier}","SourceOriginTime":"${T}"}`

/** §1.5 "CollectionSharePacket JSON", literally. */
const PEER_LIST = `{"Data":100,"peers":[{"$type":"GenericPeer","Port":8523,"Address":"203.0.113.7","Identifier":"peer_one"}],"SourceOriginIdentifier":"","SourceOriginTime":"${T}"}`

/** A DTP as the original server writes it (§8.4), around already-formed data text. */
const serverPacket = (data: string, dataType: number) =>
  `{"Data":"${b64(data)}","DataType":${dataType},"SourceOriginIdentifier":"","SourceOriginTime":"${T}"}`
const pureMessage = (message: string) =>
  `{"Message":${dotnetString(message)},"SourceOriginIdentifier":"","SourceOriginTime":"${T}"}`

/** §1.5 / §8.6 task hash vector. */
const DISCONNECT_TASK = `{"TaskType":4,"TaskData":{"TargetPeer":"203.0.113.9"}}`
const DISCONNECT_HASH = "ovR8sks8MOkO46b4O2AlWw=="
const DISCONNECT_SIGNED = `{"TaskType":4,"TaskData":{"TargetPeer":"203.0.113.9","Signature":"${DISCONNECT_HASH}"}}`

// ---------------------------------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------------------------------

interface Reply {
  readonly status: number
  readonly text: string
  readonly contentType: string
  readonly allow: string
}

/** Raw HTTP, as a .NET client would send it. */
const send = (url: string, method: string, body?: string | Uint8Array) =>
  Effect.promise(async (): Promise<Reply> => {
    const response = await fetch(url, {
      method,
      ...(body === undefined ? {} : { body, headers: { "content-type": "application/json; charset=utf-8" } })
    })
    return {
      status: response.status,
      text: await response.text(),
      contentType: response.headers.get("content-type") ?? "",
      allow: response.headers.get("allow") ?? ""
    }
  })

/** The data text of a DTP answer (base64 `Data` decoded). */
const dataText = (reply: Reply) => unb64(JSON.parse(reply.text).Data as string)

const legacyClient = (settings: LegacyBootstrapClientSettings = {}) =>
  Effect.provide(LegacyBootstrapClient, LegacyBootstrapClient.layer(settings))

const ME = { identifier: "peer_one", ip: "203.0.113.7", port: 8523 }

// ---------------------------------------------------------------------------------------------------------------------
// (a) Our server in legacy mode, .NET client requests
// ---------------------------------------------------------------------------------------------------------------------

describe("legacy bootstrap server", () => {
  it.scopedLive("registers a .NET client at its source address and lists it to the next one, untagged", () =>
    Effect.gen(function* () {
      const { registry, url } = yield* startLegacyBootstrapServer()
      const first = yield* send(`${url}/api/Bootstrap/peers`, "PUT", initialRequest())
      assert.strictEqual(first.status, 200)
      assert.strictEqual(first.contentType, "application/json; charset=utf-8")
      assert.match(
        first.text,
        /^\{"Data":"[A-Za-z0-9+/=]+","DataType":2,"SourceOriginIdentifier":"","SourceOriginTime":"[^"]+"\}$/
      )
      // the original trustless answer: a CollectionSharePacket, NOT tag-wrapped (the .NET client does not unwrap it)
      assert.match(
        dataText(first),
        /^\{"Data":100,"peers":\[\],"SourceOriginIdentifier":"","SourceOriginTime":"[0-9T:.Z-]+"\}$/
      )

      // routes are case-insensitive; the IP written in the body is not believed (B26)
      const second = yield* send(`${url}/api/bootstrap/PEERS`, "PUT", initialRequest("peer_two", "198.51.100.9", 8600))
      assert.strictEqual(second.status, 200)
      assert.include(
        dataText(second),
        `"peers":[{"$type":"GenericPeer","Port":8523,"Address":"127.0.0.1","Identifier":"peer_one"}]`
      )
      const listed = yield* registry.list
      assert.deepStrictEqual(
        listed.map((p) => [p.address, p.port, p.identifier]),
        [
          ["127.0.0.1", 8523, "peer_one"],
          ["127.0.0.1", 8600, "peer_two"]
        ]
      )
    })
  )

  it.scopedLive(
    "answers the spec's heartbeat with a tagged, hash-signed HeartbeatResponse holding the queued tasks",
    () =>
      Effect.gen(function* () {
        const { registry, url } = yield* startLegacyBootstrapServer()
        yield* send(`${url}/api/Bootstrap/peers`, "PUT", initialRequest())

        const empty = yield* send(`${url}/api/Bootstrap/heartbeat`, "PUT", heartbeatRequest())
        assert.strictEqual(empty.status, 200)
        assert.strictEqual(JSON.parse(empty.text).DataType, 1)
        const unsigned = `{"TaskType":16,"TaskData":{}}`
        assert.strictEqual(
          dataText(empty),
          `<Task>{"TaskType":16,"TaskData":{"Signature":${dotnetString(md5(unsigned))}}}</Task>`
        )

        // a queued task goes out once, as a JSON string under Task_0, with its Signature (the raw hash, §8.6 fallback)
        yield* registry.enqueue(
          "peer_one",
          new LegacyNetworkTask({ TaskType: 4, TaskData: { TargetPeer: "203.0.113.9" } })
        )
        const full = yield* send(`${url}/api/Bootstrap/heartbeat`, "PUT", heartbeatRequest())
        const inner = `{"TaskType":16,"TaskData":{"Task_0":${dotnetString(DISCONNECT_SIGNED)}}}`
        assert.strictEqual(md5(DISCONNECT_TASK), DISCONNECT_HASH)
        assert.strictEqual(
          dataText(full),
          `<Task>{"TaskType":16,"TaskData":{"Task_0":${dotnetString(DISCONNECT_SIGNED)},"Signature":${dotnetString(md5(inner))}}}</Task>`
        )
        assert.include(dataText(full), `"Task_0":"{\\u0022TaskType\\u0022:4,`)
        const again = yield* send(`${url}/api/Bootstrap/heartbeat`, "PUT", heartbeatRequest())
        assert.notInclude(dataText(again), "Task_0")
      })
  )

  it.scopedLive("refuses a heartbeat from an unregistered identifier with the original's message", () =>
    Effect.gen(function* () {
      const { url } = yield* startLegacyBootstrapServer()
      const reply = yield* send(`${url}/api/Bootstrap/heartbeat`, "PUT", heartbeatRequest("nobody"))
      assert.strictEqual(reply.status, 404)
      assert.strictEqual(JSON.parse(reply.text).Message, "ClientPeer with SourceOriginIdentifier 'nobody' not found.")
    })
  )

  it.scopedLive("answers verifyhash as a trustless original and publicip with the caller's address", () =>
    Effect.gen(function* () {
      const { url } = yield* startLegacyBootstrapServer()
      const verify = `{"Data":"${b64(`{"TaskType":11,"TaskData":{"Hash":"${DISCONNECT_HASH}"}}`)}","DataType":1,"SourceOriginIdentifier":"peer_one","SourceOriginTime":"${T}"}`
      const verified = yield* send(`${url}/api/Bootstrap/verifyhash`, "PUT", verify)
      assert.strictEqual(verified.status, 200)
      assert.match(
        verified.text,
        /^\{"Message":"Trustless policy in effect, no hash verification performed.","SourceOriginIdentifier":"","SourceOriginTime":"[^"]+"\}$/
      )
      const ip = yield* send(`${url}/api/bootstrap/publicip`, "GET")
      assert.deepStrictEqual([ip.status, ip.text, ip.contentType], [200, "127.0.0.1", "text/plain; charset=utf-8"])
    })
  )

  it.scopedLive("without the legacy option the paths do not exist", () =>
    Effect.gen(function* () {
      const { url } = yield* startLegacyBootstrapServer({ legacy: false })
      const reply = yield* send(`${url}/api/Bootstrap/peers`, "PUT", initialRequest())
      assert.strictEqual(reply.status, 404)
    })
  )

  it.scopedLive("our legacy client bootstraps from our legacy server", () =>
    Effect.gen(function* () {
      const { url } = yield* startLegacyBootstrapServer()
      const client = yield* legacyClient()
      const first = yield* client.peers(url, ME)
      assert.deepStrictEqual(first.peers, [])
      const second = yield* client.peers(url, { identifier: "peer_two", ip: "198.51.100.9", port: 8600 })
      assert.deepStrictEqual(second, {
        style: "trustless",
        tagged: false,
        peers: [{ address: "127.0.0.1", port: 8523, identifier: "peer_one" }],
        dropped: 0,
        serverIdentifier: ""
      })
      const beat = yield* client.heartbeat(url, "peer_one")
      assert.deepStrictEqual(
        [beat.tagged, beat.taskType, beat.tasks.length, beat.signatureKind],
        [true, 16, 0, "rawHash"]
      )
      assert.strictEqual(yield* client.publicIp(url), "127.0.0.1")
      assert.strictEqual((yield* client.verifyHash(url, DISCONNECT_HASH)).verdict, "unsupported")
    })
  )
})

// ---------------------------------------------------------------------------------------------------------------------
// (b) Our client, original server answers
// ---------------------------------------------------------------------------------------------------------------------

describe("legacy bootstrap client", () => {
  it.scopedLive("reads a trustless peer list, untagged (as the original sends it) and tagged", () =>
    Effect.gen(function* () {
      const client = yield* legacyClient()
      const expected = [{ address: "203.0.113.7", port: 8523, identifier: "peer_one" }]
      const plain = yield* httpFixture(() => ({ body: serverPacket(PEER_LIST, 2) }))
      const untagged = yield* client.peers(plain.url, ME)
      assert.deepStrictEqual(untagged, {
        style: "trustless",
        tagged: false,
        peers: expected,
        dropped: 0,
        serverIdentifier: ""
      })
      const wrapped = yield* httpFixture(() => ({ body: serverPacket(`<MiscData>${PEER_LIST}</MiscData>`, 2) }))
      const tagged = yield* client.peers(wrapped.url, ME)
      assert.deepStrictEqual(tagged, {
        style: "trustless",
        tagged: true,
        peers: expected,
        dropped: 0,
        serverIdentifier: ""
      })
    })
  )

  it.scopedLive("reads an authority answer: a tagged BootstrapInitialization task with the public key and peers", () =>
    Effect.gen(function* () {
      const key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmI0EZ+example+key\n-----END PGP PUBLIC KEY BLOCK-----\n"
      const task = `{"TaskType":14,"TaskData":{"PublicKey":${dotnetString(key)},"Peers":${dotnetString(PEER_LIST)}}}`
      const server = yield* httpFixture(() => ({ body: serverPacket(`<Task>${task}</Task>`, 1) }))
      const client = yield* legacyClient()
      const result = yield* client.peers(server.url, ME)
      assert.deepStrictEqual(result, {
        style: "authority",
        tagged: true,
        peers: [{ address: "203.0.113.7", port: 8523, identifier: "peer_one" }],
        dropped: 0,
        publicKey: key,
        serverIdentifier: ""
      })
    })
  )

  it.scopedLive("reads heartbeat tasks with their MD5 hashes and signatures as given, tagged or not", () =>
    Effect.gen(function* () {
      const unsigned = `{"TaskType":16,"TaskData":{"Task_0":${dotnetString(DISCONNECT_SIGNED)}}}`
      const hash = md5(unsigned)
      const clearSigned = `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n${hash}\n-----BEGIN PGP SIGNATURE-----\n\nwsBcBAEBCAAQBQJn\n-----END PGP SIGNATURE-----\n`
      const response = `{"TaskType":16,"TaskData":{"Task_0":${dotnetString(DISCONNECT_SIGNED)},"Signature":${dotnetString(clearSigned)}}}`
      const client = yield* legacyClient()
      for (const [data, tagged] of [
        [`<Task>${response}</Task>`, true],
        [response, false]
      ] as const) {
        const server = yield* httpFixture(() => ({ body: serverPacket(data, 1) }))
        const result = yield* client.heartbeat(server.url, "peer_one")
        assert.deepStrictEqual(result, {
          tagged,
          taskType: 16,
          tasks: [
            {
              key: "Task_0",
              json: DISCONNECT_SIGNED,
              taskType: 4,
              taskData: { TargetPeer: "203.0.113.9", Signature: DISCONNECT_HASH },
              hash: DISCONNECT_HASH,
              signature: DISCONNECT_HASH,
              signatureKind: "rawHash",
              signatureMatchesHash: true
            }
          ],
          unreadable: [],
          hash,
          signature: clearSigned,
          signatureKind: "pgpClearSigned",
          signatureMatchesHash: true
        })
      }
    })
  )

  it.scopedLive("reads verifyhash and publicip answers, and the original's error messages as typed refusals", () =>
    Effect.gen(function* () {
      const client = yield* legacyClient()
      const answers: Record<string, Canned> = {
        True: { body: pureMessage(`True:${DISCONNECT_HASH}`) },
        False: { body: pureMessage(`False:${DISCONNECT_HASH}`) },
        Trustless: { body: pureMessage("Trustless policy in effect, no hash verification performed.") },
        Problem: {
          status: 400,
          contentType: "application/problem+json",
          body: JSON.stringify({
            type: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
            title: "Bad Request",
            status: 400,
            detail: pureMessage("Invalid network task type for this endpoint.")
          })
        }
      }
      let current = "True"
      const server = yield* httpFixture((r) =>
        r.path.toLowerCase() === "/api/bootstrap/publicip"
          ? { body: "203.0.113.7", contentType: "text/plain" }
          : r.path.toLowerCase() === "/api/bootstrap/heartbeat"
            ? { body: pureMessage("ClientPeer with SourceOriginIdentifier 'peer_one' not found.") }
            : answers[current]!
      )
      assert.deepStrictEqual(yield* client.verifyHash(server.url, DISCONNECT_HASH), {
        verdict: "known",
        message: `True:${DISCONNECT_HASH}`
      })
      current = "False"
      assert.strictEqual((yield* client.verifyHash(server.url, DISCONNECT_HASH)).verdict, "unknown")
      current = "Trustless"
      assert.strictEqual((yield* client.verifyHash(server.url, DISCONNECT_HASH)).verdict, "unsupported")
      current = "Problem"
      const problem = yield* Effect.flip(client.verifyHash(server.url, DISCONNECT_HASH))
      assert.strictEqual(problem._tag, "LegacyBootstrapRefused")
      assert.include(problem.message, "Invalid network task type for this endpoint.")
      assert.strictEqual(yield* client.publicIp(server.url), "203.0.113.7")
      // the original answers heartbeat errors with HTTP 200 and a PureMessagePacket
      const refused = yield* Effect.flip(client.heartbeat(server.url, "peer_one"))
      assert.deepStrictEqual(
        [refused._tag, refused._tag === "LegacyBootstrapRefused" ? refused.status : 0],
        ["LegacyBootstrapRefused", 200]
      )
    })
  )
})

// ---------------------------------------------------------------------------------------------------------------------
// (c) Bad input
// ---------------------------------------------------------------------------------------------------------------------

describe("legacy bootstrap bad input", () => {
  it.scopedLive(
    "the server answers garbage, wrong types and oversize bodies with 4xx and a message, and keeps serving",
    () =>
      Effect.gen(function* () {
        const { registry, url } = yield* startLegacyBootstrapServer({ maxBodyBytes: 2048 })
        const peers = `${url}/api/Bootstrap/peers`
        const cases: ReadonlyArray<readonly [string, string | Uint8Array, number, string]> = [
          ["PUT", "not json{", 400, "not a DataTransmissionPacket"],
          ["PUT", `{"Data":12,"DataType":"two"}`, 400, "not a DataTransmissionPacket"],
          ["PUT", `{"DataType":2}`, 400, "has no Data"],
          ["PUT", `{"Data":"${b64("<MiscData>[1,2]</MiscData>")}","DataType":2}`, 400, "not an IdentifierPacket"],
          ["PUT", `{"Data":"${b64("</MiscData>x<MiscData>")}","DataType":2}`, 400, "tag"],
          ["PUT", initialRequest("peer_one", "203.0.113.7", 0), 400, "listening port"],
          ["PUT", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), 400, "not a DataTransmissionPacket"],
          ["PUT", `{"Data":"${"A".repeat(4096)}","DataType":2}`, 413, ""],
          ["GET", "", 405, "use PUT"]
        ]
        for (const [method, body, status, words] of cases) {
          const reply = yield* send(peers, method, method === "GET" ? undefined : body)
          assert.strictEqual(reply.status, status, `${method} ${String(body).slice(0, 40)}: ${reply.text}`)
          if (words !== "") assert.include(JSON.parse(reply.text).Message, words)
        }
        const badBeat = yield* send(
          `${url}/api/Bootstrap/heartbeat`,
          "PUT",
          `{"Data":"${b64('<Task>{"TaskType":"x"}</Task>')}"}`
        )
        assert.strictEqual(badBeat.status, 400)
        assert.include(JSON.parse(badBeat.text).Message, "Invalid heartbeat network task received.")
        const notHeartbeat = `{"Data":"${b64(`<Task>${DISCONNECT_TASK}</Task>`)}","DataType":1,"SourceOriginIdentifier":"peer_one"}`
        assert.strictEqual((yield* send(`${url}/api/Bootstrap/heartbeat`, "PUT", notHeartbeat)).status, 400)
        assert.strictEqual((yield* send(`${url}/api/Bootstrap/verifyhash`, "PUT", "[]")).status, 400)

        assert.deepStrictEqual(yield* registry.list, [])
        const ok = yield* send(peers, "PUT", initialRequest())
        assert.strictEqual(ok.status, 200)
        assert.strictEqual((yield* registry.list).length, 1)
      })
  )

  it.scopedLive(
    "the client turns garbage, wrong shapes, bad statuses, oversize and silent servers into typed errors",
    () =>
      Effect.gen(function* () {
        const client = yield* legacyClient({ maxResponseBytes: 1024, requestTimeout: "300 millis" })
        const failure = (canned: Canned) =>
          Effect.gen(function* () {
            const server = yield* httpFixture(() => canned)
            return yield* Effect.flip(client.peers(server.url, ME))
          })
        assert.strictEqual((yield* failure({ body: "<html>oops" }))._tag, "LegacyBootstrapInvalidJson")
        assert.strictEqual((yield* failure({ body: "[1,2,3]" }))._tag, "LegacyBootstrapUnexpectedShape")
        assert.strictEqual(
          (yield* failure({ body: `{"Data":"%%%","DataType":2}` }))._tag,
          "LegacyBootstrapUnexpectedShape"
        )
        assert.strictEqual(
          (yield* failure({ body: serverPacket('{"Data":"x"}', 2) }))._tag,
          "LegacyBootstrapUnexpectedShape"
        )
        assert.strictEqual(
          (yield* failure({ body: serverPacket("<MiscData>no end", 2) }))._tag,
          "LegacyBootstrapUnexpectedShape"
        )
        assert.strictEqual((yield* failure({ status: 500, body: "" }))._tag, "LegacyBootstrapBadStatus")
        assert.strictEqual((yield* failure({ body: "x".repeat(4096) }))._tag, "LegacyBootstrapTooLarge")
        assert.strictEqual((yield* failure({ hang: true }))._tag, "LegacyBootstrapTimeout")
        assert.strictEqual(
          (yield* failure({ body: pureMessage("Invalid DataTransmissionPacket received.") }))._tag,
          "LegacyBootstrapRefused"
        )
        const unknownIp = yield* httpFixture(() => ({ body: "Unknown", contentType: "text/plain" }))
        assert.strictEqual((yield* Effect.flip(client.publicIp(unknownIp.url)))._tag, "LegacyBootstrapUnexpectedShape")
        assert.strictEqual((yield* Effect.flip(client.peers("not a url", ME)))._tag, "LegacyBootstrapUnreachable")
        // a port nobody listens on: take one from a server that is closed again
        const closed = yield* Effect.scoped(httpFixture(() => ({})))
        assert.strictEqual((yield* Effect.flip(client.peers(closed.url, ME)))._tag, "LegacyBootstrapUnreachable")
        // a peer entry that cannot be dialled is dropped and counted, the rest is kept
        const mixed = PEER_LIST.replace(
          `"peers":[`,
          `"peers":[{"$type":"GenericPeer","Port":0,"Address":"203.0.113.8","Identifier":null},{"$type":"GenericPeer","Port":1,"Address":"nowhere","Identifier":null},`
        )
        const lenient = yield* httpFixture(() => ({ body: serverPacket(mixed, 2) }))
        const result = yield* client.peers(lenient.url, ME)
        assert.deepStrictEqual([result.peers.length, result.dropped], [1, 2])
      })
  )
})

// ---------------------------------------------------------------------------------------------------------------------
// (d) Request bytes
// ---------------------------------------------------------------------------------------------------------------------

describe("legacy bootstrap request bytes", () => {
  it.scopedLive("the initial request and the heartbeat equal the spec's golden bodies, PUT as application/json", () =>
    Effect.gen(function* () {
      const server = yield* httpFixture((r) =>
        r.path.endsWith("heartbeat")
          ? { body: serverPacket(`<Task>{"TaskType":16,"TaskData":{}}</Task>`, 1) }
          : { body: serverPacket(PEER_LIST, 2) }
      )
      const client = yield* legacyClient()
      // the endpoint path replaces any path of the configured URL (§8.1)
      yield* client.peers(`${server.url}/some/base/`, ME, { time: T as LegacyTime })
      const initial = yield* Queue.take(server.requests)
      assert.deepStrictEqual(initial, {
        method: "PUT",
        path: "/api/Bootstrap/peers",
        contentType: "application/json; charset=utf-8",
        body: initialRequest()
      })
      assert.strictEqual(
        unb64(JSON.parse(initial.body).Data),
        `<MiscData>{"Message":"discovery","Data":8523,"IP":"203.0.113.7","SourceOriginIdentifier":"peer_one","SourceOriginTime":"${T}"}</MiscData>`
      )
      yield* client.heartbeat(server.url, "peer_one", { time: T as LegacyTime })
      const beat = yield* Queue.take(server.requests)
      assert.deepStrictEqual(
        [beat.method, beat.path, beat.body],
        ["PUT", "/api/Bootstrap/heartbeat", heartbeatRequest()]
      )
      yield* client.verifyHash(server.url, DISCONNECT_HASH, { identifier: "peer_one", time: T as LegacyTime })
      const verify = yield* Queue.take(server.requests)
      assert.strictEqual(
        verify.body,
        `{"Data":"${b64(`{"TaskType":11,"TaskData":{"Hash":"ovR8sks8MOkO46b4O2AlWw=="}}`)}","DataType":1,"SourceOriginIdentifier":"peer_one","SourceOriginTime":"${T}"}`
      )
      yield* client.publicIp(server.url).pipe(Effect.either)
      const ip = yield* Queue.take(server.requests)
      assert.deepStrictEqual([ip.method, ip.path], ["GET", "/api/Bootstrap/publicip"])
    })
  )

  it("docs/protocol.md shows these golden bodies", () => {
    const doc = fs.readFileSync(new URL("../docs/protocol.md", import.meta.url), "utf8")
    assert.include(doc, initialRequest())
    assert.include(doc, heartbeatRequest())
  })

  it.scopedLive("a time written by default is .NET's round-trip UTC format", () =>
    Effect.gen(function* () {
      const server = yield* httpFixture(() => ({ body: serverPacket(PEER_LIST, 2) }))
      const client = yield* legacyClient()
      yield* client.peers(server.url, ME)
      const sent = JSON.parse((yield* Queue.take(server.requests)).body)
      assert.match(sent.SourceOriginTime as string, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z$/)
    })
  )
})
