/**
 * The legacy (P2PNet .NET) wire format of src/schema/legacy: golden bytes built from the reference spec text (1.1,
 * 1.2, 1.5), the tolerant decoders, the stream parser however the bytes are cut, tasks and the discovery datagram.
 */
import { assert, describe, it } from "@effect/vitest"
import { DateTime, Either, FastCheck as fc, Option } from "effect"
import * as fs from "node:fs"
import type { NodeId } from "../src/schema/ids.js"
import { IpAddress, PeerAddress, Port } from "../src/schema/ids.js"
import { DataTransmission, Disconnect, Identity, PeerGroup, PureMessage } from "../src/schema/packets.js"
import type { Packet, PayloadFormat } from "../src/schema/packets.js"
import {
  CollectionSharePacket,
  DataTransmissionPacket,
  decodeLegacyDiscovery,
  decodeLegacyPacket,
  decodeLegacyTask,
  DisconnectPacket,
  encodeLegacyDiscovery,
  encodeLegacyFrame,
  encodeLegacyJson,
  encodeLegacyTask,
  fromNativePacket,
  fromNativeTaskRequest,
  IdentifierPacket,
  isKnownLegacyTaskType,
  LegacyBufferOverflow,
  legacyDateTime,
  legacyFrameKind,
  legacyFrameKinds,
  LegacyNetworkTask,
  legacyOrigin,
  LegacyStreamParser,
  legacyString,
  legacyStringify,
  legacyTaskBytes,
  legacyTaskHash,
  LegacyTaskType,
  legacyTaskTypeName,
  parseLegacyTime,
  PureMessagePacket,
  toNativePacket,
  toNativeTaskRequest,
  toNativeTaskType,
  unwrapData,
  wrapData
} from "../src/schema/legacy/index.js"
import type { LegacyFrame, LegacyPacket, LegacyTime } from "../src/schema/legacy/index.js"
import { splitAt } from "./support/bytes.js"

const T = "2025-04-18T13:48:00.0314159Z" as LegacyTime
const utf8 = (s: string) => new TextEncoder().encode(s)
const text = (b: Uint8Array) => new TextDecoder().decode(b)
const base64 = (s: string) => Buffer.from(s, "utf8").toString("base64")
const right = <A, E>(e: Either.Either<A, E>): A => {
  if (Either.isLeft(e)) assert.fail(`expected Right, got ${String(e.left)}`)
  return (e as Either.Right<E, A>).right
}
const left = <A, E>(e: Either.Either<A, E>): E => {
  if (Either.isRight(e)) assert.fail("expected Left")
  return (e as Either.Left<E, A>).left
}

