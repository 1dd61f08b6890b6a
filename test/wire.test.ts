/**
 * Wire protocol v1 (src/schema/wire.ts) as properties: every packet and handshake message survives framing, the
 * frame reader does not care how the byte stream is cut, and every malformed input becomes a typed error rather
 * than a throw or an allocation. Arbitraries are derived from the Schemas where JSON can carry every value.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Either, FastCheck as fc, Schema } from "effect"
import { afterEach, vi } from "vitest"
import { FrameNotJson, FrameTooLarge, FrameTruncated, InvalidPacket, UnknownPacketKind } from "../src/schema/errors.js"
import type { FrameError } from "../src/schema/errors.js"
import { HandshakeData } from "../src/schema/handshake.js"
import { DataTransmission, PureMessage } from "../src/schema/packets.js"
import type { FrameValue } from "../src/schema/wire.js"
import { decodeBody, DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameReader, frameClasses } from "../src/schema/wire.js"
import { splitAt } from "./support/bytes.js"
import { lengthPrefix, rawFrame, rawFrameBytes } from "./support/raw-peer.js"

const kinds = frameClasses
type Kind = keyof typeof kinds
const kindNames = Object.keys(kinds) as ReadonlyArray<Kind>
/** The class of a kind, for instanceof checks. */
const classOf = (kind: Kind) => kinds[kind] as unknown as new (...args: Array<any>) => FrameValue
const schemaOf = (kind: Kind) => kinds[kind] as unknown as Schema.Schema<FrameValue, Record<string, unknown>>

/** HandshakeData.payload is Schema.Unknown: its derived arbitrary yields `undefined` and -0, which JSON cannot hold. */
const jsonPayload = fc.jsonValue().map((v) => JSON.parse(JSON.stringify(v)) as unknown)

/** Strings of any UTF-16 code units, lone surrogates included (Schema-derived strings are ASCII only). */
const anyString = fc.oneof(
  fc.string({ unit: "binary" }),
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((u) => String.fromCharCode(u)) })
)

const arbitraryOf = (kind: Kind): fc.Arbitrary<FrameValue> =>
  kind === "HandshakeData"
    ? jsonPayload.map((payload) => HandshakeData.make({ payload }))
    : (Arbitrary.make(schemaOf(kind)) as fc.Arbitrary<FrameValue>)

const anyValue: fc.Arbitrary<FrameValue> = fc.oneof(
  ...kindNames.map(arbitraryOf),
  fc.tuple(Arbitrary.make(PureMessage), anyString).map(([m, message]) => PureMessage.make({ ...m, message }))
)

/** What a value looks like on the wire, bytes as hex: equal views mean equal values. */
const wireView = (value: FrameValue) => {
  const encoded = Schema.encodeSync(schemaOf(value._tag))(value)
  return value._tag === "DataTransmission" ? { ...encoded, data: Buffer.from(value.data).toString("hex") } : encoded
}

/** Feeds the chunks to a fresh reader; stops at the first error, as a channel does. */
const readChunks = (chunks: ReadonlyArray<Uint8Array>, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) => {
  const reader = new FrameReader(maxFrameBytes)
  const bodies: Array<Uint8Array> = []
  for (const chunk of chunks) {
    const tooLarge = reader.push(chunk, (body) => bodies.push(Uint8Array.from(body)))
    if (tooLarge !== undefined) return { bodies, error: tooLarge as FrameTooLarge | FrameTruncated }
  }
  return { bodies, error: reader.end() }
}

const decodeOne = (frame: Uint8Array): FrameValue => {
  const { bodies, error } = readChunks([frame])
  assert.isUndefined(error)
  assert.strictEqual(bodies.length, 1)
  const decoded = decodeBody(bodies[0]!)
  if (Either.isLeft(decoded)) return assert.fail(decoded.left.message)
  return decoded.right
}

const decodeError = (body: Uint8Array): FrameError => {
  const decoded = decodeBody(body)
  if (Either.isRight(decoded)) return assert.fail(`decoded ${decoded.right._tag}, expected a frame error`)
  return decoded.left
}

