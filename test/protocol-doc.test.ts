/**
 * docs/protocol.md is enough to interoperate: a client written from the document alone (test/support/doc-client.ts:
 * node:net, node:crypto, no library code) opens a connection to a real node, passes the default trust handshake and
 * exchanges every packet kind; refusals arrive as the document says. Section numbers refer to the document.
 */
import { assert, describe, it } from "@effect/vitest"
import { DateTime, Effect, Option, Stream } from "effect"
import * as crypto from "node:crypto"
import type { NetworkEvent } from "../src/layers/PeerRegistry.js"
import type { Frame, Header, RawConnection, RawIdentity } from "./support/doc-client.js"
import {
  connect,
  encodeFrame,
  makeHello,
  makeIdentity,
  makeProof,
  nodeIdOf,
  PREAMBLE,
  transcript,
  verifySignature
} from "./support/doc-client.js"
import { packetsFrom, startNode, waitFor } from "./support/nodes.js"

const network = "p2pnet"
const sentAt = 1_700_000_000_000

/** Sections 3 and 7, as initiator: preamble both ways, our Hello, the node's Hello. */
/** Section 10: a Reject frame with exactly this reason, then the end of the stream. */
const expectRejectThenEnd = (conn: RawConnection, reason: string) =>
  Effect.gen(function* () {
    assert.deepStrictEqual(headerOnly(yield* conn.readFrame), { _tag: "Reject", reason })
    yield* conn.awaitEnd
  })

const openConnection = (port: number, me: RawIdentity, hello: Header) =>
  Effect.gen(function* () {
    const conn = yield* connect(port)
    yield* conn.write(PREAMBLE)
    assert.deepStrictEqual(yield* conn.readBytes(8), PREAMBLE)
    yield* conn.write(encodeFrame(hello))
    const theirs = yield* conn.readFrame
    assert.strictEqual(theirs.header["_tag"], "Hello")
    assert.strictEqual(theirs.attachment.length, 0)
    return { conn, theirHello: theirs.header }
  })

/**
 * Section 8 from the peer's side: send our proof, check the node's, exchange accepting verdicts. `after` is written
 * in the same write as our verdict (section 9: the node holds such packets until its trust phase has decided).
 */
const handshake = (
  conn: RawConnection,
  me: RawIdentity,
  mine: Header,
  theirs: Header,
  networkKey = "",
  after: ReadonlyArray<Uint8Array> = []
) =>
  Effect.gen(function* () {
    yield* conn.write(encodeFrame(makeProof(me, network, mine, theirs, networkKey)))
    const proof = yield* conn.readFrame
    assert.strictEqual(proof.header["_tag"], "HandshakeProof")
    const signed = transcript(network, theirs, mine)
    const expectedMac = networkKey === "" ? "" : crypto.createHmac("sha256", networkKey).update(signed).digest("base64")
    assert.strictEqual(proof.header["networkMac"], expectedMac)
    const nodeKey = Buffer.from(String(theirs["publicKey"]), "base64")
    const signature = Buffer.from(String(proof.header["signature"]), "base64")
    assert.strictEqual(signature.length, 64)
    assert.isTrue(verifySignature(nodeKey, signed, signature), "node's proof verifies")
    const verdict = yield* conn.readFrame
    assert.deepStrictEqual(verdict.header, { _tag: "HandshakeVerdict", accepted: true, reason: "ok" })
    yield* conn.write(encodeFrame({ _tag: "HandshakeVerdict", accepted: true, reason: "ok" }), ...after)
  })

/** The node's channel to `id` once it is trusted, from a subscription taken before the handshake. */
const trustedChannel = (events: Stream.Stream<NetworkEvent>, id: string) =>
  waitFor(events, (e) =>
    e._tag === "ChannelStateChanged" && e.state === "trusted" && e.channel.remoteId === id
      ? Option.some(e.channel)
      : Option.none()
  )

const headerOnly = (frame: Frame) => {
  assert.strictEqual(frame.attachment.length, 0, `${String(frame.header["_tag"])} has no attachment`)
  return frame.header
}

/** The document's client speaks the plain-text session (§2), so the node under test is set to it explicitly. */
const plain = { session: "plain" } as const

