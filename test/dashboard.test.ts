/**
 * The admin dashboard in a real browser: the bootstrap server (authority mode, a temporary data directory, a known
 * admin token) on 127.0.0.1 port 0, peers registered through the shared API definition with signed registrations,
 * and Debian's Chromium driven by playwright-core (installed with apt when missing, see support/browser.ts).
 */
import { FetchHttpClient, FileSystem, HttpApiClient, HttpClient } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer, Logger, LogLevel, Option, Redacted } from "effect"
import * as path from "node:path"
import type { Browser, Locator, Page } from "playwright-core"
import { BootstrapApi, registrationBytes } from "../src/schema/bootstrap.js"
import type { RegisterRequest } from "../src/schema/bootstrap.js"
import type { Port } from "../src/schema/ids.js"
import { BootstrapConfig, serverLayer, serverUrl } from "../src/layers/BootstrapServer.js"
import { BootstrapStore } from "../src/layers/BootstrapStore.js"
import type { NodeKeys } from "../src/layers/NodeIdentity.js"
import { generateKeys } from "../src/layers/NodeIdentity.js"
import { launchChromium } from "./support/browser.js"

const TOKEN = "dashboard-test-token-5f1c9a"
/** Server text is written with textContent: this name must show as these characters and run nothing. */
const NETWORK = `<img src=x onerror="window.__xss = 1">net`
/** How long the page may take to show a change: the dashboard polls every 1.5 s (slack for a loaded CI machine). */
const SEEN_WITHIN = { timeout: 20_000 }

const signedRegistration = (keys: NodeKeys, port: number): RegisterRequest => {
  const unsigned = {
    id: keys.id,
    port: port as Port,
    publicKey: Buffer.from(keys.publicKey).toString("base64"),
    network: NETWORK,
    sentAt: Date.now()
  }
  return { ...unsigned, signature: Buffer.from(keys.sign(registrationBytes(unsigned))).toString("base64") }
}

class Dashboard extends Context.Tag("test/Dashboard")<
  Dashboard,
  {
    readonly url: string
    readonly browser: Browser
    /** Registers a new peer (fresh key) the way a node does; returns its id. */
    readonly register: (port: number) => Effect.Effect<string>
  }
>() {}

const DashboardLive = Layer.scoped(
  Dashboard,
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const dataDir = yield* fs.makeTempDirectoryScoped({ prefix: "p2pnet-dashboard-" })
    const config = BootstrapConfig.layer({
      mode: "authority",
      network: NETWORK,
      host: "127.0.0.1",
      port: 0,
      dataDir,
      adminToken: Option.some(Redacted.make(TOKEN))
    })
    const store = BootstrapStore.layerSqlite(path.join(dataDir, "bootstrap.db"))
    const server = yield* Layer.build(
      serverLayer.pipe(Layer.provide(Layer.mergeAll(config, store, Logger.minimumLogLevel(LogLevel.Warning))))
    )
    const url = yield* Effect.provide(serverUrl, server)
    const client = yield* HttpApiClient.group(BootstrapApi, {
      group: "bootstrap",
      httpClient: yield* HttpClient.HttpClient,
      baseUrl: url
    })
    const register = (port: number) =>
      Effect.gen(function* () {
        const keys = generateKeys()
        yield* client.register({ payload: signedRegistration(keys, port) })
        return keys.id as string
      }).pipe(Effect.orDie)
    const browser = yield* launchChromium
    return { url, browser, register }
  })
).pipe(Layer.provide(Layer.merge(NodeContext.layer, FetchHttpClient.layer)))

const pw = <A>(f: () => Promise<A>) => Effect.promise(f)

/**
 * Runs `steps` on a fresh page (its own browser context: empty sessionStorage), then checks that no script error
 * escaped on the page. When a step fails, the log shows what the page said at that moment.
 */
const onNewPage = <A, E, R>(browser: Browser, steps: (page: Page) => Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const context = yield* Effect.acquireRelease(
      pw(() => browser.newContext()),
      (c) => pw(() => c.close())
    )
    const page = yield* pw(() => context.newPage())
    const errors: Array<string> = []
    page.on("pageerror", (e) => errors.push(String(e)))
    const result = yield* steps(page).pipe(
      Effect.tapErrorCause(() =>
        pw(() =>
          page
            .locator("body")
            .innerText({ timeout: 5_000 })
            .catch((e) => `(unreadable: ${e})`)
        ).pipe(Effect.flatMap((text) => Effect.logError(`the page at the failure:\n${text}`)))
      )
    )
    assert.deepStrictEqual(errors, [], "uncaught errors in the page")
    return result
  })

