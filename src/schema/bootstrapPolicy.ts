/**
 * BootstrapTrustPolicy: which bootstrap channels a node may open (spec 4.2). Unlike the original, the settings have no
 * setter side effects: the implications (MustBeAuthority and FirstSingleLockingAuthority forbid trustless channels and
 * allow authority ones) are applied when the policy is built, and a setting given explicitly against them is a
 * TrustPolicyConflict naming the conflict.
 */
import { Effect, Either, Schema } from "effect"
import { BootstrapForbidden, TrustPolicyConflict } from "./errors.js"
import type { BootstrapMode } from "./bootstrap.js"

export class BootstrapTrustPolicy extends Schema.Class<BootstrapTrustPolicy>("BootstrapTrustPolicy")({
  /** AllowBootstrapTrustlessConnection. */
  allowTrustless: Schema.Boolean,
  /** AllowBootstrapAuthorityConnection. */
  allowAuthority: Schema.Boolean,
  /** Only authority channels (no trustless ones). */
  mustBeAuthority: Schema.Boolean,
  /** The first authority to answer is pinned (key and URL); every other authority channel is refused. */
  firstSingleLockingAuthority: Schema.Boolean
}) {
  /**
   * Builds a policy from the settings given; the others take their defaults or what the given ones imply.
   *
   * @example
   * const policy = yield* BootstrapTrustPolicy.from({ firstSingleLockingAuthority: true })
   * // allowTrustless false, allowAuthority true
   */
  static readonly from = (
    input: BootstrapTrustPolicyInput = {}
  ): Effect.Effect<BootstrapTrustPolicy, TrustPolicyConflict> => resolvePolicy(input)

  /** A channel of this mode may be opened, or the reason it may not. */
  admits(url: string, mode: BootstrapMode): Either.Either<void, BootstrapForbidden> {
    if (mode === "trustless" && !this.allowTrustless) {
      const reason = this.mustBeAuthority
        ? "MustBeAuthority"
        : this.firstSingleLockingAuthority
          ? "FirstSingleLockingAuthority"
          : "AllowBootstrapTrustlessConnection is off"
      return Either.left(new BootstrapForbidden({ url, mode, reason }))
    }
    if (mode === "authority" && !this.allowAuthority) {
      return Either.left(new BootstrapForbidden({ url, mode, reason: "AllowBootstrapAuthorityConnection is off" }))
    }
    return Either.right(undefined)
  }
}

export interface BootstrapTrustPolicyInput {
  readonly allowTrustless?: boolean
  readonly allowAuthority?: boolean
  readonly mustBeAuthority?: boolean
  readonly firstSingleLockingAuthority?: boolean
}

/** Defaults and implications applied, contradictions refused (pure). */
export const resolvePolicyEither = (
  input: BootstrapTrustPolicyInput
): Either.Either<BootstrapTrustPolicy, TrustPolicyConflict> => {
  const mustBe = input.mustBeAuthority ?? false
  const locking = input.firstSingleLockingAuthority ?? false
  const conflict = (name: string, detail: string) => Either.left(new TrustPolicyConflict({ conflict: name, detail }))
  if (mustBe && input.allowTrustless === true) {
    return conflict("MustBeAuthorityWithTrustless", "MustBeAuthority forbids trustless channels")
  }
  if (mustBe && input.allowAuthority === false) {
    return conflict("MustBeAuthorityWithoutAuthority", "MustBeAuthority needs AllowBootstrapAuthorityConnection")
  }
  if (locking && input.allowTrustless === true) {
    return conflict("LockingAuthorityWithTrustless", "FirstSingleLockingAuthority forbids trustless channels")
  }
  if (locking && input.allowAuthority === false) {
    return conflict(
      "LockingAuthorityWithoutAuthority",
      "FirstSingleLockingAuthority needs AllowBootstrapAuthorityConnection"
    )
  }
  const allowTrustless = input.allowTrustless ?? !(mustBe || locking)
  const allowAuthority = input.allowAuthority ?? (mustBe || locking)
  if (!allowTrustless && !allowAuthority) {
    return conflict("NoChannelAllowed", "neither trustless nor authority channels are allowed")
  }
  return Either.right(
    BootstrapTrustPolicy.make({
      allowTrustless,
      allowAuthority,
      mustBeAuthority: mustBe,
      firstSingleLockingAuthority: locking
    })
  )
}

const resolvePolicy = (input: BootstrapTrustPolicyInput) =>
  Either.match(resolvePolicyEither(input), { onLeft: Effect.fail, onRight: Effect.succeed })

/** The default policy: trustless channels only. */
export const defaultTrustPolicy = (): BootstrapTrustPolicy => Either.getOrThrow(resolvePolicyEither({}))
