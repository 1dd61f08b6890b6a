/**
 * The node's public IPv4 address, looked up over HTTP per PublicIPv4GetPolicy (spec 4.3): the first source only,
 * sources in order with failover, or a majority of sources queried at once. Lookups run in the caller's fiber or in
 * the service's own (`refresh`), never in one that handles traffic; the last answer is cached.
 */
import { HttpClient } from "@effect/platform"
import { Config, Context, Effect, Either, FiberSet, Layer, Option, Ref } from "effect"
import { isIPv4 } from "node:net"
import { PublicAddressNoQuorum, PublicAddressUnavailable } from "../schema/errors.js"
import { PublicIPv4GetPolicy, PublicIPv4Settings } from "../schema/trustPolicy.js"

export type PublicAddressError = PublicAddressUnavailable | PublicAddressNoQuorum

export class PublicAddress extends Context.Tag("effect-p2pnet/PublicAddress")<
  PublicAddress,
  {
    /** Asks the sources now (per the policy) and caches the answer. */
    readonly lookup: Effect.Effect<string, PublicAddressError>
    /** The last answer found, if any (never waits for the network). */
    readonly cached: Effect.Effect<Option.Option<string>>
    /** Starts a lookup in the service's own fiber and returns at once; its answer lands in `cached`. */
    readonly refresh: Effect.Effect<void>
  }
>() {
  /**
   * @example
   * PublicAddress.layer(PublicIPv4Settings.make({ policy: "URLListConsensus", sources: [a, b, c] }))
   *   .pipe(Layer.provide(FetchHttpClient.layer))
   */
  static readonly layer = (settings: PublicIPv4Settings) => Layer.scoped(this, make(settings))
  /** Settings from P2P_PUBLIC_IP_POLICY, P2P_PUBLIC_IP_SOURCES, P2P_PUBLIC_IP_TIMEOUT_MS and P2P_PUBLIC_IP_QUORUM. */
  static readonly layerConfig = Layer.unwrapEffect(
    Effect.map(publicIPv4SettingsFromEnv(), (s) => PublicAddress.layer(s))
  )
  /**
   * As layerConfig, with the public-IP endpoints of these bootstrap servers (`GET /api/v1/publicip`) added after
   * the configured sources: a node that bootstraps asks its bootstrap servers where it is seen from.
   */
  static readonly layerConfigWithBootstrap = (serverUrls: ReadonlyArray<string>) =>
    Layer.unwrapEffect(
      Effect.map(publicIPv4SettingsFromEnv(), (s) =>
        PublicAddress.layer(
          PublicIPv4Settings.make({
            ...s,
            sources: [...new Set([...s.sources, ...serverUrls.map(bootstrapPublicIpSource)])]
          })
        )
      )
    )
}

/** The public-IP endpoint of a bootstrap server (src/schema/bootstrap.ts: `GET /api/v1/publicip`). */
export const bootstrapPublicIpSource = (serverUrl: string): string => new URL("/api/v1/publicip", serverUrl).toString()

/** Reads PublicIPv4Settings from the environment (defaults in schema/trustPolicy.ts). */
export function publicIPv4SettingsFromEnv() {
  const d = PublicIPv4Settings.make({})
  return Config.all({
    policy: Config.literal(...PublicIPv4GetPolicy.literals)("P2P_PUBLIC_IP_POLICY").pipe(Config.withDefault(d.policy)),
    sources: Config.string("P2P_PUBLIC_IP_SOURCES").pipe(
      Config.map((s) =>
        s
          .split(",")
          .map((u) => u.trim())
          .filter((u) => u.length > 0)
      ),
      Config.withDefault(d.sources)
    ),
    timeoutMillis: Config.integer("P2P_PUBLIC_IP_TIMEOUT_MS").pipe(
      Config.validate({ message: "must be positive", validation: (n) => n > 0 }),
      Config.withDefault(d.timeoutMillis)
    ),
    quorum: Config.integer("P2P_PUBLIC_IP_QUORUM").pipe(
      Config.validate({ message: "must not be negative", validation: (n) => n >= 0 }),
      Config.withDefault(d.quorum)
    )
  }).pipe(Effect.map((c) => PublicIPv4Settings.make(c)))
}

const make = (settings: PublicIPv4Settings) =>
  Effect.gen(function* () {
    const client = (yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk)
    const last = yield* Ref.make(Option.none<string>())
    const background = yield* FiberSet.make<void, never>()

    /** One source: its trimmed body if it is an IPv4 address, else a line saying what went wrong. */
    const ask = (url: string): Effect.Effect<string, string> =>
      client.get(url).pipe(
        Effect.flatMap((response) => response.text),
        Effect.scoped,
        Effect.mapError((e) => `${url}: ${e.message}`),
        Effect.timeoutFail({
          duration: settings.timeoutMillis,
          onTimeout: () => `${url}: no answer within ${settings.timeoutMillis} ms`
        }),
        Effect.flatMap((body) => {
          const answer = body.trim()
          // B30: a garbage answer is a failure like any other, so failover moves on
          return isIPv4(answer)
            ? Effect.succeed(answer)
            : Effect.fail(`${url}: not an IPv4 address: ${answer.slice(0, 40)}`)
        })
      )

    const unavailable = (failures: ReadonlyArray<string>) =>
      new PublicAddressUnavailable({ policy: settings.policy, failures })

    /** B30: HTTP errors, timeouts and garbage all fail over to the next source (the original aborted on the first). */
    const inOrder = (sources: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        const failures: Array<string> = []
        for (const url of sources) {
          const result = yield* Effect.either(ask(url))
          if (Either.isRight(result)) return result.right
          failures.push(result.left)
        }
        return yield* Effect.fail(unavailable(failures))
      })

    const consensus = Effect.gen(function* () {
      const results = yield* Effect.forEach(settings.sources, (url) => Effect.either(ask(url)), {
        concurrency: "unbounded"
      })
      const quorum = settings.quorum > 0 ? settings.quorum : Math.floor(settings.sources.length / 2) + 1
      const answers: Record<string, number> = {}
      const failures: Array<string> = []
      for (const r of results) {
        if (Either.isRight(r)) answers[r.right] = (answers[r.right] ?? 0) + 1
        else failures.push(r.left)
      }
      // ties go to the first answer seen, as in the original
      const best = Object.entries(answers).reduce<[string, number] | undefined>(
        (acc, entry) => (acc === undefined || entry[1] > acc[1] ? entry : acc),
        undefined
      )
      if (best !== undefined && best[1] >= quorum) return best[0]
      return yield* Effect.fail(
        Object.keys(answers).length === 0
          ? unavailable(failures)
          : new PublicAddressNoQuorum({ quorum, answers, failures })
      )
    })

    const query: Effect.Effect<string, PublicAddressError> =
      settings.sources.length === 0
        ? Effect.fail(unavailable([]))
        : settings.policy === "SingleStaticURL"
          ? inOrder(settings.sources.slice(0, 1))
          : settings.policy === "StaticURLAndFailover"
            ? inOrder(settings.sources)
            : consensus

    const lookup = query.pipe(
      Effect.tap((address) => Ref.set(last, Option.some(address))),
      Effect.tapError((e) => Effect.logWarning("failed to fetch the public IPv4 address", e.message)),
      Effect.withSpan("PublicAddress.lookup", { attributes: { policy: settings.policy } })
    )

    return PublicAddress.of({
      lookup,
      cached: Ref.get(last),
      refresh: FiberSet.run(background, Effect.ignore(lookup)).pipe(Effect.asVoid)
    })
  })
