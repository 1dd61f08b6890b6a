/**
 * The receive and send gate of the original's IncomingPeerTrustPolicy (spec 4.1), as a swappable service.
 * Identity, PeerGroup and DataTransmission need a trusted channel or AllowEnhancedPacketExchange;
 * Disconnect and PureMessage need a trusted channel or AllowDefaultCommunication.
 */
import { Context, Effect, Layer } from "effect"
import type { PacketKind } from "../schema/packets.js"
import { IncomingPeerTrustPolicy } from "../schema/settings.js"
import { NetworkConfig } from "./Settings.js"

export const isEnhancedKind = (kind: PacketKind): boolean =>
  kind === "Identity" || kind === "PeerGroup" || kind === "DataTransmission"

/** The original's gate: may a packet of `kind` pass on a channel whose trust is `trusted`? */
export const policyGate = (policy: IncomingPeerTrustPolicy, kind: PacketKind, trusted: boolean): boolean =>
  trusted || (isEnhancedKind(kind) ? policy.allowEnhancedPacketExchange : policy.allowDefaultCommunication)

export class IncomingTrust extends Context.Tag("effect-p2pnet/IncomingTrust")<
  IncomingTrust,
  {
    readonly policy: IncomingPeerTrustPolicy
    /** Deliver a received packet of this kind? (false: dropped and counted) */
    readonly canReceive: (kind: PacketKind, trusted: boolean) => boolean
    /** Accept an outgoing packet of this kind? (false: the send fails with NotTrusted) */
    readonly canSend: (kind: PacketKind, trusted: boolean) => boolean
  }
>() {
  /** The gate of the given policy. */
  static readonly fromPolicy = (policy: IncomingPeerTrustPolicy) =>
    IncomingTrust.of({
      policy,
      canReceive: (kind, trusted) => policyGate(policy, kind, trusted),
      canSend: (kind, trusted) => policyGate(policy, kind, trusted)
    })
  static readonly layerPolicy = (policy: Partial<ConstructorParameters<typeof IncomingPeerTrustPolicy>[0]>) =>
    Layer.succeed(this, this.fromPolicy(IncomingPeerTrustPolicy.make(policy)))
  /** The policy in NetworkConfig.trust. */
  static readonly layer = Layer.effect(
    this,
    Effect.map(NetworkConfig, (s) => this.fromPolicy(s.trust))
  )
}
