/**
 * The bootstrap server program (`npm run bootstrap`, or `p2pnet-node bootstrap`): WAN peers register with it and get
 * peer lists; in authority mode it also signs the tasks it hands out. It creates its data directory, its SQLite
 * database (`<data dir>/bootstrap.db`) and, in authority mode, its key pair on first start, then prints one line with
 * its URL. Flags override BOOTSTRAP_* variables (README.md, "Bootstrap server"); SIGINT/SIGTERM close it cleanly.
 */
import { Command, Options } from "@effect/cli"
import { Console, Context, Effect, Layer, Option, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { BootstrapAuthority } from "../layers/BootstrapAuthority.js"
import {
  AdminToken,
  BootstrapConfig,
  BootstrapSettingsConfig,
  serverLayer,
  serverUrl
} from "../layers/BootstrapServer.js"
import { BootstrapStore } from "../layers/BootstrapStore.js"
import { loggingLayerConfig } from "../layers/Logging.js"
import { KeyFileError } from "../schema/errors.js"
import { configProvider, logLevelFlag, main, nonNegative, portFlag, variables } from "./flags.js"

/** Runs the server configured by BOOTSTRAP_* settings until interrupted. */
export const program = Effect.gen(function* () {
  const settings = yield* BootstrapSettingsConfig
  yield* Effect.try({
    try: () => fs.mkdirSync(settings.dataDir, { recursive: true, mode: 0o700 }),
    catch: (e) => new KeyFileError({ path: settings.dataDir, detail: `cannot create the data directory: ${e}` })
  })
  const layer = serverLayer.pipe(
    Layer.provide(Layer.succeed(BootstrapConfig, settings)),
    Layer.provide(BootstrapStore.layerSqlite(path.join(settings.dataDir, "bootstrap.db")))
  )
  yield* Effect.scoped(
    Effect.gen(function* () {
      const context = yield* Layer.build(layer)
      const url = yield* Effect.provide(serverUrl, context)
      const key = yield* Context.get(context, BootstrapAuthority).key
      const token = Context.get(context, AdminToken)
      const fingerprint = Option.match(key, { onNone: () => "", onSome: (k) => `, key ${k.fingerprint}` })
      yield* Console.log(
        `bootstrap server listening on ${url} (mode ${settings.mode}, network ${JSON.stringify(settings.network)}${fingerprint}${settings.legacy ? ", legacy P2PNet API at /api/Bootstrap/*" : ""})`
      )
      if (Option.isSome(token.generated)) {
        yield* Console.log(
          `admin token (generated now and shown only this once; only its hash is stored): ${Redacted.value(token.generated.value)}`
        )
      }
      return yield* Effect.never.pipe(Effect.onInterrupt(() => Console.log("bootstrap server stopped")))
    })
  )
})

// ---------------------------------------------------------------------------------------------------------------------
// Command line: each flag overrides its BOOTSTRAP_* variable
// ---------------------------------------------------------------------------------------------------------------------

const flags = {
  mode: Options.choice("mode", ["trustless", "authority"]).pipe(
    Options.withDescription(
      "trustless: peer lists only; authority: also sign tasks (BOOTSTRAP_MODE, default trustless)."
    ),
    Options.optional
  ),
  network: Options.text("network").pipe(
    Options.withAlias("n"),
    Options.withDescription("Network name peers must register for (BOOTSTRAP_NETWORK, default p2pnet)."),
    Options.optional
  ),
  host: Options.text("host").pipe(
    Options.withDescription("Address to listen on (BOOTSTRAP_HOST, default 0.0.0.0)."),
    Options.optional
  ),
  port: portFlag("HTTP port; 0 picks a free one (BOOTSTRAP_PORT, default 8080)."),
  dataDir: Options.text("data-dir").pipe(
    Options.withDescription(
      "Directory of the database and keys, created (BOOTSTRAP_DATA_DIR, default ./bootstrap-data)."
    ),
    Options.optional
  ),
  privateKeyFile: Options.text("private-key-file").pipe(
    Options.withDescription(
      "Authority private key, PEM (BOOTSTRAP_PRIVATE_KEY_FILE, default <data dir>/authority-key.pem)."
    ),
    Options.optional
  ),
  publicKeyFile: Options.text("public-key-file").pipe(
    Options.withDescription(
      "Authority public key, PEM (BOOTSTRAP_PUBLIC_KEY_FILE, default <data dir>/authority-key.pub.pem)."
    ),
    Options.optional
  ),
  adminToken: Options.text("admin-token").pipe(
    Options.withDescription("Admin token; prefer BOOTSTRAP_ADMIN_TOKEN (a flag shows in ps). Default: generated once."),
    Options.optional
  ),
  peerListSize: Options.integer("peer-list-size").pipe(
    Options.withDescription("Peers per list handed out (BOOTSTRAP_PEER_LIST_SIZE, default 100)."),
    Options.mapEffect(nonNegative),
    Options.optional
  ),
  idleExpiry: Options.integer("idle-expiry-seconds").pipe(
    Options.withDescription("Drop registrations idle this long (BOOTSTRAP_IDLE_EXPIRY_SECONDS, default 1800)."),
    Options.mapEffect(nonNegative),
    Options.optional
  ),
  trustedProxies: Options.text("trusted-proxies").pipe(
    Options.withDescription(
      "Comma list of proxy addresses whose X-Forwarded-For is believed (BOOTSTRAP_TRUSTED_PROXIES)."
    ),
    Options.optional
  ),
  rateLimit: Options.integer("rate-limit-per-minute").pipe(
    Options.withDescription(
      "Registrations / heartbeats per minute per address; 0 = off (BOOTSTRAP_RATE_LIMIT_PER_MINUTE, 120)."
    ),
    Options.mapEffect(nonNegative),
    Options.optional
  ),
  legacy: Options.boolean("legacy").pipe(
    Options.withDescription(
      "Also serve the original P2PNet (.NET) bootstrap API at /api/Bootstrap/* (BOOTSTRAP_LEGACY, default false)."
    )
  )
}

type Flags = Command.Command.ParseConfig<typeof flags>

const flagVariables = (f: Flags, logLevel: Option.Option<string>) =>
  variables({
    BOOTSTRAP_MODE: f.mode,
    BOOTSTRAP_NETWORK: f.network,
    BOOTSTRAP_HOST: f.host,
    BOOTSTRAP_PORT: f.port,
    BOOTSTRAP_DATA_DIR: f.dataDir,
    BOOTSTRAP_PRIVATE_KEY_FILE: f.privateKeyFile,
    BOOTSTRAP_PUBLIC_KEY_FILE: f.publicKeyFile,
    BOOTSTRAP_ADMIN_TOKEN: f.adminToken,
    BOOTSTRAP_PEER_LIST_SIZE: f.peerListSize,
    BOOTSTRAP_IDLE_EXPIRY_SECONDS: f.idleExpiry,
    BOOTSTRAP_TRUSTED_PROXIES: f.trustedProxies,
    BOOTSTRAP_RATE_LIMIT_PER_MINUTE: f.rateLimit,
    BOOTSTRAP_LEGACY: f.legacy ? Option.some(true) : Option.none(),
    P2P_LOG_LEVEL: logLevel
  })

/** `bootstrap`: also a subcommand of the node program's CLI. */
export const bootstrapCommand = Command.make("bootstrap", flags, (f) =>
  Effect.gen(function* () {
    const provider = configProvider(flagVariables(f, yield* logLevelFlag))
    return yield* Effect.scoped(program).pipe(Effect.provide(loggingLayerConfig), Effect.withConfigProvider(provider))
  })
).pipe(Command.withDescription("Run a bootstrap server; every flag overrides its BOOTSTRAP_* variable."))

main(import.meta.url, bootstrapCommand, { name: "p2pnet-bootstrap", version: "0.1.0" })
