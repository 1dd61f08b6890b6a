/**
 * NetworkTaskHandler: a bounded queue of network tasks with a worker fiber; tasks come from local code and from
 * trusted peers (DataTransmission packets of format Task). (Skeleton: the issue 3 implementation replaces this.)
 */
import { Context, Effect, Layer } from "effect"
import type { Received } from "./Distribution.js"

export class NetworkTaskHandler extends Context.Tag("effect-p2pnet/NetworkTaskHandler")<
  NetworkTaskHandler,
  {
    /** Handles a received DataTransmission of format Task (called by the default DataTransmission handler). */
    readonly incoming: (received: Received<"DataTransmission">) => Effect.Effect<void, unknown>
  }
>() {
  static readonly layer = Layer.succeed(this, { incoming: () => Effect.void })
}
