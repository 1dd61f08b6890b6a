/**
 * FileTransfer: sends files as streamed transfers over DataTransmission packets of format File, and receives them
 * into the FileStore. (Skeleton: the issue 3 implementation replaces this.)
 */
import { Context, Effect, Layer } from "effect"
import type { Received } from "./Distribution.js"

export class FileTransfer extends Context.Tag("effect-p2pnet/FileTransfer")<
  FileTransfer,
  {
    /** Handles a received DataTransmission of format File (called by the default DataTransmission handler). */
    readonly incoming: (received: Received<"DataTransmission">) => Effect.Effect<void, unknown>
  }
>() {
  static readonly layer = Layer.succeed(this, { incoming: () => Effect.void })
}