const text = (locator: Locator) =>
  Effect.map(
    pw(() => locator.textContent()),
    (t) => t ?? ""
  )

const peerRow = (page: Page, id: string) => page.locator(`[data-testid="peer-row"][data-peer-id="${id}"]`)

// A fresh machine may first install Chromium with apt (support/browser.ts): minutes, not seconds.
layer(DashboardLive, { excludeTestServices: true, timeout: "15 minutes" })("dashboard", (it) => {
  it.scoped(
    "a wrong token is refused by the server and the login form says so",
    () =>
      Effect.gen(function* () {
        const { browser, url } = yield* Dashboard
        yield* onNewPage(browser, (page) =>
          Effect.gen(function* () {
            yield* pw(() => page.goto(`${url}/dashboard`))
            yield* pw(() => page.getByLabel("Admin token").fill("not-the-token"))
            yield* pw(() => page.getByRole("button", { name: "Log in" }).click())
            yield* pw(() => page.getByTestId("login-message").filter({ hasText: "401" }).waitFor(SEEN_WITHIN))
            assert.isFalse(yield* pw(() => page.getByTestId("dashboard-view").isVisible()))
            assert.isNull(yield* pw(() => page.evaluate(`sessionStorage.getItem("effect-p2pnet.adminToken")`)))
          })
        )
      }),
    60_000
  )

  it.scoped(
    "logs in, shows peers registered before and after the page loaded, blocks one and records it",
    () =>
      Effect.gen(function* () {
        const { browser, register, url } = yield* Dashboard
        const first = yield* register(41001)
        yield* onNewPage(browser, (page) =>
          Effect.gen(function* () {
            yield* pw(() => page.goto(`${url}/`))
            yield* pw(() => page.getByLabel("Admin token").fill(TOKEN))
            yield* pw(() => page.getByRole("button", { name: "Log in" }).click())
            yield* pw(() => peerRow(page, first).waitFor(SEEN_WITHIN))
            assert.strictEqual(yield* text(page.getByTestId("status-mode")), "authority")
            assert.strictEqual(yield* text(page.getByTestId("status-network")), NETWORK)
            assert.match(yield* text(page.getByTestId("status-fingerprint")), /^[0-9a-f]{32}$/)
            assert.match(yield* text(peerRow(page, first)), /127\.0\.0\.1.*41001/)

            // never reloaded: a mark left in the page's window is still there when the second peer shows up
            yield* pw(() => page.evaluate("window.__sameLoad = true"))
            const second = yield* register(41002)
            yield* pw(() => peerRow(page, second).waitFor(SEEN_WITHIN))
            assert.isTrue(yield* pw(() => page.evaluate("window.__sameLoad === true")))
            yield* pw(() => page.getByTestId("status-peer-count").filter({ hasText: /^2$/ }).waitFor(SEEN_WITHIN))

            yield* pw(() => page.getByRole("button", { name: `Block peer ${second}` }).click())
            const blocked = page.getByTestId("action-message").filter({ hasText: `Block of peer ${second} queued` })
            yield* pw(() => blocked.waitFor(SEEN_WITHIN))
            const audit = page.getByTestId("audit-row").filter({ hasText: "block" }).filter({ hasText: second })
            yield* pw(() => audit.waitFor(SEEN_WITHIN))
            const signed = page.getByTestId("signing-row").filter({ hasText: `BlockAndRemovePeer (peer=${second}` })
            yield* pw(() => signed.waitFor(SEEN_WITHIN))
            // a blocked peer is removed from the registry: its row goes, the other stays
            yield* pw(() => peerRow(page, second).waitFor({ state: "detached", ...SEEN_WITHIN }))
            assert.isTrue(yield* pw(() => peerRow(page, first).isVisible()))

            assert.isUndefined(yield* pw(() => page.evaluate("window.__xss")))
          })
        )
      }),
    120_000
  )
})