describe("docs/protocol.md: a client written from the document", () => {
  it.scoped("opens a connection, passes the default handshake, and exchanges packets both ways", () =>
    Effect.gen(function* () {
      const node = yield* startNode(plain)
      const packets = yield* node.registry.subscribePackets
      const me = makeIdentity()
      const mine = makeHello(me, network)
      const { conn, theirHello } = yield* openConnection(node.port, me, mine)

      // section 6: the node's Hello; section 2: its NodeId is derived from its key
      assert.strictEqual(theirHello["version"], 1)
      assert.strictEqual(theirHello["network"], network)
      assert.strictEqual(theirHello["nodeId"], node.id)
      assert.strictEqual(theirHello["listenPort"], node.port)
      const nodeKey = Buffer.from(String(theirHello["publicKey"]), "base64")
      assert.strictEqual(nodeKey.length, 32)
      assert.strictEqual(nodeIdOf(nodeKey), node.id)
      assert.strictEqual(Buffer.from(String(theirHello["nonce"]), "base64").length, 32)

      // section 6: a PureMessage, and a DataTransmission whose bytes are the attachment. Sections 8 and 9: sent in the
      // same write as our accepting verdict, with no sign yet that the node has decided; the DataTransmission is gated
      // and passes because the node holds it until its trust phase has decided
      const bytes = Buffer.from([0, 1, 2, 255, 128])
      yield* handshake(conn, me, mine, theirHello, "", [
        encodeFrame({ _tag: "PureMessage", message: "hello from the doc ✓", origin: me.id, sentAt }),
        encodeFrame({ _tag: "DataTransmission", format: "File", origin: me.id, sentAt }, bytes)
      ])
      const [text, data] = yield* packets.pipe(
        Stream.take(2),
        Stream.runCollect,
        Effect.map((c) => [...c])
      )
      assert.strictEqual(text?.channel.remoteId, me.id)
      assert.strictEqual(data?.channel, text?.channel)
      const channel = text!.channel
      assert.isTrue(channel.isTrusted())
      const message = text!.packet
      assert(message._tag === "PureMessage")
      assert.strictEqual(message.message, "hello from the doc ✓")
      assert.strictEqual(message.origin, me.id)
      assert.strictEqual(DateTime.toEpochMillis(message.sentAt), sentAt)
      const transmission = data!.packet
      assert(transmission._tag === "DataTransmission")
      assert.strictEqual(transmission.format, "File")
      assert.deepStrictEqual([...transmission.data], [...bytes])
      assert.strictEqual(DateTime.toEpochMillis(transmission.sentAt), sentAt)

      // the node sends every packet kind back; each is parsed by section 6 alone. The Disconnect comes last
      for (const packet of packetsFrom(node.id)) yield* node.send(channel.remoteId, packet)
      const origin = { origin: node.id, sentAt }
      assert.deepStrictEqual(headerOnly(yield* conn.readFrame), {
        _tag: "Identity",
        message: "discovery",
        address: "127.0.0.1",
        port: 8051,
        ...origin
      })
      assert.deepStrictEqual(headerOnly(yield* conn.readFrame), {
        _tag: "PeerGroup",
        peers: [{ address: "127.0.0.1", port: 9000, id: null }],
        ...origin
      })
      const transmitted = yield* conn.readFrame
      assert.deepStrictEqual(transmitted.header, { _tag: "DataTransmission", format: "MiscData", ...origin })
      assert.deepStrictEqual([...transmitted.attachment], [0, 1, 2, 255])
      assert.deepStrictEqual(headerOnly(yield* conn.readFrame), {
        _tag: "PureMessage",
        message: "hello <world> & ünïcode 😀",
        ...origin
      })
      assert.deepStrictEqual(headerOnly(yield* conn.readFrame), {
        _tag: "Disconnect",
        address: "127.0.0.1",
        port: 1,
        reason: "bye",
        data: { k: "v" },
        ...origin
      })
      // section 10: after sending a Disconnect the node closes the connection
      yield* conn.awaitEnd
      const reason = yield* channel.awaitClosed
      assert.strictEqual(reason._tag, "LocalClose")
    })
  )

  it.scoped("with a network key, both proofs carry the HMAC of section 8 and the channel becomes trusted", () =>
    Effect.gen(function* () {
      const node = yield* startNode({ ...plain, networkKey: "secret" })
      const events = yield* node.registry.subscribeEvents
      const me = makeIdentity()
      const mine = makeHello(me, network)
      const { conn, theirHello } = yield* openConnection(node.port, me, mine)
      yield* handshake(conn, me, mine, theirHello, "secret")
      const channel = yield* trustedChannel(events, me.id)
      assert.isTrue(channel.isTrusted())
    })
  )

  it("the handshake test vector of section 8 reproduces", () => {
    const seed = (first: number) => Buffer.from(Array.from({ length: 32 }, (_, i) => first + i))
    // Ed25519 signatures are deterministic: signing with A's seed must give exactly the document's signature
    const privateKey = (d: Buffer, publicKey: string) => {
      const x = Buffer.from(publicKey, "base64").toString("base64url")
      const jwk = { kty: "OKP", crv: "Ed25519", d: d.toString("base64url"), x }
      return crypto.createPrivateKey({ key: jwk, format: "jwk" })
    }
    const publicA = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
    const publicB = "Kay64UG8yvCyLhqU000LxzYeUm0L/hLIl5S8kyKWbdc="
    const a = { nodeId: nodeIdOf(Buffer.from(publicA, "base64")), nonce: Buffer.alloc(32, 0xaa).toString("base64") }
    const b = { nodeId: nodeIdOf(Buffer.from(publicB, "base64")), nonce: Buffer.alloc(32, 0xbb).toString("base64") }
    assert.strictEqual(a.nodeId, "56475aa75463474c0285df5dbf2bcab73da65135")
    assert.strictEqual(b.nodeId, "24f6ed6acbfe1009c030d7ca567c33ca48309114")
    const signed = transcript("p2pnet", a, b)
    assert.strictEqual(
      JSON.stringify(signed.toString("utf8")),
      '"effect-p2pnet/v1 handshake\\np2pnet\\n56475aa75463474c0285df5dbf2bcab73da65135\\n' +
        "24f6ed6acbfe1009c030d7ca567c33ca48309114\\nu7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7s=\\n" +
        'qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo="'
    )
    assert.strictEqual(
      crypto.sign(null, signed, privateKey(seed(0), publicA)).toString("base64"),
      "Q1LPkIsDdT3BlRmFazJoJgcellqgfxoYH2quFeTgyFoEX4HmnAGZwMff81MAH67sQ8xk6jCbOmn/xWd4UZ44CA=="
    )
    assert.strictEqual(
      crypto.createHmac("sha256", "secret").update(signed).digest("base64"),
      "IcwyxkPthh/MlC7utdmOe/Q5bJIgvE94Z1sfwGF0rsA="
    )
  })

  it.scoped("a peer of another network gets a Reject instead of the node's Hello, then the end of the stream", () =>
    Effect.gen(function* () {
      const node = yield* startNode(plain)
      const me = makeIdentity()
      const conn = yield* connect(node.port)
      yield* conn.write(PREAMBLE)
      assert.deepStrictEqual(yield* conn.readBytes(8), PREAMBLE)
      yield* conn.write(encodeFrame(makeHello(me, "elsewhere")))
      yield* expectRejectThenEnd(conn, 'network mismatch: peer is in "elsewhere", this node in "p2pnet"')
      assert.deepStrictEqual(yield* node.trustedChannels, [])
    })
  )

  it.scoped("a client that is not a P2PNET peer receives the preamble, a Reject, and is closed", () =>
    Effect.gen(function* () {
      const node = yield* startNode(plain)
      const conn = yield* connect(node.port)
      yield* conn.write(Buffer.from("GET / HTTP/1.1\r\n\r\n", "ascii"))
      assert.deepStrictEqual(yield* conn.readBytes(8), PREAMBLE)
      yield* expectRejectThenEnd(conn, 'not a P2PNET peer (missing "P2PNET" preamble)')
    })
  )

  it.scoped("a preamble announcing version 2 is answered with a Reject naming both versions", () =>
    Effect.gen(function* () {
      const node = yield* startNode(plain)
      const conn = yield* connect(node.port)
      yield* conn.write(Buffer.from([0x50, 0x32, 0x50, 0x4e, 0x45, 0x54, 0x00, 0x02]))
      assert.deepStrictEqual(yield* conn.readBytes(8), PREAMBLE)
      yield* expectRejectThenEnd(conn, "unsupported protocol version 2; this node speaks 1")
    })
  )

  it.scoped("a Hello claiming the node's own NodeId gets a Reject instead of the node's Hello", () =>
    Effect.gen(function* () {
      const node = yield* startNode(plain)
      const me = makeIdentity()
      const conn = yield* connect(node.port)
      // section 3: an initiator may pipeline its preamble and its Hello
      yield* conn.write(PREAMBLE, encodeFrame({ ...makeHello(me, network), nodeId: node.id }))
      assert.deepStrictEqual(yield* conn.readBytes(8), PREAMBLE)
      assert.deepStrictEqual(headerOnly(yield* conn.readFrame), { _tag: "Reject", reason: "connected to itself" })
      yield* conn.awaitEnd
    })
  )

  it.scoped("a Hello announcing version 2 gets a Reject naming both versions instead of the node's Hello", () =>
    Effect.gen(function* () {
      const node = yield* startNode(plain)
      const me = makeIdentity()
      const conn = yield* connect(node.port)
      yield* conn.write(PREAMBLE, encodeFrame({ ...makeHello(me, network), version: 2 }))
      assert.deepStrictEqual(yield* conn.readBytes(8), PREAMBLE)
      yield* expectRejectThenEnd(conn, "Hello announces version 2; this node speaks 1")
    })
  )

  it.scoped("a Hello claiming a connected peer's NodeId fails the handshake and leaves that peer's channel open", () =>
    Effect.gen(function* () {
      const node = yield* startNode(plain)
      const packets = yield* node.registry.subscribePackets
      const me = makeIdentity()
      const mine = makeHello(me, network)
      const { conn, theirHello } = yield* openConnection(node.port, me, mine)
      const hi = (text: string) => encodeFrame({ _tag: "PureMessage", message: text, origin: me.id, sentAt })
      yield* handshake(conn, me, mine, theirHello, "", [hi("first")])
      const first = yield* packets.pipe(Stream.runHead, Effect.map(Option.getOrThrow))
      const channel = first.channel

      // section 13: the impostor's connection only counts once its trust phase has decided, which it never does
      const impostor = makeIdentity()
      const claimed = { ...makeHello(impostor, network), nodeId: me.id }
      const other = yield* openConnection(node.port, impostor, claimed)
      yield* other.conn.write(encodeFrame(makeProof(impostor, network, claimed, other.theirHello)))
      assert.strictEqual(headerOnly(yield* other.conn.readFrame)["_tag"], "HandshakeProof")
      const refusal = "node id does not match public key"
      assert.deepStrictEqual(headerOnly(yield* other.conn.readFrame), {
        _tag: "HandshakeVerdict",
        accepted: false,
        reason: refusal
      })
      assert.deepStrictEqual(headerOnly(yield* other.conn.readFrame), {
        _tag: "Reject",
        reason: `handshake failed: ${refusal}`
      })
      yield* other.conn.awaitEnd

      yield* conn.write(hi("still here"))
      const second = yield* packets.pipe(Stream.runHead, Effect.map(Option.getOrThrow))
      assert.strictEqual(second.channel, channel)
      assert(second.packet._tag === "PureMessage")
      assert.strictEqual(second.packet.message, "still here")
      assert.isFalse(channel.isClosed())
    })
  )

  it.scoped("after the handshake, a length prefix over 16 MiB closes the connection without a Reject", () =>
    Effect.gen(function* () {
      const node = yield* startNode(plain)
      const events = yield* node.registry.subscribeEvents
      const me = makeIdentity()
      const mine = makeHello(me, network)
      const { conn, theirHello } = yield* openConnection(node.port, me, mine)
      yield* handshake(conn, me, mine, theirHello)
      const channel = yield* trustedChannel(events, me.id)
      const tooLarge = Buffer.alloc(4)
      tooLarge.writeUInt32BE(16 * 1024 * 1024 + 1, 0)
      yield* conn.write(tooLarge)
      yield* conn.awaitEnd
      const reason = yield* channel.awaitClosed
      assert.strictEqual(reason._tag, "FrameTooLarge")
    })
  )
})
