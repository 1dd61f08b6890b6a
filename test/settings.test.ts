import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either } from "effect"
import { logSettingsFromEnv, networkSettingsFromEnv } from "../src/layers/Settings.js"
import { NetworkSettings } from "../src/schema/settings.js"

const withEnv = (env: Record<string, string>) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

describe("settings from environment variables", () => {
  it.effect("no variables give the documented defaults (the original's where it had one)", () =>
    Effect.gen(function* () {
      const s = yield* networkSettingsFromEnv.pipe(withEnv({}))
      assert.deepStrictEqual(s, NetworkSettings.make({}))
      assert.strictEqual(s.reconnectRetries, 3)
      assert.strictEqual(s.reconnectDelayMillis, 4_000)
      assert.strictEqual(s.maxFrameBytes, 16 * 1024 * 1024)
      assert.isTrue(s.trust.allowDefaultCommunication)
      assert.isFalse(s.trust.allowEnhancedPacketExchange)
      assert.strictEqual(s.trust.incomingPeerPlacement, "EventBased")
      const l = yield* logSettingsFromEnv.pipe(withEnv({}))
      assert.deepStrictEqual([l.level, l.format, l.file], ["Info", "pretty", ""])
    })
  )

  it.effect("variables override the defaults, including the trust policy and JSON logs", () =>
    Effect.gen(function* () {
      const s = yield* networkSettingsFromEnv.pipe(
        withEnv({
          P2P_PORT: "8051",
          P2P_NETWORK: "lab",
          P2P_ALLOW_ENHANCED_PACKET_EXCHANGE: "true",
          P2P_INCOMING_PEER_PLACEMENT: "QueueBased",
          P2P_RECONNECT_BACKOFF: "exponential"
        })
      )
      assert.strictEqual(s.port, 8051)
      assert.strictEqual(s.network, "lab")
      assert.isTrue(s.trust.allowEnhancedPacketExchange)
      assert.strictEqual(s.trust.incomingPeerPlacement, "QueueBased")
      assert.strictEqual(s.reconnectBackoff, "exponential")
      const l = yield* logSettingsFromEnv.pipe(withEnv({ P2P_LOG_FORMAT: "json", P2P_LOG_LEVEL: "Debug" }))
      assert.deepStrictEqual([l.level, l.format], ["Debug", "json"])
    })
  )

  it.effect("a bad value is a configuration error naming the variable", () =>
    Effect.gen(function* () {
      const port = yield* Effect.either(networkSettingsFromEnv.pipe(withEnv({ P2P_PORT: "70000" })))
      assert.isTrue(Either.isLeft(port) && String(port.left).includes("P2P_PORT"))
      const format = yield* Effect.either(logSettingsFromEnv.pipe(withEnv({ P2P_LOG_FORMAT: "xml" })))
      assert.isTrue(Either.isLeft(format) && String(format.left).includes("P2P_LOG_FORMAT"))
    })
  )
})
