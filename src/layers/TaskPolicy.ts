/**
 * The swappable policies around network tasks: which task types a peer may ask this node for (RemoteTaskPolicy),
 * who may set this node's identifier (LocalIdentifier), and what the bootstrap-only task types do
 * (BootstrapTaskHook, filled by the bootstrap subsystem). Each is a service with a default Layer; an application
 * passes its own to `networkLayer({ taskPolicy, localIdentifier, bootstrapTasks })`.
 */
import { Context, Data, Effect, Layer, Option, Schema, SubscriptionRef } from "effect"
import type { Stream } from "effect"
import type { PeerChannel } from "../actors/PeerChannel.js"
import { IdentifierRefused } from "../schema/errors.js"
import type { NetworkTask, TaskType } from "../schema/packets.js"
import type { TaskOutcome } from "../schema/tasks.js"
import { Identifier, Rejected, describeParseError } from "../schema/tasks.js"
import type { LocalIdentifierSetPolicy } from "../schema/trustPolicy.js"

/** Where a task came from: local code, or a peer (over this channel). */
export type TaskSource = Data.TaggedEnum<{
  Local: {}
  Remote: { readonly channel: PeerChannel }
}>
export const TaskSource = Data.taggedEnum<TaskSource>()

/** What a trusted peer may ask for by default: nothing that blocks, disconnects, authorizes or re-identifies. */
export const defaultRemoteTaskTypes: ReadonlyArray<TaskType> = [
  "PingPeer",
  "Heartbeat",
  "SendMessage",
  "RequestData",
  "SendData",
  "SynchronizeData"
]

export class RemoteTaskPolicy extends Context.Tag("effect-p2pnet/RemoteTaskPolicy")<
  RemoteTaskPolicy,
  {
    /** May the peer on `from` have this node carry out `task`? (false: Rejected with code Forbidden) */
    readonly allows: (task: NetworkTask, from: PeerChannel) => Effect.Effect<boolean>
  }
>() {
  /** Trusted peers may ask for these types; untrusted peers for none. */
  static readonly allowing = (types: Iterable<TaskType>) => {
    const allowed = new Set(types)
    return RemoteTaskPolicy.of({
      allows: (task, from) => Effect.succeed(from.isTrusted() && allowed.has(task.taskType))
    })
  }
  /**
   * As `allowing`, as a Layer.
   *
   * @example
   * networkLayer({ taskPolicy: RemoteTaskPolicy.layerAllowing([...defaultRemoteTaskTypes, "DisconnectPeer"]) })
   */
  static readonly layerAllowing = (types: Iterable<TaskType>) => Layer.succeed(this, this.allowing(types))
  /** The default: trusted peers may ask for `defaultRemoteTaskTypes`. */
  static readonly layer = Layer.sync(this, () => this.allowing(defaultRemoteTaskTypes))
}

/** Who set the identifier: this node's own code, or a peer through a task. */
export type IdentifierSource = "local" | "remote"

const decodeIdentifier = Schema.decodeUnknownEither(Identifier)

const policySources: Record<LocalIdentifierSetPolicy, ReadonlyArray<IdentifierSource>> = {
  StrictLocalOnly: ["local"],
  Local: ["local"],
  LocalAndRemote: ["local", "remote"],
  RemoteOnly: ["remote"],
  StrictRemoteOnly: ["remote"]
}

const makeLocalIdentifier = (sources: ReadonlyArray<IdentifierSource>, strict: boolean) =>
  Effect.gen(function* () {
    const ref = yield* SubscriptionRef.make(Option.none<Identifier>())
    // sets run one at a time, so a Strict policy locks after exactly one accepted change
    const lock = yield* Effect.makeSemaphore(1)
    const refuse = (identifier: string, source: IdentifierSource, reason: string) =>
      Effect.fail(new IdentifierRefused({ identifier, source, reason }))
    const set = (identifier: string, source: IdentifierSource) =>
      Effect.gen(function* () {
        if (!sources.includes(source))
          return yield* refuse(identifier, source, `${source} identifiers are not accepted`)
        const decoded = decodeIdentifier(identifier)
        if (decoded._tag === "Left") return yield* refuse(identifier, source, describeParseError(decoded.left))
        if (strict && Option.isSome(yield* SubscriptionRef.get(ref))) {
          return yield* refuse(identifier, source, "the identifier is set and locked (strict policy)")
        }
        yield* SubscriptionRef.set(ref, Option.some(decoded.right))
      }).pipe(lock.withPermits(1))
    return LocalIdentifier.of({ get: SubscriptionRef.get(ref), changes: ref.changes, set })
  })

export class LocalIdentifier extends Context.Tag("effect-p2pnet/LocalIdentifier")<
  LocalIdentifier,
  {
    /** This node's identifier (an alias or display name), if one was set. */
    readonly get: Effect.Effect<Option.Option<Identifier>>
    readonly changes: Stream.Stream<Option.Option<Identifier>>
    /** Sets the identifier; fails when the policy refuses it from this source, or its form is invalid. */
    readonly set: (identifier: string, source: IdentifierSource) => Effect.Effect<void, IdentifierRefused>
  }
>() {
  /** Accepts identifiers from the given sources. */
  static readonly layerAllowing = (sources: ReadonlyArray<IdentifierSource>) =>
    Layer.effect(this, makeLocalIdentifier(sources, false))
  /**
   * Enforces a LocalIdentifierSetPolicy (spec 4.3): `Local*` accept local changes, `*Remote*` changes asked by a
   * trusted peer's SetLocalIdentifier / AssignIdentifierToPeer task; `Strict*` lock after the first accepted change.
   *
   * @example
   * networkLayer({ localIdentifier: LocalIdentifier.layerPolicy("StrictRemoteOnly") })
   */
  static readonly layerPolicy = (policy: LocalIdentifierSetPolicy) =>
    Layer.effect(this, makeLocalIdentifier(policySources[policy], policy.startsWith("Strict")))
  /** The default, LocalAndRemote: identifiers from this node and from peers are both accepted. */
  static readonly layer = this.layerPolicy("LocalAndRemote")
}

export class BootstrapTaskHook extends Context.Tag("effect-p2pnet/BootstrapTaskHook")<
  BootstrapTaskHook,
  {
    /** Carries out RequestVerifyHashRecord, RequestPublicKey, BootstrapInitialization or HeartbeatResponse. */
    readonly handle: (task: NetworkTask, source: TaskSource) => Effect.Effect<TaskOutcome>
  }
>() {
  /** The default: no bootstrap authority, every such task is rejected. */
  static readonly layer = Layer.succeed(
    this,
    this.of({
      handle: () => Effect.succeed(Rejected.make({ code: "Unsupported", reason: "no bootstrap authority configured" }))
    })
  )
}
