// Runs before `npm start`, `npm test` and `npm run bench`: on a fresh clone (no node_modules yet) it installs exactly
// what package-lock.json pins, so the README's two commands are all the set-up there is. Node built-ins only.
import { spawnSync } from "node:child_process"
import { existsSync, statSync } from "node:fs"

const installed = "node_modules/.package-lock.json"
const stale = !existsSync(installed) || statSync(installed).mtimeMs < statSync("package-lock.json").mtimeMs
if (stale) {
  process.stderr.write("installing dependencies (npm ci)...\n")
  const npm = process.platform === "win32" ? "npm.cmd" : "npm"
  const result = spawnSync(npm, ["ci", "--no-audit", "--no-fund"], { stdio: "inherit" })
  process.exit(result.status ?? 1)
}
