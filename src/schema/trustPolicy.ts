/**
 * The original's PeerNetworkTrustPolicy (spec 4.3) as data: who may set this node's identifier, and how its public
 * IPv4 address is looked up. The services enforcing them are LocalIdentifier (layers/TaskPolicy.ts) and
 * PublicAddress (layers/PublicAddress.ts).
 */
import { Schema } from "effect"

/**
 * Who may set this node's identifier (an alias bound to its key; peers still authenticate by key).
 * `Local*` accept local changes, `*Remote*` changes asked by a trusted peer's task; `Strict*` lock after the first
 * accepted assignment. The original never told local and remote changes apart (spec 4.3).
 */
export const LocalIdentifierSetPolicy = Schema.Literal(
  "StrictLocalOnly",
  "Local",
  "LocalAndRemote",
  "RemoteOnly",
  "StrictRemoteOnly"
)
export type LocalIdentifierSetPolicy = typeof LocalIdentifierSetPolicy.Type

/** How the public IPv4 address is found (spec 4.3): the first source, sources in order, or a majority of them. */
export const PublicIPv4GetPolicy = Schema.Literal("SingleStaticURL", "StaticURLAndFailover", "URLListConsensus")
export type PublicIPv4GetPolicy = typeof PublicIPv4GetPolicy.Type

/** Settings of the public-IPv4 lookup. */
export class PublicIPv4Settings extends Schema.Class<PublicIPv4Settings>("PublicIPv4Settings")({
  /** Original default: SingleStaticURL. */
  policy: Schema.optionalWith(PublicIPv4GetPolicy, { default: () => "SingleStaticURL" as const }),
  /**
   * URLs answering GET with the caller's IPv4 address as plain text. Empty unless configured: the intended sources
   * are the bootstrap servers' `/api/v1/publicip` endpoints, which the WAN bootstrap client may add.
   */
  sources: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }),
  /** Limit for each source's answer (the original waited up to 100 s). */
  timeoutMillis: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => 5_000 }),
  /** URLListConsensus: how many sources must give the same answer; 0 means a majority of the sources. */
  quorum: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => 0 })
}) {}
