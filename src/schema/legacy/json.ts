/**
 * A JSON writer that reproduces .NET System.Text.Json default output byte for byte (reference spec 1.1): compact,
 * properties in the order given, integers, base64 byte arrays, the round-trip DateTime format and the default
 * JavaScriptEncoder escaping (uppercase \uXXXX). JSON.stringify is not compatible, and the bootstrap task hash
 * (spec 8.6) is computed over these exact bytes. Reading needs no special parser: any JSON parser accepts this output.
 */
import { DateTime, Encoding, Schema } from "effect"

/**
 * A DateTime in one of the ISO-8601 forms .NET reads: `yyyy-MM-dd`, optionally `THH:mm[:ss[.fffffff]]` and a `Z` or
 * `±hh:mm` offset. Legacy packets keep the string they were decoded from, so decoding then encoding is the identity
 * (JS Date stops at milliseconds; .NET writes up to 7 fractional digits).
 */
export const LegacyTime = Schema.String.pipe(
  Schema.filter((s) => parseLegacyTime(s) !== undefined, {
    message: () => "Expected an ISO-8601 date-time (yyyy-MM-ddTHH:mm:ss[.fffffff][Z|±hh:mm])"
  }),
  Schema.brand("LegacyTime")
)
export type LegacyTime = typeof LegacyTime.Type

/** A DateTime value in a legacy JSON tree: written between quotes, never escaped (it only holds [0-9T:.Z+-]). */
export class LegacyJsonDate {
  constructor(readonly iso: LegacyTime) {}
}

/**
 * A value the legacy writer accepts. Objects are written in their key order: a `Map` keeps any insertion order; a
 * plain object puts integer-like keys ("0", "12") first, as JS does, so use a `Map` for dictionaries with such keys.
 * A `Uint8Array` is written as padded base64, unescaped, like .NET's `byte[]`.
 */
export type LegacyJsonValue =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | LegacyJsonDate
  | ReadonlyArray<LegacyJsonValue>
  | ReadonlyMap<string, LegacyJsonValue>
  | { readonly [key: string]: LegacyJsonValue }

const HEX = "0123456789ABCDEF"
const unicodeEscape = (code: number): string =>
  "\\u" + HEX[(code >> 12) & 15] + HEX[(code >> 8) & 15] + HEX[(code >> 4) & 15] + HEX[code & 15]

/** True for the code units .NET's default encoder writes raw: printable ASCII except " & ' + < > ` and backslash. */
const isRaw = (c: number): boolean =>
  c >= 0x20 &&
  c <= 0x7e &&
  c !== 0x22 &&
  c !== 0x26 &&
  c !== 0x27 &&
  c !== 0x2b &&
  c !== 0x3c &&
  c !== 0x3e &&
  c !== 0x60 &&
  c !== 0x5c

const escapeUnit = (c: number): string => {
  switch (c) {
    case 0x5c:
      return "\\\\"
    case 0x0a:
      return "\\n"
    case 0x0d:
      return "\\r"
    case 0x09:
      return "\\t"
    case 0x08:
      return "\\b"
    case 0x0c:
      return "\\f"
    default:
      return unicodeEscape(c)
  }
}

/**
 * The body of a JSON string as .NET's default JavaScriptEncoder writes it, without the quotes. Astral characters
 * become a surrogate pair of escapes; a lone surrogate (not well-formed UTF-16) is written as \uFFFD.
 *
 * @example
 * escapeLegacyString("a<b") // "a\\u003Cb"
 */
export const escapeLegacyString = (s: string): string => {
  let out = ""
  let runStart = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (isRaw(c)) continue
    out += s.slice(runStart, i)
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0
      if (next >= 0xdc00 && next <= 0xdfff) {
        out += unicodeEscape(c) + unicodeEscape(next)
        i++
      } else {
        out += "\\uFFFD"
      }
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      out += "\\uFFFD"
    } else {
      out += escapeUnit(c)
    }
    runStart = i + 1
  }
  return runStart === 0 ? s : out + s.slice(runStart)
}

/** A JSON string literal (with quotes) as .NET writes it. */
export const legacyString = (s: string): string => `"${escapeLegacyString(s)}"`

/** Integers as .NET writes an `int`/`long`; other finite numbers in JS's shortest form; non-finite ones as null. */
const legacyNumber = (n: number): string => (Number.isFinite(n) ? String(n) : "null")

/**
 * Serializes a value exactly as System.Text.Json with default options would (compact, order as given).
 *
 * @example
 * legacyStringify({ TaskType: 4, TaskData: { TargetPeer: "203.0.113.9" } })
 * // '{"TaskType":4,"TaskData":{"TargetPeer":"203.0.113.9"}}'
 */
