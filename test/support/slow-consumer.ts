/**
 * A slow application for back-pressure tests: takes `frames` DataTransmissions from one peer, one per event-loop
 * turn, checks they arrive in order (each carries its index in its first 4 bytes), and after each one checks that
 * what the node has read but the application not yet taken stays within `limitBytes`.
 */
import { assert } from "@effect/vitest"
import { Effect, Stream } from "effect"
import type { ChannelStats, PacketReceived } from "../../src/actors/PeerChannel.js"
import { nextTurn } from "./test-clock.js"
import type { DataTransmission } from "../../src/schema/packets.js"

export interface SlowConsumer {
  readonly packets: Stream.Stream<PacketReceived>
  readonly from: string
  readonly frames: number
  /** Stats of the receiving node's channel from that peer (its bytesIn counts what it has read). */
  readonly stats: Effect.Effect<ChannelStats>
  /** bytesIn before the first of these packets. */
  readonly baseline: number
  /** Bytes of one packet's frame. */
  readonly frameBytes: number
  readonly limitBytes: number
}

/** Returns how many packets were taken and the most the node held at once. */
export const consumeSlowly = (c: SlowConsumer) =>
  Effect.gen(function* () {
    let consumed = 0
    let highest = 0
    yield* c.packets.pipe(
      Stream.filter((r) => r.channel.remoteId === c.from),
      Stream.take(c.frames),
      Stream.runForEach((r) =>
        Effect.gen(function* () {
          const data = (r.packet as DataTransmission).data
          assert.strictEqual(Buffer.from(data.buffer, data.byteOffset, data.byteLength).readUInt32BE(0), consumed)
          consumed++
          const held = (yield* c.stats).bytesIn - c.baseline - consumed * c.frameBytes
          highest = Math.max(highest, held)
          assert.isAtMost(held, c.limitBytes, `node holds ${held} bytes after ${consumed} packets`)
          // let the socket deliver whatever the node is willing to read before the next packet
          yield* nextTurn
        })
      )
    )
    return { consumed, highest }
  })