/** A frame body (without its length prefix) holding the given header bytes. */
const body = (header: Uint8Array, attachment: Uint8Array = new Uint8Array(0)) =>
  rawFrameBytes(header, attachment).subarray(4)
const jsonBody = (header: unknown, attachment?: Uint8Array) => rawFrame(header, attachment).subarray(4)

/** Ways to cut a stream of `length` bytes into chunks: all at once, one byte at a time, or at random offsets. */
const cuts = (length: number) =>
  fc.oneof(
    fc.constant<ReadonlyArray<number>>([]),
    fc.constant<ReadonlyArray<number>>(Array.from({ length: Math.max(0, length - 1) }, (_, i) => i + 1)),
    fc
      .uniqueArray(fc.integer({ min: 1, max: Math.max(1, length - 1) }), { maxLength: 64 })
      .map((a) => a.filter((n) => n < length).sort((x, y) => x - y))
  )
const hex = (bodies: ReadonlyArray<Uint8Array>) => bodies.map((b) => Buffer.from(b).toString("hex"))

const frameErrorClasses = [FrameNotJson, UnknownPacketKind, InvalidPacket] as const

describe("wire protocol v1: round trip", () => {
  for (const kind of kindNames) {
    it.prop(`${kind} survives encodeFrame, FrameReader and decodeBody unchanged`, [arbitraryOf(kind)], ([value]) => {
      const decoded = decodeOne(encodeFrame(value))
      assert.instanceOf(decoded, classOf(kind))
      assert.deepStrictEqual(wireView(decoded), wireView(value))
    })
  }

  it.prop(
    "a Hello's JSON header, written by hand on the opening path, is what its Schema encodes, _tag first",
    [arbitraryOf("Hello")],
    ([value]) => {
      const frame = encodeFrame(value)
      const header = frame.subarray(8, 8 + frame.readUInt32BE(4)).toString("utf8")
      const { _tag, ...fields } = Schema.encodeSync(schemaOf("Hello"))(value)
      assert.strictEqual(header, JSON.stringify({ _tag, ...fields }))
    }
  )

  it.prop(
    "strings of any UTF-16 code units, lone surrogates included, survive the JSON header",
    [Arbitrary.make(PureMessage), anyString],
    ([m, message]) => {
      const decoded = decodeOne(encodeFrame(PureMessage.make({ ...m, message })))
      assert.strictEqual((decoded as PureMessage).message, message)
    }
  )

  it.prop(
    "origin time travels as integer milliseconds over the whole DateTime range",
    [Arbitrary.make(PureMessage), fc.integer({ min: -8_640_000_000_000_000, max: 8_640_000_000_000_000 })],
    ([m, millis]) => {
      const sent = PureMessage.make({ ...m, sentAt: Schema.decodeSync(Schema.DateTimeUtcFromNumber)(millis) })
      const decoded = decodeOne(encodeFrame(sent)) as PureMessage
      assert.strictEqual(decoded.sentAt.epochMillis, millis)
    }
  )

  it.prop(
    "a DataTransmission carries its bytes as a raw attachment, not in the JSON header",
    [Arbitrary.make(DataTransmission)],
    ([value]) => {
      const frame = encodeFrame(value)
      const headerLength = frame.readUInt32BE(4)
      assert.strictEqual(frame.readUInt32BE(0), frame.length - 4)
      assert.strictEqual(frame.length, 8 + headerLength + value.data.length)
      assert.isFalse("data" in JSON.parse(frame.subarray(8, 8 + headerLength).toString("utf8")))
      assert.deepStrictEqual(Uint8Array.from(frame.subarray(8 + headerLength)), Uint8Array.from(value.data))
    }
  )
})