export const legacyStringify = (value: LegacyJsonValue): string => {
  if (value === null) return "null"
  switch (typeof value) {
    case "string":
      return legacyString(value)
    case "number":
      return legacyNumber(value)
    case "boolean":
      return value ? "true" : "false"
  }
  if (value instanceof Uint8Array) return `"${Encoding.encodeBase64(value)}"`
  if (value instanceof LegacyJsonDate) return `"${value.iso}"`
  if (Array.isArray(value)) return "[" + (value as ReadonlyArray<LegacyJsonValue>).map(legacyStringify).join(",") + "]"
  const entries: Iterable<readonly [string, LegacyJsonValue]> =
    value instanceof Map
      ? (value as ReadonlyMap<string, LegacyJsonValue>).entries()
      : Object.entries(value as { readonly [key: string]: LegacyJsonValue })
  let out = "{"
  let first = true
  for (const [key, v] of entries) {
    out += (first ? "" : ",") + legacyString(key) + ":" + legacyStringify(v)
    first = false
  }
  return out + "}"
}

// ---------------------------------------------------------------------------------------------------------------
// DateTime

/** .NET's DateTime range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.9999999Z, in epoch milliseconds. */
const MIN_MILLIS = -62135596800000
const MAX_MILLIS = 253402300799999

const pad = (n: number, width: number) => String(n).padStart(width, "0")

/**
 * Formats a UTC instant as .NET's round-trip format with trailing fractional zeros trimmed:
 * `yyyy-MM-ddTHH:mm:ss[.f{1,7}]Z`. `subMillisTicks` (0..9999, 100 ns units) adds the precision JS lacks. Instants
 * outside .NET's DateTime range are clamped to it.
 *
 * @example
 * legacyDateTime(new Date("2025-04-18T13:48:00.031Z"), 4159) // "2025-04-18T13:48:00.0314159Z"
 */
export const legacyDateTime = (time: Date | DateTime.DateTime | number, subMillisTicks = 0): LegacyTime => {
  const raw = typeof time === "number" ? time : time instanceof Date ? time.getTime() : DateTime.toEpochMillis(time)
  const millis = Number.isFinite(raw) ? Math.min(MAX_MILLIS, Math.max(MIN_MILLIS, Math.trunc(raw))) : 0
  const d = new Date(millis)
  const ticks = Math.min(9999, Math.max(0, Math.trunc(Number.isFinite(subMillisTicks) ? subMillisTicks : 0)))
  const fraction = (pad(d.getUTCMilliseconds(), 3) + pad(ticks, 4)).replace(/0+$/, "")
  const date = `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1, 2)}-${pad(d.getUTCDate(), 2)}`
  const time_ = `${pad(d.getUTCHours(), 2)}:${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)}`
  return `${date}T${time_}${fraction === "" ? "" : "." + fraction}Z` as LegacyTime
}

/** `default(DateTime)` of .NET, used when a packet omits a DateTime property. */
export const LEGACY_MIN_TIME = "0001-01-01T00:00:00Z" as LegacyTime

const TIME = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,16}))?)?(Z|[+-](\d{2}):(\d{2}))?)?$/

const daysIn = (year: number, month: number): number => {
  const d = new Date(0)
  d.setUTCFullYear(year, month, 0) // day 0 of the next month: the last day of this one
  return d.getUTCDate()
}

/**
 * The UTC instant of a LegacyTime, in epoch milliseconds (digits beyond milliseconds are dropped; a time without
 * offset is read as UTC, as every packet of the original carries UtcNow). `undefined` when the text is not a valid
 * date-time in .NET's range.
 */
export const parseLegacyTime = (s: string): number | undefined => {
  const m = TIME.exec(s)
  if (m === null) return undefined
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])]
  const [hour, minute, second] = [Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0)]
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return undefined
  if (hour > 23 || minute > 59 || second > 59) return undefined
  const offsetHours = Number(m[9] ?? 0)
  const offsetMinutes = Number(m[10] ?? 0)
  if (offsetHours > 14 || offsetMinutes > 59) return undefined
  const sign = m[8] !== undefined && m[8].startsWith("-") ? -1 : 1
  const millisText = (m[7] ?? "").padEnd(3, "0").slice(0, 3)
  const d = new Date(0)
  d.setUTCFullYear(year, month - 1, day)
  d.setUTCHours(hour, minute, second, Number(millisText))
  return d.getTime() - sign * (offsetHours * 60 + offsetMinutes) * 60_000
}

/** The instant of a LegacyTime as an Effect DateTime (sub-millisecond digits are lost). */
export const legacyTimeToDateTime = (time: LegacyTime): DateTime.Utc => DateTime.unsafeMake(parseLegacyTime(time) ?? 0)
