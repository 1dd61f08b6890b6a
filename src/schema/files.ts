/**
 * File transfer messages, carried inside the `data` of DataTransmission packets of format File (the packet itself is
 * unchanged): a u16 big-endian header length, a UTF-8 JSON header, then the raw chunk bytes (FileChunk only). Also the
 * rule for file names a peer may ask for, the transfer events, and the typed errors. Pure: no Effects here, and
 * decoding never throws. docs/protocol.md describes the same layout for other implementations.
 */
import { Either, ParseResult, Predicate, Schema } from "effect"
import { ChannelClosed, FrameTooLarge, NotTrusted, PeerNotFound } from "./errors.js"
import { NodeId } from "./ids.js"

/** A transfer's identifier, chosen by the sender: 32 lowercase hex characters (128 random bits). */
export const TransferId = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{32}$/), Schema.brand("TransferId"))
export type TransferId = typeof TransferId.Type

/** A SHA-256 digest as 64 lowercase hex characters. */
export const Sha256Hex = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/))

const ByteCount = Schema.Int.pipe(Schema.between(0, Number.MAX_SAFE_INTEGER))
const Text = Schema.String.pipe(Schema.maxLength(1024))

// ---------------------------------------------------------------------------------------------------------------------
// Messages

/** Sender → receiver: a transfer begins (or begins again: a retry replaces what the receiver had of it). */
export class FileStart extends Schema.TaggedClass<FileStart>()("FileStart", {
  transfer: TransferId,
  name: Text,
  size: ByteCount
}) {}

/** Sender → receiver: the bytes at `offset`; chunks come in order, each starting where the previous one ended. */
export class FileChunk extends Schema.TaggedClass<FileChunk>()("FileChunk", {
  transfer: TransferId,
  offset: ByteCount,
  bytes: Schema.Uint8ArrayFromSelf
}) {}

/** Sender → receiver: every byte was sent; the SHA-256 of the whole file. */
export class FileEnd extends Schema.TaggedClass<FileEnd>()("FileEnd", {
  transfer: TransferId,
  sha256: Sha256Hex
}) {}

/** Sender → receiver: the sender gave up (read error, interrupted); the receiver drops what it has. */
export class FileCancel extends Schema.TaggedClass<FileCancel>()("FileCancel", {
  transfer: TransferId,
  reason: Text
}) {}

/** Receiver → sender: the file arrived whole, its hash verified, and it is stored. */
export class FileAck extends Schema.TaggedClass<FileAck>()("FileAck", {
  transfer: TransferId,
  sha256: Sha256Hex
}) {}

/** Receiver → sender: the transfer was refused or failed; `error` is the receiver's error tag. */
export class FileReject extends Schema.TaggedClass<FileReject>()("FileReject", {
  transfer: TransferId,
  error: Schema.String.pipe(Schema.maxLength(64)),
  reason: Text
}) {}

export const FileMessage = Schema.Union(FileStart, FileChunk, FileEnd, FileCancel, FileAck, FileReject)
export type FileMessage = typeof FileMessage.Type

/** The JSON header of each message: FileChunk without its bytes (they follow the header). */
const ChunkHeader = Schema.TaggedStruct("FileChunk", { transfer: TransferId, offset: ByteCount })
const Header = Schema.Union(FileStart, ChunkHeader, FileEnd, FileCancel, FileAck, FileReject)
const decodeHeader = Schema.decodeUnknownEither(Header)
// chunks are nearly every message of a transfer: their header is checked without trying the union
const decodeChunkHeader = Schema.decodeUnknownEither(ChunkHeader)
const encodeHeader = Schema.encodeSync(Header)

/** Largest JSON header (the length field is a u16). */
export const MAX_HEADER_BYTES = 65_535