describe("legacy JSON writer (spec 1.1)", () => {
  it("escapes the spec's test vector exactly", () => {
    assert.strictEqual(
      legacyString("a<b>&'\"+`\\/é\n😀"),
      String.raw`"a\u003Cb\u003E\u0026\u0027\u0022\u002B\u0060\\/\u00E9\n\uD83D\uDE00"`
    )
  })

  it("uses the short forms for \\n \\r \\t \\b \\f and \\\\, uppercase \\uXXXX for other controls and DEL", () => {
    assert.strictEqual(legacyString("\n\r\t\b\f\\\u0000\u001f\u007f"), String.raw`"\n\r\t\b\f\\\u0000\u001F\u007F"`)
  })

  it("writes printable ASCII other than the escaped set raw, slash included", () => {
    const raw = "abcXYZ019 !#$%()*,-./:;=?@[]^_{|}~"
    assert.strictEqual(legacyString(raw), `"${raw}"`)
  })

  it("escapes every non-ASCII code unit in uppercase hex", () => {
    assert.strictEqual(legacyString("ÿĀ€\uFFFF"), String.raw`"\u00FF\u0100\u20AC\uFFFF"`)
  })

  it("is read back by any JSON parser as the same string", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (s) => {
        assert.strictEqual(JSON.parse(legacyString(s)), s)
        assert.match(legacyString(s), /^"[\x20-\x7e]*"$/)
      })
    )
  })

  it("writes compact JSON in the given order, ints, null, arrays and base64 byte arrays", () => {
    const value = new Map<string, never>([
      ["2", 1 as never],
      ["1", null as never]
    ])
    assert.strictEqual(
      legacyStringify({ B: 1, A: [true, false, null, -7], Bytes: new Uint8Array([0xfb, 0xff]), Map: value }),
      `{"B":1,"A":[true,false,null,-7],"Bytes":"+/8=","Map":{"2":1,"1":null}}`
    )
  })

  it("formats DateTime as .NET's round-trip format with trailing fractional zeros trimmed", () => {
    assert.strictEqual(legacyDateTime(new Date("2025-04-18T13:48:00.031Z"), 4159), T)
    assert.strictEqual(legacyDateTime(new Date("2025-04-18T13:48:00.000Z")), "2025-04-18T13:48:00Z")
    assert.strictEqual(legacyDateTime(new Date("2025-04-18T13:48:00.300Z")), "2025-04-18T13:48:00.3Z")
    assert.strictEqual(legacyDateTime(DateTime.unsafeMake("2025-04-18T13:48:00.031Z")), "2025-04-18T13:48:00.031Z")
    assert.strictEqual(legacyDateTime(new Date("0001-01-01T00:00:00Z")), "0001-01-01T00:00:00Z")
  })

  it("reads the ISO-8601 forms .NET accepts and refuses impossible dates", () => {
    assert.strictEqual(parseLegacyTime(T), Date.parse("2025-04-18T13:48:00.031Z"))
    assert.strictEqual(parseLegacyTime("2025-04-18T15:48:00+02:00"), Date.parse("2025-04-18T13:48:00Z"))
    assert.strictEqual(parseLegacyTime("2025-04-18T13:48:00"), Date.parse("2025-04-18T13:48:00Z"))
    assert.strictEqual(parseLegacyTime("2025-04-18"), Date.parse("2025-04-18T00:00:00Z"))
    for (const bad of ["2025-02-29T00:00:00Z", "2025-13-01T00:00:00Z", "2025-04-18T24:00:00Z", "yesterday", ""]) {
      assert.isUndefined(parseLegacyTime(bad), bad)
    }
  })
})

