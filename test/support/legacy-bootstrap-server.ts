/**
 * Our bootstrap server (src/layers/BootstrapServer.ts) in legacy mode on 127.0.0.1, for tests that bootstrap .NET-style
 * clients from it: its URL and its registry of legacy peers, alive until the caller's scope ends.
 */
import { Context, Effect, Layer, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { BootstrapSettings } from "../../src/layers/BootstrapServer.js"
import { BootstrapConfig, serverLayer, serverUrl } from "../../src/layers/BootstrapServer.js"
import { BootstrapStore } from "../../src/layers/BootstrapStore.js"
import { LegacyBootstrapRegistry } from "../../src/layers/LegacyBootstrapServer.js"

/** Our bootstrap server on 127.0.0.1:0 in legacy mode (unless overridden), with its legacy registry. */
export const startLegacyBootstrapServer = (overrides: Partial<BootstrapSettings> = {}) =>
  Effect.gen(function* () {
    const config = BootstrapConfig.layer({
      host: "127.0.0.1",
      port: 0,
      dataDir: fs.mkdtempSync(path.join(os.tmpdir(), "p2p-legacy-bootstrap-")),
      adminToken: Option.some(Redacted.make("legacy-test-admin-token")),
      legacy: true,
      ...overrides
    })
    const context = yield* Layer.build(
      serverLayer.pipe(Layer.provideMerge(Layer.merge(config, BootstrapStore.layerMemory)))
    )
    return { url: yield* Effect.provide(serverUrl, context), registry: Context.get(context, LegacyBootstrapRegistry) }
  })
