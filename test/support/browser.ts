/**
 * A real browser for tests: Debian's Chromium driven by playwright-core (no browser download). `ensureChromium`
 * installs the `chromium` package with apt when /usr/bin/chromium is missing and we are root (or have passwordless
 * sudo), so the dashboard test passes on a fresh machine and in CI; `launchChromium` is a scoped Browser.
 */
import { Command, FileSystem } from "@effect/platform"
import type { CommandExecutor } from "@effect/platform/CommandExecutor"
import { Effect, Schema } from "effect"
import type { Scope } from "effect"
import type { Browser } from "playwright-core"
import { chromium } from "playwright-core"

/** Debian's chromium package installs here; CHROMIUM_PATH points elsewhere (then nothing is installed). */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
const DEBIAN_CHROMIUM = "/usr/bin/chromium"

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // tests only talk to 127.0.0.1: no name resolves, so nothing leaves the machine by accident
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
]

export class BrowserSetupError extends Schema.TaggedError<BrowserSetupError>()("BrowserSetupError", {
  detail: Schema.String
}) {
  override get message() {
    return `cannot provide Chromium for the browser tests: ${this.detail}`
  }
}

/** Runs a command with its output shown (apt takes a while; the log says why). */
const run = (command: string, args: ReadonlyArray<string>) =>
  Command.make(command, ...args).pipe(
    Command.env({ DEBIAN_FRONTEND: "noninteractive" }),
    Command.stdout("inherit"),
    Command.stderr("inherit"),
    Command.exitCode,
    Effect.catchAll((e) => Effect.fail(new BrowserSetupError({ detail: `${command} could not run: ${e.message}` })))
  )

/**
 * Makes sure CHROMIUM_PATH exists. When it does not: `apt-get install -y chromium`, as root or through `sudo -n`,
 * running `apt-get update` first when the package lists are missing (a fresh container) and again, once, when the
 * install fails (stale lists). Fails with BrowserSetupError saying what to do when it cannot install.
 */
export const ensureChromium: Effect.Effect<void, BrowserSetupError, FileSystem.FileSystem | CommandExecutor> =
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const exists = (file: string) => fs.exists(file).pipe(Effect.orElseSucceed(() => false))
    if (yield* exists(CHROMIUM_PATH)) return
    if (CHROMIUM_PATH !== DEBIAN_CHROMIUM) {
      return yield* new BrowserSetupError({ detail: `CHROMIUM_PATH=${CHROMIUM_PATH} does not exist` })
    }
    if (!(yield* exists("/usr/bin/apt-get"))) {
      return yield* new BrowserSetupError({
        detail: `${CHROMIUM_PATH} is missing and there is no apt-get; install Chromium and set CHROMIUM_PATH`
      })
    }
    const root = process.getuid?.() === 0
    const sudo = root ? false : (yield* run("sudo", ["-n", "true"]).pipe(Effect.orElseSucceed(() => 1))) === 0
    if (!root && !sudo) {
      return yield* new BrowserSetupError({
        detail: `${CHROMIUM_PATH} is missing; run "sudo apt-get install -y chromium" (or run the tests as root)`
      })
    }
    const apt = (args: ReadonlyArray<string>) => (root ? run("apt-get", args) : run("sudo", ["-n", "apt-get", ...args]))
    // wait for another apt/dpkg run (unattended upgrades) instead of failing on its lock
    const update = apt(["-o", "DPkg::Lock::Timeout=300", "update"])
    const install = apt(["-o", "DPkg::Lock::Timeout=300", "install", "-y", "chromium"])
    const lists = yield* fs.readDirectory("/var/lib/apt/lists").pipe(Effect.orElseSucceed(() => []))
    const haveLists = lists.some((name) => name.includes("_Packages"))
    yield* Effect.logWarning(`${CHROMIUM_PATH} is missing: installing Debian's chromium package with apt-get`)
    if (!haveLists) yield* update
    let code = yield* install
    if (code !== 0 && haveLists) {
      yield* update
      code = yield* install
    }
    if (code !== 0 || !(yield* exists(CHROMIUM_PATH))) {
      return yield* new BrowserSetupError({
        detail: `"apt-get install -y chromium" ended with code ${code} and ${CHROMIUM_PATH} is still missing`
      })
    }
  })

/**
 * Chromium with a new, empty profile (playwright-core creates a temporary user-data-dir per launch and deletes it
 * on close), closed with the scope. Installs Chromium first when it is missing.
 */
export const launchChromium: Effect.Effect<
  Browser,
  BrowserSetupError,
  Scope.Scope | FileSystem.FileSystem | CommandExecutor
> = Effect.zipRight(
  ensureChromium,
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, timeout: 60_000 }),
      catch: (e) => new BrowserSetupError({ detail: `${CHROMIUM_PATH} did not start: ${String(e)}` })
    }),
    (browser) => Effect.promise(() => browser.close())
  )
)
