/**
 * What the two benchmark processes share: the messages between the driver (bench/channel.ts) and the receiver
 * (bench/peer.ts) over the IPC channel, the payload sizes, and the baseline's framing (a 4-byte big-endian length,
 * then the body), the plain node:net protocol every library figure is compared with.
 */

/** The text of a small message: PureMessage.message in the library run, the same field in the baseline's JSON. */
export const SMALL_TEXT = "x".repeat(100)
/** The payload of a bulk frame: DataTransmission.data in the library run, the frame body in the baseline. */
export const BULK_BYTES = 64 * 1024
/** The handshake probe and its answer. */
export const PING = "ping"
export const PONG = "pong"

/** Driver to receiver. */
export type ToPeer =
  /** Count the next `count` messages, on whichever path they arrive, then report Done. */
  { readonly _tag: "Arm"; readonly count: number } | { readonly _tag: "Quit" }

/** Receiver to driver. */
export type FromPeer =
  | {
      readonly _tag: "Ready"
      /** The library node with default settings (a Noise session). */
      readonly libraryPort: number
      /** The library node with `session: "plain"` (clear text), for the encrypted-vs-plain comparison. */
      readonly plainPort: number
      readonly smallPort: number
      readonly bulkPort: number
      readonly echoPort: number
    }
  | { readonly _tag: "Armed" }
  /**
   * `bytes` counts payload bytes only (message text or data); the time is the receiver's own clock, from its first
   * message to its last; `cpuMicros` is the receiver's CPU time (user + system) from Arm to the last message.
   */
  | {
      readonly _tag: "Done"
      readonly count: number
      readonly bytes: number
      readonly firstToLastMillis: number
      readonly cpuMicros: number
    }
  | { readonly _tag: "Failed"; readonly detail: string }

/** One 4-byte-length frame per body, in a single buffer (the baseline batches its writes this way). */
export const frameAll = (bodies: ReadonlyArray<Buffer>): Buffer => {
  let total = 0
  for (const b of bodies) total += 4 + b.length
  const out = Buffer.allocUnsafe(total)
  let offset = 0
  for (const b of bodies) {
    out.writeUInt32BE(b.length, offset)
    b.copy(out, offset + 4)
    offset += 4 + b.length
  }
  return out
}

export const lengthPrefix = (length: number): Buffer => {
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE(length, 0)
  return b
}

export const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}