describe("wire protocol v1: FrameReader", () => {
  /** A byte stream of frames: encoded values, and length-prefixed arbitrary bodies (empty ones included). */
  const stream = fc
    .array(
      fc.oneof(
        anyValue.map(encodeFrame),
        fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.concat([lengthPrefix(b.length), b]))
      ),
      { maxLength: 12 }
    )
    .map((frames) => ({ frames, bytes: Buffer.concat(frames) }))
  const withCuts = stream.chain((s) => fc.tuple(fc.constant(s), cuts(s.bytes.length)))

  it.prop("yields the same frames however the byte stream is split into chunks", [withCuts], ([[s, at]]) => {
    const whole = readChunks([s.bytes])
    const pieces = readChunks(splitAt(s.bytes, at))
    assert.isUndefined(whole.error)
    assert.isUndefined(pieces.error)
    assert.deepStrictEqual(hex(whole.bodies), hex(s.frames.map((f) => f.subarray(4))))
    assert.deepStrictEqual(hex(pieces.bodies), hex(whole.bodies))
  })

  it.prop(
    "decodes every value of a chunked stream in order",
    [
      fc.array(anyValue, { minLength: 1, maxLength: 8 }).chain((values) => {
        const bytes = Buffer.concat(values.map(encodeFrame))
        return fc.tuple(fc.constant(values), fc.constant(bytes), cuts(bytes.length))
      })
    ],
    ([[values, bytes, at]]) => {
      const { bodies, error } = readChunks(splitAt(bytes, at))
      assert.isUndefined(error)
      const decoded = bodies.map((b) => Either.getOrThrow(decodeBody(b)))
      assert.deepStrictEqual(decoded.map(wireView), values.map(wireView))
    }
  )

  it.prop(
    "a stream cut short is FrameTruncated at end(), with what was expected and received",
    [
      anyValue
        .chain((v) => {
          const frame = encodeFrame(v)
          return fc.tuple(fc.constant(frame), fc.integer({ min: 1, max: frame.length - 1 }))
        })
        .chain(([frame, keep]) => fc.tuple(fc.constant(frame), fc.constant(keep), cuts(keep)))
    ],
    ([[frame, keep, at]]) => {
      const { bodies, error } = readChunks(splitAt(frame.subarray(0, keep), at))
      assert.strictEqual(bodies.length, 0)
      assert.instanceOf(error, FrameTruncated)
      const expected =
        keep < 4
          ? new FrameTruncated({ expected: 4, received: keep })
          : new FrameTruncated({ expected: frame.length - 4, received: keep - 4 })
      assert.deepStrictEqual(error, expected)
    }
  )

  it.prop(
    "accepts a frame of exactly maxFrameBytes and refuses one byte more, however the prefix arrives",
    [fc.integer({ min: 0, max: 4096 }), fc.boolean()],
    ([max, byteByByte]) => {
      const over = lengthPrefix(max + 1)
      const exact = Buffer.concat([lengthPrefix(max), Buffer.alloc(max, 7)])
      const chunk = (b: Buffer) =>
        byteByByte
          ? splitAt(
              b,
              Array.from({ length: b.length - 1 }, (_, i) => i + 1)
            )
          : [b]
      const accepted = readChunks(chunk(exact), max)
      assert.isUndefined(accepted.error)
      assert.strictEqual(accepted.bodies.length, 1)
      assert.deepStrictEqual(readChunks(chunk(over), max).error, new FrameTooLarge({ size: max + 1, max }))
    }
  )

  describe("a length prefix over the maximum", () => {
    afterEach(() => {
      vi.restoreAllMocks()
    })

    it("is FrameTooLarge at once, before any buffer is allocated (0xFFFFFFFF, whole or byte by byte)", () => {
      const allocUnsafe = vi.spyOn(Buffer, "allocUnsafe")
      const alloc = vi.spyOn(Buffer, "alloc")
      const before = process.memoryUsage().arrayBuffers
      for (const length of [0xffffffff, 0xfffffff0, DEFAULT_MAX_FRAME_BYTES + 1]) {
        const prefix = lengthPrefix(length)
        alloc.mockClear()
        allocUnsafe.mockClear()
        for (const chunks of [[prefix], [...prefix].map((b) => Uint8Array.of(b))]) {
          const reader = new FrameReader(DEFAULT_MAX_FRAME_BYTES)
          const errors = chunks.map((c) => reader.push(c, () => assert.fail("no frame expected")))
          assert.deepStrictEqual(errors.at(-1), new FrameTooLarge({ size: length, max: DEFAULT_MAX_FRAME_BYTES }))
          assert.strictEqual(reader.buffered, 0)
        }
        // the reader's own 4-byte prefix buffer is the only allocation
        const sizes = [...allocUnsafe.mock.calls, ...alloc.mock.calls].map(([size]) => size)
        assert.deepStrictEqual(
          sizes.filter((n) => n > 4),
          []
        )
      }
      assert.isBelow(process.memoryUsage().arrayBuffers - before, 4 * 1024 * 1024)
    })
  })

  it.prop(
    "never throws on arbitrary chunks: only FrameTooLarge from push, FrameTruncated from end()",
    [fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 16 }), fc.integer({ min: 0, max: 128 })],
    ([chunks, max]) => {
      const reader = new FrameReader(max)
      for (const chunk of chunks) {
        const error = reader.push(chunk, (b) => {
          assert.isAtMost(b.length, max)
          decodeBody(b)
        })
        assert.isAtMost(reader.buffered, max + 4)
        if (error !== undefined) {
          assert.instanceOf(error, FrameTooLarge)
          assert.isAbove(error.size, max)
          return
        }
      }
      const end = reader.end()
      if (end !== undefined) assert.instanceOf(end, FrameTruncated)
    }
  )
})