const layout = (header: typeof Header.Type, length: number) => {
  // a chunk header is already its own encoding (a tag, a TransferId, a number): one chunk per 64 KiB of file does
  // not pay for the Schema encoder
  const encoded = header._tag === "FileChunk" ? header : encodeHeader(header)
  const json = Buffer.from(JSON.stringify(encoded), "utf8")
  const data = Buffer.allocUnsafe(2 + json.length + length)
  data.writeUInt16BE(json.length, 0)
  json.copy(data, 2)
  return { data, bytes: data.subarray(2 + json.length) }
}

/** The `data` of a DataTransmission carrying `message`: u16 header length, JSON header, chunk bytes. */
export const encodeFileMessage = (message: FileMessage): Uint8Array => {
  if (message._tag !== "FileChunk") return layout(message, 0).data
  const { bytes, data } = layoutChunk(message.transfer, message.offset, message.bytes.length)
  bytes.set(message.bytes)
  return data
}

/**
 * The `data` of a FileChunk of `length` bytes at `offset`, with room for the bytes: fill `bytes` (a view into `data`,
 * e.g. by reading the file into it) and send `data`. Saves copying each chunk.
 */
export const layoutChunk = (transfer: TransferId, offset: number, length: number) =>
  layout({ _tag: "FileChunk", transfer, offset }, length)

/** Reads the message in a DataTransmission's `data`; never throws. A chunk's bytes are a view, not a copy. */
export const decodeFileMessage = (data: Uint8Array): Either.Either<FileMessage, InvalidFileMessage> => {
  const invalid = (detail: string) => Either.left(new InvalidFileMessage({ detail }))
  if (data.length < 2) return invalid(`${data.length} bytes: too short for a header length`)
  const headerLength = (data[0]! << 8) | data[1]!
  if (2 + headerLength > data.length) {
    return invalid(`header of ${headerLength} bytes announced, ${data.length - 2} present`)
  }
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(data.buffer, data.byteOffset + 2, headerLength).toString("utf8"))
  } catch (e) {
    return invalid(`header is not JSON: ${e instanceof Error ? e.message : String(e)}`)
  }
  const header = Predicate.isTagged(json, "FileChunk")
    ? decodeChunkHeader(json, { onExcessProperty: "ignore" })
    : decodeHeader(json, { onExcessProperty: "ignore" })
  if (Either.isLeft(header)) return invalid(ParseResult.TreeFormatter.formatErrorSync(header.left))
  const rest = data.subarray(2 + headerLength)
  const h = header.right
  if (h._tag === "FileChunk") {
    return Either.right(new FileChunk({ transfer: h.transfer, offset: h.offset, bytes: rest }, true))
  }
  if (rest.length > 0) return invalid(`unexpected ${rest.length} bytes after a ${h._tag} header`)
  return Either.right(h)
}

// ---------------------------------------------------------------------------------------------------------------------
// File names

/** Longest stored name, in UTF-8 bytes (room for a " (n)" suffix under the usual 255-byte file system limit). */
export const MAX_NAME_BYTES = 200

const WINDOWS_DEVICE = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i

/**
 * Why `name` may not be stored as a file of the inbox, or undefined when it may. A name is one plain path segment:
 * no separators (`/` or `\`), no `:` (drive letters, alternate streams), not `.` or `..`, no leading dot (hidden
 * files, and the inbox's own `.partial` folder), no leading or trailing space and no trailing dot (Windows drops
 * them), no control or invisible formatting characters (a right-to-left override can disguise an extension), none
 * of `<>"|?*`, no Windows device name, and at most MAX_NAME_BYTES UTF-8 bytes.
 */
