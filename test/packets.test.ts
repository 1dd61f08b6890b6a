import { assert, describe, it } from "@effect/vitest"
import { DateTime, Equal } from "effect"
import { DataTransmission, PureMessage } from "../src/schema/packets.js"
import type { NodeId } from "../src/schema/ids.js"

const origin = "0123456789abcdef0123456789abcdef01234567" as NodeId
const sentAt = DateTime.unsafeMake(1_700_000_000_000)

describe("packet constructors", () => {
  it("PureMessage.make builds the same instance as the Schema constructor", () => {
    const quick = PureMessage.make({ message: "hi", origin, sentAt })
    const schema = new PureMessage({ message: "hi", origin, sentAt })
    assert.isTrue(quick instanceof PureMessage)
    assert.isTrue(Equal.equals(quick, schema))
    assert.deepStrictEqual(Object.keys(quick), Object.keys(schema))
    assert.strictEqual(JSON.stringify(quick), JSON.stringify(schema))
  })

  it("DataTransmission.make builds the same instance as the Schema constructor", () => {
    const data = new Uint8Array([1, 2, 3])
    const quick = DataTransmission.make({ format: "File", data, origin, sentAt })
    const schema = new DataTransmission({ format: "File", data, origin, sentAt })
    assert.isTrue(quick instanceof DataTransmission)
    assert.deepStrictEqual(Object.keys(quick), Object.keys(schema))
    assert.strictEqual(quick.data, data)
    assert.strictEqual(quick._tag, "DataTransmission")
  })

  it("make rejects what the Schema rejects, with the Schema's error", () => {
    assert.throws(() => PureMessage.make({ message: 1 as never, origin, sentAt }), /Expected string/)
    assert.throws(() => PureMessage.make({ message: "x", origin: "NOT-AN-ID" as NodeId, sentAt }), /origin/)
    assert.throws(
      () => DataTransmission.make({ format: "Photo" as never, data: new Uint8Array(), origin, sentAt }),
      /format/
    )
    assert.throws(() => PureMessage.make({ message: "x", origin, sentAt: 5 as never }), /sentAt/)
  })
})