describe("golden examples (spec 1.5)", () => {
  it("UDP discovery datagram", () => {
    assert.strictEqual(
      text(encodeLegacyDiscovery({ port: 8523, ip: "192.168.1.20", time: T })),
      `{"Message":"discovery","Data":8523,"IP":"192.168.1.20","SourceOriginIdentifier":"","SourceOriginTime":"${T}"}`
    )
  })

  it("default-trust ping frame", () => {
    const ping = new PureMessagePacket({ Message: "Ping from 192.168.1.20", ...legacyOrigin("peer_one", T) })
    assert.strictEqual(
      text(encodeLegacyFrame(ping)),
      `<Message>{"Message":"Ping from 192.168.1.20","SourceOriginIdentifier":"peer_one","SourceOriginTime":"${T}"}</Message>`
    )
  })

  it("CollectionSharePacket with $type first in each element", () => {
    const share = new CollectionSharePacket({
      Data: 100,
      peers: [{ Port: 8523, Address: "203.0.113.7", Identifier: "peer_one" }],
      ...legacyOrigin("", T)
    })
    const json = `{"Data":100,"peers":[{"$type":"GenericPeer","Port":8523,"Address":"203.0.113.7","Identifier":"peer_one"}],"SourceOriginIdentifier":"","SourceOriginTime":"${T}"}`
    assert.strictEqual(encodeLegacyJson(share), json)
    assert.strictEqual(text(encodeLegacyFrame(share)), `<PeerGroup>${json}</PeerGroup>`)
  })

  it("heartbeat request body: a tagged Task in base64", () => {
    const task = new LegacyNetworkTask({ TaskType: LegacyTaskType.Heartbeat, TaskData: {} })
    const body = new DataTransmissionPacket({
      Data: wrapData("Task", legacyTaskBytes(task)),
      DataType: 1,
      ...legacyOrigin("peer_one", T)
    })
    assert.strictEqual(
      encodeLegacyJson(body),
      `{"Data":"PFRhc2s+eyJUYXNrVHlwZSI6MTUsIlRhc2tEYXRhIjp7fX08L1Rhc2s+","DataType":1,"SourceOriginIdentifier":"peer_one","SourceOriginTime":"${T}"}`
    )
    assert.strictEqual(
      Buffer.from("PFRhc2s+eyJUYXNrVHlwZSI6MTUsIlRhc2tEYXRhIjp7fX08L1Rhc2s+", "base64").toString(),
      `<Task>{"TaskType":15,"TaskData":{}}</Task>`
    )
  })

  it("initial bootstrap request body: a tagged IdentifierPacket as MiscData", () => {
    const identifier = new IdentifierPacket({
      Message: "discovery",
      Data: 8523,
      IP: "203.0.113.7",
      ...legacyOrigin("peer_one", T)
    })
    const inner = `{"Message":"discovery","Data":8523,"IP":"203.0.113.7","SourceOriginIdentifier":"peer_one","SourceOriginTime":"${T}"}`
    assert.strictEqual(encodeLegacyJson(identifier), inner)
    const body = new DataTransmissionPacket({
      Data: wrapData("MiscData", utf8(encodeLegacyJson(identifier))),
      DataType: 2,
      ...legacyOrigin("peer_one", T)
    })
    assert.strictEqual(
      encodeLegacyJson(body),
      `{"Data":"${base64(`<MiscData>${inner}</MiscData>`)}","DataType":2,"SourceOriginIdentifier":"peer_one","SourceOriginTime":"${T}"}`
    )
  })

  it("NetworkTask JSON and its MD5 hash", () => {
    const task = new LegacyNetworkTask({ TaskType: 4, TaskData: { TargetPeer: "203.0.113.9" } })
    assert.strictEqual(encodeLegacyTask(task), `{"TaskType":4,"TaskData":{"TargetPeer":"203.0.113.9"}}`)
    assert.strictEqual(legacyTaskHash(task), "ovR8sks8MOkO46b4O2AlWw==")
  })

  it("heartbeat response nests a task as an escaped string value", () => {
    const nested = new LegacyNetworkTask({ TaskType: 4, TaskData: { TargetPeer: "203.0.113.9" } })
    const response = new LegacyNetworkTask({
      TaskType: LegacyTaskType.HeartbeatResponse,
      TaskData: { Task_0: encodeLegacyTask(nested), Signature: legacyTaskHash(nested) }
    })
    assert.strictEqual(
      encodeLegacyTask(response),
      String.raw`{"TaskType":16,"TaskData":{"Task_0":"{\u0022TaskType\u0022:4,\u0022TaskData\u0022:{\u0022TargetPeer\u0022:\u0022203.0.113.9\u0022}}","Signature":"ovR8sks8MOkO46b4O2AlWw=="}}`
    )
  })

  it("Identity, DataTransmit and Disconnect frames", () => {
    const identity = new IdentifierPacket({ Message: "discovery", Data: 8523, IP: "::1", ...legacyOrigin("", T) })
    assert.strictEqual(
      text(encodeLegacyFrame(identity)),
      `<Identity>{"Message":"discovery","Data":8523,"IP":"::1","SourceOriginIdentifier":"","SourceOriginTime":"${T}"}</Identity>`
    )
    const file = new DataTransmissionPacket({
      Data: wrapData("File", utf8("hi")),
      DataType: 0,
      ...legacyOrigin("a", T)
    })
    assert.strictEqual(
      text(encodeLegacyFrame(file)),
      `<DataTransmit>{"Data":"${base64("<File>hi</File>")}","DataType":0,"SourceOriginIdentifier":"a","SourceOriginTime":"${T}"}</DataTransmit>`
    )
    const bye = new DisconnectPacket({
      IP: "203.0.113.7",
      Port: 8523,
      Timestamp: T,
      Data: { Reason: "bye" },
      ...legacyOrigin("peer_one", T)
    })
    assert.strictEqual(
      text(encodeLegacyFrame(bye)),
      `<Disconnect>{"IP":"203.0.113.7","Port":8523,"Timestamp":"${T}","Data":{"Reason":"bye"},"SourceOriginIdentifier":"peer_one","SourceOriginTime":"${T}"}</Disconnect>`
    )
  })

  it("a null string and null Data are written as null", () => {
    const p = new DataTransmissionPacket({ Data: null, DataType: 2, ...legacyOrigin(null, T) })
    assert.strictEqual(
      encodeLegacyJson(p),
      `{"Data":null,"DataType":2,"SourceOriginIdentifier":null,"SourceOriginTime":"${T}"}`
    )
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Arbitraries

const tricky = fc.constantFrom(
  "<",
  ">",
  "</Message>",
  "<Identity>",
  "</Task>",
  "é",
  "😀",
  "\u0000",
  "\n",
  "\u007f",
  '"',
  "\\",
  "+&'`",
  "\u2028"
)
const str = fc
  .array(fc.oneof(fc.string({ unit: "binary", maxLength: 6 }), tricky), { maxLength: 6 })
  .map((parts) => parts.join(""))
const nullableStr = fc.option(str, { nil: null })
const int32 = fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })
const time: fc.Arbitrary<LegacyTime> = fc.oneof(
  fc
    .tuple(
      fc.date({
        min: new Date("0001-01-01T00:00:00Z"),
        max: new Date("9999-12-31T23:59:59.999Z"),
        noInvalidDate: true
      }),
      fc.integer({ min: 0, max: 9999 })
    )
    .map(([d, ticks]) => legacyDateTime(d, ticks)),
  fc.constantFrom(
    ...([
      "2025-04-18T13:48:00.031Z",
      "2025-04-18T13:48:00",
      "2025-04-18T15:48:00+02:00",
      "2025-04-18"
    ] as Array<LegacyTime>)
  )
)
const dict = fc.dictionary(
  str.filter((k) => k !== "__proto__"),
  str,
  { maxKeys: 4 }
)
const origin = fc.record({ SourceOriginIdentifier: nullableStr, SourceOriginTime: time })

const anyLegacyPacket: fc.Arbitrary<LegacyPacket> = fc.oneof(
  fc
    .record({ Message: nullableStr, Data: int32, IP: nullableStr, o: origin })
    .map(({ o, ...p }) => new IdentifierPacket({ ...p, ...o })),
  fc.record({ Message: nullableStr, o: origin }).map(({ o, ...p }) => new PureMessagePacket({ ...p, ...o })),
  fc
    .record({
      Data: int32,
      peers: fc.array(fc.record({ Port: int32, Address: nullableStr, Identifier: nullableStr }), { maxLength: 3 }),
      o: origin
    })
    .map(({ o, ...p }) => new CollectionSharePacket({ ...p, ...o })),
  fc
    .record({ Data: fc.option(fc.uint8Array({ maxLength: 40 }), { nil: null }), DataType: int32, o: origin })
    .map(({ o, ...p }) => new DataTransmissionPacket({ ...p, ...o })),
  fc
    .record({ IP: nullableStr, Port: int32, Timestamp: time, Data: dict, o: origin })
    .map(({ o, ...p }) => new DisconnectPacket({ ...p, ...o }))
)

const frameOf = (p: LegacyPacket): LegacyFrame => ({ kind: legacyFrameKind(p), json: encodeLegacyJson(p) })
const concat = (parts: ReadonlyArray<Uint8Array>) => Uint8Array.from(parts.flatMap((p) => Array.from(p)))

/** Feeds the chunks to a fresh parser and collects the frames; fails the test on an error. */
const parseChunks = (chunks: ReadonlyArray<Uint8Array>, maxBufferBytes?: number) => {
  const parser = new LegacyStreamParser(maxBufferBytes === undefined ? {} : { maxBufferBytes })
  const frames: Array<LegacyFrame> = []
  for (const chunk of chunks) frames.push(...right(parser.push(chunk)))
  return { frames, end: parser.end(), parser }
}
/** Cuts `bytes` at the given offsets (wrapped into 0..length, so empty chunks happen too). */
const cutAt = (bytes: Uint8Array, cuts: ReadonlyArray<number>) =>
  splitAt(
    bytes,
    [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  )

describe("legacy packets", () => {
  it("encode then decode is the identity, and re-encoding gives the same bytes", () => {
    fc.assert(
      fc.property(anyLegacyPacket, (p) => {
        const json = encodeLegacyJson(p)
        const decoded = right(decodeLegacyPacket(legacyFrameKind(p), json))
        assert.deepStrictEqual(decoded, p)
        assert.strictEqual(encodeLegacyJson(decoded), json)
      }),
      { numRuns: 300 }
    )
  })

  it("C# output never contains a tag inside the JSON, since < and > are always escaped", () => {
    fc.assert(
      fc.property(anyLegacyPacket, (p) => {
        assert.notInclude(encodeLegacyJson(p), "<")
        assert.notInclude(encodeLegacyJson(p), ">")
      })
    )
  })

  it("ignores unknown properties, matches names case-sensitively and fills missing ones with C# defaults", () => {
    const message = right(decodeLegacyPacket("Message", `{"message":"lower","Extra":[1,{"x":2}]}`))
    assert.deepStrictEqual(
      message,
      new PureMessagePacket({
        Message: "Pinging",
        SourceOriginIdentifier: "",
        SourceOriginTime: "0001-01-01T00:00:00Z" as LegacyTime
      })
    )
    const share = right(decodeLegacyPacket("PeerGroup", `{"peers":[{"Port":1,"Address":"10.0.0.1"}]}`))
    assert.deepStrictEqual((share as CollectionSharePacket).peers, [{ Port: 1, Address: "10.0.0.1", Identifier: null }])
    const dtp = right(decodeLegacyPacket("DataTransmit", `{"DataType":7}`)) as DataTransmissionPacket
    assert.strictEqual(dtp.Data, null)
    assert.strictEqual(dtp.DataType, 7) // out-of-range enums are kept, as .NET does
    const bye = right(decodeLegacyPacket("Disconnect", `{}`)) as DisconnectPacket
    assert.deepStrictEqual(bye.Data, {})
    assert.strictEqual(bye.IP, null)
  })

  it("gives a typed error for malformed JSON and wrong types, never a throw", () => {
    const cases: ReadonlyArray<readonly [Parameters<typeof decodeLegacyPacket>[0], string, "NotJson" | "WrongShape"]> =
      [
        ["Message", "not json", "NotJson"],
        ["Message", `{"Message":"x"`, "NotJson"],
        ["Message", "null", "WrongShape"],
        ["Message", "[]", "WrongShape"],
        ["Message", `{"Message":5}`, "WrongShape"],
        ["Identity", `{"Data":"8523"}`, "WrongShape"],
        ["Identity", `{"Data":1.5}`, "WrongShape"],
        ["Identity", `{"Data":4294967296}`, "WrongShape"],
        ["Identity", `{"SourceOriginTime":"yesterday"}`, "WrongShape"],
        ["DataTransmit", `{"Data":"%%%"}`, "WrongShape"],
        ["DataTransmit", `{"DataType":"File"}`, "WrongShape"],
        ["PeerGroup", `{"peers":[{"$type":"BootstrapPeer","Port":1}]}`, "WrongShape"],
        ["Disconnect", `{"Data":{"a":1}}`, "WrongShape"]
      ]
    for (const [kind, json, reason] of cases) {
      const error = left(decodeLegacyPacket(kind, json))
      assert.strictEqual(error._tag, "LegacyDecodeError")
      assert.strictEqual(error.reason, reason, json)
    }
  })

  it("never throws on arbitrary text", () => {
    fc.assert(
      fc.property(fc.constantFrom(...legacyFrameKinds), fc.oneof(fc.string(), fc.json()), (kind, json) => {
        decodeLegacyPacket(kind, json)
      })
    )
  })
})

describe("payload-format tags", () => {
  it("unwrap undoes wrap for every format, even when the data contains the tags", () => {
    fc.assert(
      fc.property(fc.constantFrom<PayloadFormat>("File", "Task", "MiscData"), fc.uint8Array(), (format, bytes) => {
        assert.deepStrictEqual(right(unwrapData(format, wrapData(format, bytes))), bytes)
      })
    )
    const tricky = utf8("a</File>b<File>c")
    assert.deepStrictEqual(right(unwrapData(0, wrapData("File", tricky))), tricky)
  })

  it("returns untagged data as it is and reads tags with junk around them like the original", () => {
    assert.deepStrictEqual(right(unwrapData("Task", utf8(`{"TaskType":1}`))), utf8(`{"TaskType":1}`))
    assert.deepStrictEqual(right(unwrapData("MiscData", utf8("xx<MiscData>in</MiscData>yy"))), utf8("in"))
  })

  it("gives a LegacyTagError for a broken tag structure or an unknown DataType", () => {
    for (const broken of ["<Task>no close", "no open</Task>", "</Task>backwards<Task>"]) {
      assert.strictEqual(left(unwrapData("Task", utf8(broken)))._tag, "LegacyTagError", broken)
    }
    assert.strictEqual(left(unwrapData(3, utf8("x"))).dataType, 3)
  })
})

describe("legacy stream parser", () => {
  const stream = fc.array(
    fc.tuple(
      anyLegacyPacket,
      fc.uint8Array({ maxLength: 8 }).map((junk) => junk.map((b) => (b === 0x3c ? 0x20 : b)))
    ),
    { maxLength: 6 }
  )

  it("yields the same frames however the byte stream is cut, skipping junk between frames", () => {
    fc.assert(
      fc.property(stream, fc.array(fc.nat(), { maxLength: 12 }), (items, cuts) => {
        const bytes = concat(items.flatMap(([p, junk]) => [junk, encodeLegacyFrame(p)]))
        const expected = items.map(([p]) => frameOf(p))
        const whole = parseChunks([bytes])
        assert.deepStrictEqual(whole.frames, expected)
        assert.isTrue(Either.isRight(whole.end))
        assert.deepStrictEqual(parseChunks(cutAt(bytes, cuts)).frames, expected)
        assert.deepStrictEqual(parseChunks(Array.from(bytes, (b) => Uint8Array.of(b))).frames, expected)
      }),
      { numRuns: 150 }
    )
  })

  it("frames decode back to the packets that were sent", () => {
    fc.assert(
      fc.property(fc.array(anyLegacyPacket, { maxLength: 4 }), (packets) => {
        const { frames } = parseChunks([concat(packets.map(encodeLegacyFrame))])
        assert.deepStrictEqual(
          frames.map((f) => right(decodeLegacyPacket(f.kind, f.json))),
          packets
        )
      })
    )
  })

  it("skips junk and false starts before an opening tag, keeping a tag cut at the chunk end", () => {
    const { frames, parser } = parseChunks([utf8("HTTP/1.1 <Mess <Messag"), utf8("e>{}</Message>tail<Ide")])
    assert.deepStrictEqual(frames, [{ kind: "Message", json: "{}" }])
    assert.strictEqual(parser.buffered, 4)
  })

  it("takes the earliest opening tag and its first matching close, whatever other tags come between", () => {
    const { frames } = parseChunks([utf8("<PeerGroup>a<Message>b</PeerGroup></Message><Identity>c</Identity>")])
    assert.deepStrictEqual(frames, [
      { kind: "PeerGroup", json: "a<Message>b" },
      { kind: "Identity", json: "c" }
    ])
  })

  it("decodes a character cut across chunks once the frame is complete", () => {
    const bytes = utf8(`<Message>{"Message":"é😀"}</Message>`)
    const { frames } = parseChunks(Array.from(bytes, (b) => Uint8Array.of(b)))
    assert.deepStrictEqual(frames, [{ kind: "Message", json: `{"Message":"é😀"}` }])
  })

  it("fails with LegacyBufferOverflow past its bound, and stays failed", () => {
    const parser = new LegacyStreamParser({ maxBufferBytes: 64 })
    assert.isTrue(Either.isRight(parser.push(utf8("<Identity>"))))
    const error = left(parser.push(new Uint8Array(100)))
    assert.instanceOf(error, LegacyBufferOverflow)
    assert.strictEqual(error.max, 64)
    assert.isTrue(Either.isLeft(parser.push(utf8("</Identity>"))))
  })

  it("does not count junk against the bound", () => {
    const parser = new LegacyStreamParser({ maxBufferBytes: 64 })
    for (let i = 0; i < 10; i++) assert.deepStrictEqual(right(parser.push(new Uint8Array(1000).fill(0x41))), [])
    assert.strictEqual(parser.buffered, 0)
  })

  it("reports a frame left open at the end of the stream as truncated", () => {
    const { end } = parseChunks([utf8("<Message>{}</Message><DataTransmit>{")])
    const error = left(end)
    assert.strictEqual(error._tag, "LegacyTruncatedFrame")
    assert.strictEqual(error.kind, "DataTransmit")
    assert.strictEqual(error.bytes, "<DataTransmit>{".length)
  })
})

describe("legacy network tasks", () => {
  it("numbers the task types as at HEAD (spec 1.2)", () => {
    assert.deepStrictEqual(
      Object.values(LegacyTaskType),
      Array.from({ length: 19 }, (_, i) => i)
    )
    assert.strictEqual(LegacyTaskType.Heartbeat, 15)
    assert.strictEqual(LegacyTaskType.AssignIdentifierToPeer, 18)
    assert.strictEqual(legacyTaskTypeName(16, "snapshot"), "SetLocalIdentifier")
    assert.strictEqual(legacyTaskTypeName(17), "SetLocalIdentifier")
  })

  it("decodes unknown task types without failing and reports them as unknown", () => {
    const task = right(decodeLegacyTask(`{"TaskType":99,"TaskData":null,"Extra":1}`))
    assert.strictEqual(task.TaskType, 99)
    assert.isUndefined(task.typeName)
    assert.isFalse(isKnownLegacyTaskType(99))
    assert.isTrue(Option.isNone(toNativeTaskType(99)))
    assert.isTrue(Option.isNone(toNativeTaskRequest(task)))
    assert.strictEqual(encodeLegacyTask(task), `{"TaskType":99,"TaskData":null}`)
  })

  it("encode then decode is the identity for any 32-bit type and TaskData", () => {
    fc.assert(
      fc.property(int32, fc.option(dict, { nil: null }), (TaskType, TaskData) => {
        const task = new LegacyNetworkTask({ TaskType, TaskData })
        const decoded = right(decodeLegacyTask(legacyTaskBytes(task)))
        assert.deepStrictEqual(decoded, task)
        assert.strictEqual(encodeLegacyTask(decoded), encodeLegacyTask(task))
      })
    )
  })

  it("gives typed errors for bad task JSON", () => {
    for (const bad of ["", "{", `{"TaskType":"Heartbeat"}`, `{"TaskData":{"a":1}}`, "[]"]) {
      assert.strictEqual(left(decodeLegacyTask(bad))._tag, "LegacyDecodeError", bad)
    }
    assert.strictEqual(left(decodeLegacyTask(Uint8Array.of(0xff))).reason, "NotJson")
  })

  it("maps to and from the native task types by number", () => {
    const request = Option.getOrThrow(
      toNativeTaskRequest(new LegacyNetworkTask({ TaskType: 4, TaskData: { TargetPeer: "203.0.113.9" } }))
    )
    assert.deepStrictEqual(request, { taskType: "DisconnectPeer", taskData: { TargetPeer: "203.0.113.9" } })
    const back = Option.getOrThrow(fromNativeTaskRequest(request))
    assert.strictEqual(legacyTaskHash(back), "ovR8sks8MOkO46b4O2AlWw==")
    assert.isTrue(Option.isNone(fromNativeTaskRequest({ taskType: "HeartbeatResponse", taskData: {} }, "snapshot")))
  })
})

describe("legacy discovery datagram", () => {
  const datagram = encodeLegacyDiscovery({ port: 8523, ip: "192.168.1.20", identifier: "peer_one", time: T })

  it("decodes what it encodes", () => {
    const p = right(decodeLegacyDiscovery(datagram))
    assert.strictEqual(p.Data, 8523)
    assert.strictEqual(p.IP, "192.168.1.20")
    assert.strictEqual(p.SourceOriginTime, T)
  })

  it("refuses an oversize datagram before parsing it", () => {
    const error = left(decodeLegacyDiscovery(new Uint8Array(5000).fill(0x7b)))
    assert.strictEqual(error._tag, "LegacyDatagramTooLarge")
    assert.strictEqual(left(decodeLegacyDiscovery(datagram, 16))._tag, "LegacyDatagramTooLarge")
  })

  it("gives typed errors for non-JSON, the wrong shape and an undiallable port", () => {
    const bad = (s: string | Uint8Array) => left(decodeLegacyDiscovery(typeof s === "string" ? utf8(s) : s))
    assert.include(bad("hello") as object, { _tag: "LegacyDecodeError", reason: "NotJson", kind: "Discovery" })
    assert.include(bad(Uint8Array.of(0xc3)) as object, { _tag: "LegacyDecodeError", reason: "NotJson" })
    assert.include(bad(`{"Data":"8523"}`) as object, { _tag: "LegacyDecodeError", reason: "WrongShape" })
    assert.include(bad(`{"IP":"10.0.0.1"}`) as object, { _tag: "LegacyPortOutOfRange", port: 0 })
    assert.include(bad(`{"Data":70000}`) as object, { _tag: "LegacyPortOutOfRange", port: 70000 })
  })
})

describe("conversion to and from native packets", () => {
  const nodeId = "0123456789abcdef0123456789abcdef01234567" as NodeId
  const sentAt = DateTime.unsafeMake("2025-04-18T13:48:00.031Z")
  const natives: ReadonlyArray<Packet> = [
    new Identity({
      message: "discovery",
      address: IpAddress.make("192.168.1.20"),
      port: Port.make(8523),
      origin: nodeId,
      sentAt
    }),
    PureMessage.make({ message: "hi <there>", origin: nodeId, sentAt }),
    new PeerGroup({
      peers: [new PeerAddress({ address: IpAddress.make("203.0.113.7"), port: Port.make(8523), id: null })],
      origin: nodeId,
      sentAt
    }),
    DataTransmission.make({ format: "Task", data: utf8(`{"TaskType":15}`), origin: nodeId, sentAt }),
    new Disconnect({
      address: "10.0.0.1",
      port: Port.make(9000),
      reason: "bye",
      data: { k: "v" },
      origin: nodeId,
      sentAt
    })
  ]

  it("native to legacy to native keeps every field the legacy format carries", () => {
    for (const native of natives) {
      const legacy = fromNativePacket(native, { identifier: "peer_one" })
      assert.strictEqual(legacy.SourceOriginIdentifier, "peer_one")
      assert.strictEqual(legacy.SourceOriginTime, "2025-04-18T13:48:00.031Z")
      const back = right(
        toNativePacket(right(decodeLegacyPacket(legacyFrameKind(legacy), encodeLegacyJson(legacy))), { origin: nodeId })
      )
      assert.deepStrictEqual(back, native)
    }
  })

  it("wraps DataTransmission data in its format tags and reads untagged legacy data as it is", () => {
    const legacy = fromNativePacket(natives[3]!) as DataTransmissionPacket
    assert.strictEqual(text(legacy.Data!), `<Task>{"TaskType":15}</Task>`)
    assert.strictEqual(legacy.DataType, 1)
    const untagged = new DataTransmissionPacket({ Data: utf8("raw"), DataType: 2, ...legacyOrigin("", T) })
    const native = right(toNativePacket(untagged, { origin: nodeId })) as DataTransmission
    assert.strictEqual(text(native.data), "raw")
  })

  it("refuses what has no native form and drops unusable peers from a share", () => {
    const o = legacyOrigin("x", T)
    const noIp = new IdentifierPacket({ Message: "discovery", Data: 1, IP: null, ...o })
    assert.strictEqual(left(toNativePacket(noIp, { origin: nodeId }))._tag, "LegacyConversionError")
    const badType = new DataTransmissionPacket({ Data: utf8("x"), DataType: 9, ...o })
    assert.strictEqual(left(toNativePacket(badType, { origin: nodeId }))._tag, "LegacyConversionError")
    const share = new CollectionSharePacket({
      Data: 100,
      peers: [
        { Port: 1, Address: null, Identifier: null },
        { Port: 70000, Address: "1.2.3.4", Identifier: null },
        { Port: 8523, Address: "1.2.3.4", Identifier: "peer_one" }
      ],
      ...o
    })
    const group = right(toNativePacket(share, { origin: nodeId })) as PeerGroup
    assert.deepStrictEqual(
      group.peers.map((p) => p.label),
      ["1.2.3.4:8523"]
    )
  })
})

describe("docs/protocol.md, Legacy section", () => {
  it("states the escaping example, the task hash and the datagram as the code produces them", () => {
    const doc = fs.readFileSync(new URL("../docs/protocol.md", import.meta.url), "utf8")
    assert.include(doc, "`" + legacyString("a<b>&'\"+`\\/é\n😀") + "`")
    const task = new LegacyNetworkTask({ TaskType: 4, TaskData: { TargetPeer: "203.0.113.9" } })
    assert.include(doc, "`" + encodeLegacyTask(task) + "` → `" + legacyTaskHash(task) + "`")
    const datagram = text(encodeLegacyDiscovery({ port: 8523, ip: "192.168.1.20", time: T }))
    assert.include(doc, datagram.replace(T, "..."))
  })
})