export const fileNameProblem = (name: string): string | undefined => {
  if (name.length === 0) return "empty"
  if (Buffer.byteLength(name, "utf8") > MAX_NAME_BYTES) return `longer than ${MAX_NAME_BYTES} bytes`
  if (/[/\\]/.test(name)) return "contains a path separator"
  if (name === "." || name === "..") return "is a relative path"
  if (name.startsWith(".")) return "starts with a dot (hidden file)"
  if (name.includes(":")) return "contains a colon (drive or stream name)"
  if (/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(name)) return "contains control or invisible formatting characters"
  if (/[<>"|?*]/.test(name)) return 'contains one of <>"|?*'
  if (name !== name.trim() || name.endsWith(".")) return "starts or ends with a space, or ends with a dot"
  if (WINDOWS_DEVICE.test(name)) return "is a reserved device name"
  return undefined
}

/** `name` when it may be stored (see fileNameProblem), or the typed error saying why not. */
export const checkFileName = (name: string): Either.Either<string, UnsafeFileName> => {
  const problem = fileNameProblem(name)
  return problem === undefined
    ? Either.right(name)
    : Either.left(new UnsafeFileName({ name: name.slice(0, 300), reason: problem }))
}

// ---------------------------------------------------------------------------------------------------------------------
// Errors

export class InvalidFileMessage extends Schema.TaggedError<InvalidFileMessage>()("InvalidFileMessage", {
  detail: Schema.String
}) {
  override get message() {
    return `invalid file message: ${this.detail}`
  }
}

export class UnsafeFileName extends Schema.TaggedError<UnsafeFileName>()("UnsafeFileName", {
  name: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `file name ${JSON.stringify(this.name)} refused: ${this.reason}`
  }
}

export class FileTooLarge extends Schema.TaggedError<FileTooLarge>()("FileTooLarge", {
  size: Schema.Number,
  max: Schema.Number
}) {
  override get message() {
    return `file of ${this.size} bytes exceeds the ${this.max}-byte limit`
  }
}

export class TooManyTransfers extends Schema.TaggedError<TooManyTransfers>()("TooManyTransfers", {
  peer: Schema.String,
  max: Schema.Number
}) {
  override get message() {
    return `peer ${this.peer} already has ${this.max} incoming transfers open`
  }
}

export class UnknownTransfer extends Schema.TaggedError<UnknownTransfer>()("UnknownTransfer", {
  transfer: Schema.String
}) {
  override get message() {
    return `no open transfer ${this.transfer} (a chunk or end without a start)`
  }
}

export class ChunkOutOfOrder extends Schema.TaggedError<ChunkOutOfOrder>()("ChunkOutOfOrder", {
  transfer: Schema.String,
  expected: Schema.Number,
  offset: Schema.Number
}) {
  override get message() {
    return `transfer ${this.transfer}: chunk at offset ${this.offset}, expected ${this.expected}`
  }
}

export class ChunkBeyondSize extends Schema.TaggedError<ChunkBeyondSize>()("ChunkBeyondSize", {
  transfer: Schema.String,
  size: Schema.Number,
  end: Schema.Number
}) {
  override get message() {
    return `transfer ${this.transfer}: a chunk reaches byte ${this.end} of a ${this.size}-byte file`
  }
}

export class TransferIncomplete extends Schema.TaggedError<TransferIncomplete>()("TransferIncomplete", {
  transfer: Schema.String,
  size: Schema.Number,
  received: Schema.Number
}) {
  override get message() {
    return `transfer ${this.transfer} ended after ${this.received} of ${this.size} bytes`
  }
}

export class HashMismatch extends Schema.TaggedError<HashMismatch>()("HashMismatch", {
  transfer: Schema.String,
  expected: Schema.String,
  actual: Schema.String
}) {
  override get message() {
    return `transfer ${this.transfer}: SHA-256 ${this.actual} does not match the announced ${this.expected}`
  }
}

/** The sender cancelled a transfer (receiving side). */
export class TransferCancelled extends Schema.TaggedError<TransferCancelled>()("TransferCancelled", {
  transfer: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `transfer ${this.transfer} cancelled by the sender: ${this.reason}`
  }
}

/** The receiver refused or failed a transfer (sending side); `error` is the receiver's error tag. */
export class TransferRejected extends Schema.TaggedError<TransferRejected>()("TransferRejected", {
  transfer: Schema.String,
  peer: Schema.String,
  error: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `peer ${this.peer} rejected transfer ${this.transfer} (${this.error}): ${this.reason}`
  }
}

export class ReceiptTimeout extends Schema.TaggedError<ReceiptTimeout>()("ReceiptTimeout", {
  transfer: Schema.String,
  millis: Schema.Number
}) {
  override get message() {
    return `no receipt for transfer ${this.transfer} within ${this.millis} ms of its last chunk`
  }
}

export class TransferInProgress extends Schema.TaggedError<TransferInProgress>()("TransferInProgress", {
  transfer: Schema.String
}) {
  override get message() {
    return `transfer ${this.transfer} to this peer is already being sent`
  }
}

/** Reading the file to send failed (missing, not a regular file, changed while read...). */
export class FileReadFailed extends Schema.TaggedError<FileReadFailed>()("FileReadFailed", {
  path: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `cannot send ${this.path}: ${this.detail}`
  }
}

/** The FileStore could not write, move or list a file. */
export class FileStoreError extends Schema.TaggedError<FileStoreError>()("FileStoreError", {
  path: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `file store: ${this.path}: ${this.detail}`
  }
}

/** Why an incoming transfer was refused or dropped (the DataTransmission handler fails with it, and it is logged). */
export type IncomingFileError =
  | InvalidFileMessage
  | UnsafeFileName
  | FileTooLarge
  | TooManyTransfers
  | UnknownTransfer
  | ChunkOutOfOrder
  | ChunkBeyondSize
  | TransferIncomplete
  | HashMismatch
  | FileStoreError

/** Why sending a file failed. */
export type SendFileError =
  | PeerNotFound
  | NotTrusted
  | ChannelClosed
  | FrameTooLarge
  | UnsafeFileName
  | FileReadFailed
  | TransferRejected
  | ReceiptTimeout
  | TransferInProgress

const FailureReason = Schema.Union(
  InvalidFileMessage,
  UnsafeFileName,
  FileTooLarge,
  TooManyTransfers,
  UnknownTransfer,
  ChunkOutOfOrder,
  ChunkBeyondSize,
  TransferIncomplete,
  HashMismatch,
  FileStoreError,
  TransferCancelled,
  PeerNotFound,
  NotTrusted,
  ChannelClosed,
  FrameTooLarge,
  FileReadFailed,
  TransferRejected,
  ReceiptTimeout,
  TransferInProgress
)

// ---------------------------------------------------------------------------------------------------------------------
// Events and results

export const TransferDirection = Schema.Literal("send", "receive")
export type TransferDirection = typeof TransferDirection.Type

/** Bytes done of a transfer, after each chunk (and 0 at the start); on both the sending and the receiving side. */
export class TransferProgress extends Schema.TaggedClass<TransferProgress>()("TransferProgress", {
  transfer: TransferId,
  peer: NodeId,
  direction: TransferDirection,
  name: Schema.String,
  bytes: ByteCount,
  total: ByteCount
}) {}

/** A file arrived whole, its hash verified, and is stored at `path` (a FileStore location). */
export class FileReceived extends Schema.TaggedClass<FileReceived>()("FileReceived", {
  transfer: TransferId,
  peer: NodeId,
  name: Schema.String,
  path: Schema.String,
  size: ByteCount,
  sha256: Sha256Hex
}) {}

/** A transfer failed, on either side; nothing of it is left in the inbox. */
export class TransferFailed extends Schema.TaggedClass<TransferFailed>()("TransferFailed", {
  transfer: TransferId,
  peer: NodeId,
  direction: TransferDirection,
  name: Schema.String,
  error: FailureReason
}) {}

export type FileEvent = TransferProgress | FileReceived | TransferFailed

/** A file the receiver confirmed: stored whole, with this SHA-256. */
export class FileSent extends Schema.Class<FileSent>("FileSent")({
  transfer: TransferId,
  peer: NodeId,
  name: Schema.String,
  size: ByteCount,
  sha256: Sha256Hex
}) {}