describe("wire protocol v1: decodeBody", () => {
  /** Bodies from garbage to almost-valid: random bytes, random headers, known kinds with random fields, bit flips. */
  const garbage = fc.oneof(
    fc.uint8Array({ maxLength: 256 }),
    fc.tuple(fc.uint8Array({ maxLength: 128 }), fc.uint8Array({ maxLength: 32 })).map(([h, a]) => body(h, a)),
    fc.tuple(fc.json(), fc.uint8Array({ maxLength: 8 })).map(([j, a]) => body(Buffer.from(j), a)),
    fc
      .tuple(
        fc.oneof(fc.constantFrom(...kindNames), fc.string()),
        fc.dictionary(
          fc.constantFrom("message", "address", "port", "origin", "sentAt", "peers", "data", "payload"),
          fc.jsonValue()
        ),
        fc.uint8Array({ maxLength: 8 })
      )
      .map(([tag, fields, a]) => jsonBody({ ...fields, _tag: tag }, a)),
    fc.tuple(anyValue, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([v, at, mask]) => {
      const b = Uint8Array.from(encodeFrame(v).subarray(4))
      b[at % b.length] = b[at % b.length]! ^ mask
      return b
    })
  )

  it.prop(
    "never throws: arbitrary bodies decode to a frame value or a typed frame error",
    [garbage],
    ([bytes]) => {
      const decoded = decodeBody(bytes)
      if (Either.isRight(decoded)) {
        assert.instanceOf(decoded.right, classOf(decoded.right._tag))
        return
      }
      assert.isTrue(
        frameErrorClasses.some((c) => decoded.left instanceof c),
        decoded.left._tag
      )
      assert.isAbove(decoded.left.message.length, 0)
    },
    { fastCheck: { numRuns: 500 } }
  )

  it.prop(
    "an unknown _tag is UnknownPacketKind naming it",
    [
      fc
        .oneof(
          fc.string(),
          anyString,
          fc.constantFrom("__proto__", "constructor", "toString", "hasOwnProperty", "identity")
        )
        .filter((t) => !Object.prototype.hasOwnProperty.call(kinds, t))
    ],
    ([tag]) => {
      assert.deepStrictEqual(decodeError(jsonBody({ _tag: tag, message: "hi" })), new UnknownPacketKind({ kind: tag }))
    }
  )

  /** Every header field of every kind but HandshakeData's payload (any JSON) and DataTransmission's data. */
  const fieldToBreak = fc.constantFrom(...kindNames.filter((k) => k !== "HandshakeData")).chain((kind) =>
    arbitraryOf(kind).chain((value) => {
      const header = wireView(value) as Record<string, unknown>
      const fields = Object.keys(header).filter((f) => f !== "_tag" && f !== "data")
      return fc.tuple(fc.constant(kind), fc.constant(value), fc.constantFrom(...fields))
    })
  )

  it.prop(
    "a field of the wrong type is InvalidPacket naming the kind and the field",
    [fieldToBreak],
    ([[kind, value, field]]) => {
      const frame = encodeFrame(value)
      const headerLength = frame.readUInt32BE(4)
      const header = JSON.parse(frame.subarray(8, 8 + headerLength).toString("utf8"))
      header[field] = null
      const error = decodeError(jsonBody(header, frame.subarray(8 + headerLength)))
      assert.instanceOf(error, InvalidPacket)
      assert.strictEqual((error as InvalidPacket).kind, kind)
      assert.include((error as InvalidPacket).detail, `["${field}"]`)
    }
  )

  it("invalid fields are InvalidPacket whose detail says what is wrong", () => {
    const origin = "ab".repeat(20)
    const cases: ReadonlyArray<readonly [header: Record<string, unknown>, mentions: ReadonlyArray<string>]> = [
      [{ _tag: "Identity", message: "m", address: "127.0.0.1", port: 70000, origin, sentAt: 0 }, ["port", "65535"]],
      [{ _tag: "PureMessage", message: "m", origin: "not-a-node-id", sentAt: 0 }, ["origin"]],
      [{ _tag: "PureMessage", message: 42, origin, sentAt: 0 }, ["message", "string"]],
      [{ _tag: "PureMessage", message: "m", origin, sentAt: "yesterday" }, ["sentAt"]],
      [{ _tag: "PureMessage", message: "m", origin }, ["sentAt", "missing"]],
      [{ _tag: "DataTransmission", format: "Video", origin, sentAt: 0 }, ["format", "Video"]],
      [
        { _tag: "Hello", version: 1.5, network: "n", nodeId: origin, publicKey: "", nonce: "", listenPort: 1 },
        ["version"]
      ],
      [{ _tag: "HandshakeVerdict", accepted: "yes", reason: "" }, ["accepted", "boolean"]]
    ]
    for (const [header, mentions] of cases) {
      const error = decodeError(jsonBody(header))
      assert.instanceOf(error, InvalidPacket, JSON.stringify(header))
      assert.strictEqual((error as InvalidPacket).kind, header["_tag"])
      for (const word of mentions) assert.include(error.message, word)
    }
  })

  it("an attachment on a kind that has none is InvalidPacket", () => {
    const error = decodeError(jsonBody({ _tag: "Reject", reason: "r" }, Uint8Array.of(1, 2, 3)))
    assert.deepStrictEqual(error, new InvalidPacket({ kind: "Reject", detail: "unexpected 3-byte attachment" }))
  })

  it("a header that is JSON but not an object is InvalidPacket", () => {
    for (const json of ["[1,2]", '"Hello"', "3", "null", "true"]) {
      const error = decodeError(body(Buffer.from(json)))
      assert.instanceOf(error, InvalidPacket, json)
    }
  })

  it.prop(
    "a header that is not UTF-8 JSON is FrameNotJson",
    [
      fc.oneof(
        fc
          .string()
          .filter((s) => {
            try {
              JSON.parse(s)
              return false
            } catch {
              return true
            }
          })
          .map((s) => Buffer.from(s, "utf8")),
        // bytes that are never valid UTF-8 anywhere in a string
        fc
          .tuple(fc.string(), fc.constantFrom(0xc0, 0xc1, 0xf5, 0xff), fc.string())
          .map(([a, bad, b]) =>
            Buffer.concat([
              Buffer.from(`{"_tag":"PureMessage","message":"${a.replace(/["\\]/g, "")}`),
              Uint8Array.of(bad),
              Buffer.from(`${b.replace(/["\\]/g, "")}"}`)
            ])
          )
      )
    ],
    ([header]) => {
      assert.instanceOf(decodeError(body(header)), FrameNotJson)
    }
  )

  it("a body too short for its header length, or whose header length overruns it, is FrameNotJson", () => {
    for (const bytes of [new Uint8Array(0), Uint8Array.of(0, 0, 1), Uint8Array.of(0, 0, 0, 9, 123, 125)]) {
      assert.instanceOf(decodeError(bytes), FrameNotJson)
    }
    assert.instanceOf(decodeError(Buffer.concat([lengthPrefix(0xffffffff), Buffer.from("{}")])), FrameNotJson)
  })
})
