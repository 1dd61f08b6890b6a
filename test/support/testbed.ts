/**
 * The multi-host test bed: N network namespaces ("hosts") joined by a Linux bridge that lives in a namespace of its
 * own, so the root namespace gains no interface and no route. Host i has eth0 with 10.213.<y>.<i>/24 (`brd +`), lo up,
 * and routes for multicast (224.0.0.0/4) and the limited broadcast (255.255.255.255); the bridge floods multicast
 * (snooping off). Names carry a per-run suffix, so parallel runs never collide; everything is deleted when the scope
 * closes, and namespaces left by runs that died are swept before a new bed is made.
 *
 * Hard rule: every packet addressed to a bed address originates inside a bed namespace (the root namespace's default
 * route leaves this machine). So this module offers no way to reach a bed address from the test process: programs
 * run in a host through `spawn` (always `ip netns exec`) and talk to the test over stdin/stdout, and a bed script calls
 * `guardTestBedHost` first, which refuses to run anywhere but in its own bed namespace.
 */
import { Command, CommandExecutor } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import type { Duration, Scope } from "effect"
import { Context, Deferred, Effect, Layer, Option, Queue, Ref, Schema, Stream, SubscriptionRef } from "effect"
import * as crypto from "node:crypto"
import * as path from "node:path"
import type { BedCommand, BedEvent, BedEventOf } from "./bed-protocol.js"
import { decodeEvent, encodeCommand } from "./bed-protocol.js"
import {
  checkTestBedHost,
  netnsInode,
  TESTBED_ADDRESS_ENV,
  TESTBED_NS_ENV,
  TESTBED_ROOT_NETNS_ENV
} from "./bed-guard.js"

export { TESTBED_ADDRESS_ENV, TESTBED_NS_ENV, TESTBED_ROOT_NETNS_ENV } from "./bed-guard.js"

// ---------------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------------

export class TestBedUnavailable extends Schema.TaggedError<TestBedUnavailable>()("TestBedUnavailable", {
  reason: Schema.String
}) {
  override get message() {
    return `the multi-host test bed cannot be made here: ${this.reason}`
  }
}

export class TestBedCommandFailed extends Schema.TaggedError<TestBedCommandFailed>()("TestBedCommandFailed", {
  command: Schema.String,
  exitCode: Schema.Number,
  stderr: Schema.String
}) {
  override get message() {
    return `${this.command} failed (exit ${this.exitCode}): ${this.stderr}`
  }
}

/** The bed refused a use that could send packets for bed addresses from outside the bed, or left it broken. */
export class TestBedMisuse extends Schema.TaggedError<TestBedMisuse>()("TestBedMisuse", { reason: Schema.String }) {
  override get message() {
    return `test bed refused: ${this.reason}`
  }
}

/** The guard of a bed script: it is not running inside its test-bed namespace. */
export class NotInTestBedNamespace extends Schema.TaggedError<NotInTestBedNamespace>()("NotInTestBedNamespace", {
  reason: Schema.String
}) {
  override get message() {
    return `refusing to run outside the test bed: ${this.reason}`
  }
}

export class BedWaitTimeout extends Schema.TaggedError<BedWaitTimeout>()("BedWaitTimeout", {
  host: Schema.String,
  waitingFor: Schema.String,
  seen: Schema.Array(Schema.String),
  stderr: Schema.String
}) {
  override get message() {
    return `${this.host}: timed out waiting for ${this.waitingFor}; last lines:\n${this.seen.join("\n")}\nstderr:\n${this.stderr}`
  }
}

export class BedProcessExited extends Schema.TaggedError<BedProcessExited>()("BedProcessExited", {
  host: Schema.String,
  waitingFor: Schema.String,
  exitCode: Schema.NullOr(Schema.Number),
  stderr: Schema.String
}) {
  override get message() {
    return `${this.host}: exited (${this.exitCode}) while waiting for ${this.waitingFor}; stderr:\n${this.stderr}`
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Names and the guard
// ---------------------------------------------------------------------------------------------------------------------

/** p2pbr-<run> (the bridge), p2ph<i>-<run> (host i), p2pprobe-<run>; <run> is <creator pid, base 36>-<random>. */
const OWN_NAME = /^p2p(?:br|h\d+|probe)-([0-9a-z]+)-([0-9a-z]+)$/

const newRunId = () =>
  `${process.pid.toString(36)}-${BigInt("0x" + crypto.randomBytes(4).toString("hex"))
    .toString(36)
    .slice(0, 5)}`

/**
 * The guard as an Effect, for bed scripts written with Effect (a script may also call checkTestBedHost from
 * bed-guard.ts before importing anything else): succeeds only inside the test-bed namespace it was started in.
 */
export const guardTestBedHost: Effect.Effect<
  { readonly namespace: string; readonly address: string | undefined },
  NotInTestBedNamespace
> = Effect.suspend(() => {
  const verdict = checkTestBedHost()
  return verdict._tag === "InTestBed"
    ? Effect.succeed({ namespace: verdict.namespace, address: verdict.address })
    : Effect.fail(new NotInTestBedNamespace({ reason: verdict.reason }))
})

// ---------------------------------------------------------------------------------------------------------------------
// Running `ip`
// ---------------------------------------------------------------------------------------------------------------------

const text = <E>(s: Stream.Stream<Uint8Array, E>) => s.pipe(Stream.decodeText(), Stream.mkString)

/** Runs `ip args...` (with `input` on stdin) and returns its stdout; a non-zero exit is a TestBedCommandFailed. */
const ip = (args: ReadonlyArray<string>, input?: string) => {
  const command = `ip ${args.join(" ")}`
  const base = Command.make("ip", ...args)
  return Effect.scoped(
    Effect.gen(function* () {
      const proc = yield* Command.start(input === undefined ? base : Command.feed(base, input))
      const [stdout, stderr, code] = yield* Effect.all([text(proc.stdout), text(proc.stderr), proc.exitCode], {
        concurrency: "unbounded"
      })
      if (code !== 0) return yield* new TestBedCommandFailed({ command, exitCode: code, stderr: stderr.trim() })
      return stdout
    })
  ).pipe(
    Effect.catchIf(
      (e): e is Exclude<typeof e, TestBedCommandFailed> => e._tag !== "TestBedCommandFailed",
      (e) => Effect.fail(new TestBedCommandFailed({ command, exitCode: -1, stderr: e.message }))
    )
  )
}

/** Names of the network namespaces (`ip netns list`). */
const namespaces = Effect.map(ip(["netns", "list"]), (out) =>
  out
    .split("\n")
    .map((l) => l.trim().split(" ")[0] ?? "")
    .filter((n) => n !== "")
)

/** Kills what still runs in a namespace, then deletes it (a missing namespace is fine). */
const deleteNamespace = (name: string) =>
  Effect.gen(function* () {
    const pids = yield* ip(["netns", "pids", name]).pipe(Effect.orElseSucceed(() => ""))
    for (const pid of pids.split("\n").filter((p) => /^\d+$/.test(p.trim()))) {
      yield* Effect.sync(() => {
        try {
          process.kill(Number(pid), "SIGKILL")
        } catch {
          // already gone
        }
      })
    }
    yield* ip(["netns", "del", name])
  }).pipe(
    Effect.catchAll((e) =>
      /No such file|Cannot remove namespace file/.test(e.stderr) ? Effect.void : Effect.logWarning(e.message)
    )
  )

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

/**
 * Deletes namespaces of this helper's naming left behind by runs that died (killed worker, crashed runner): those whose
 * creating process is gone and in which nothing runs any more. Returns the names deleted.
 */
export const sweepStaleTestBeds = Effect.gen(function* () {
  const runs = new Map<string, Array<string>>()
  for (const name of yield* namespaces) {
    const m = OWN_NAME.exec(name)
    if (m === null) continue
    const run = `${m[1]}-${m[2]}`
    runs.set(run, [...(runs.get(run) ?? []), name])
  }
  const deleted: Array<string> = []
  for (const [run, names] of runs) {
    if (isAlive(parseInt(run.split("-")[0]!, 36))) continue
    const busy = yield* Effect.forEach(names, (n) =>
      Effect.map(ip(["netns", "pids", n]).pipe(Effect.orElseSucceed(() => "")), (p) => p.trim() !== "")
    )
    if (busy.some((b) => b)) continue
    yield* Effect.forEach(names, deleteNamespace, { discard: true })
    deleted.push(...names)
  }
  return deleted as ReadonlyArray<string>
})

// ---------------------------------------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------------------------------------

export type Availability = { readonly available: true } | { readonly available: false; readonly reason: string }

/** Whether a bed can be made here: Linux, root, `ip`, and permission to make namespaces, bridges and veth pairs. */
export const testBedAvailability: Effect.Effect<Availability> = Effect.gen(function* () {
  const no = (reason: string): Availability => ({ available: false, reason })
  if (process.platform !== "linux") return no("network namespaces need Linux")
  if (process.getuid?.() !== 0) return no("not running as root")
  if (process.env[TESTBED_NS_ENV] !== undefined) return no("already inside a test-bed namespace")
  const version = yield* Effect.either(ip(["-V"]))
  if (version._tag === "Left") return no(`\`ip\` (iproute2) cannot be run: ${version.left.stderr}`)
  const probe = `p2pprobe-${newRunId()}`
  const made = yield* Effect.either(
    Effect.zipRight(
      ip(["netns", "add", probe]),
      ip(["-n", probe, "-b", "-"], "link add br0 type bridge\nlink add a0 type veth peer name a1\n")
    ).pipe(Effect.ensuring(deleteNamespace(probe)))
  )
  if (made._tag === "Left")
    return no(`network namespaces, bridges or veth pairs are not permitted: ${made.left.message}`)
  return { available: true } as const
}).pipe(Effect.provide(NodeContext.layer))

// ---------------------------------------------------------------------------------------------------------------------
// The bed
// ---------------------------------------------------------------------------------------------------------------------

export interface BedHost {
  /** 1-based. */
  readonly index: number
  readonly namespace: string
  readonly interface: "eth0"
  readonly address: string
  /** address/24 */
  readonly cidr: string
  readonly broadcast: string
}

/** A program running in one host, reached only through its stdin and stdout. */
export interface BedProcess {
  readonly host: BedHost
  readonly pid: number
  /** Every stdout line so far, parsed as JSON (a line that is not JSON is kept as a string). */
  readonly lines: SubscriptionRef.SubscriptionRef<ReadonlyArray<unknown>>
  readonly writeLine: (line: string) => Effect.Effect<void>
  /**
   * The first line (from index `from`, default 0) for which `select` returns a value; fails when the process exits
   * first or after `timeout` (default 20 s), with the lines seen and the process's stderr.
   */
  readonly waitFor: <A>(
    waitingFor: string,
    select: (line: unknown) => A | undefined,
    options?: { readonly from?: number; readonly timeout?: Duration.DurationInput }
  ) => Effect.Effect<A, BedWaitTimeout | BedProcessExited>
  /** Waits for the process to exit: its exit code (null when killed by a signal). */
  readonly exitCode: Effect.Effect<number | null>
  readonly stderr: Effect.Effect<string>
}

/** A test-bed node (test/support/bed-node.ts) with its events decoded (test/support/bed-protocol.ts). */
export interface BedNode {
  readonly host: BedHost
  readonly process: BedProcess
  readonly id: string
  readonly port: number
  readonly send: (command: BedCommand) => Effect.Effect<void>
  /** The first event of `kind` (from index `from` of all lines) that satisfies `where`. */
  readonly waitFor: <K extends BedEvent["event"]>(
    kind: K,
    where?: (event: BedEventOf<K>) => boolean,
    options?: { readonly from?: number; readonly timeout?: Duration.DurationInput; readonly waitingFor?: string }
  ) => Effect.Effect<BedEventOf<K>, BedWaitTimeout | BedProcessExited>
  /** Sends a command and waits for the first `kind` event printed after it. */
  readonly request: <K extends BedEvent["event"]>(
    command: BedCommand,
    kind: K
  ) => Effect.Effect<BedEventOf<K>, BedWaitTimeout | BedProcessExited>
}

export interface SpawnOptions {
  /** A script run with `node --import tsx` (default: test/support/bed-node.ts); it must call guardTestBedHost first. */
  readonly script?: string
  readonly args?: ReadonlyArray<string>
  readonly env?: Readonly<Record<string, string>>
}

export interface TestBedShape {
  /** This run's suffix: every namespace of the bed ends with it. */
  readonly run: string
  /** 10.213.<y>.0/24 */
  readonly subnet: string
  readonly bridgeNamespace: string
  readonly hosts: ReadonlyArray<BedHost>
  /** Host i, 1-based. */
  readonly host: (index: number) => BedHost
  /** Every namespace of the bed (bridge and hosts). */
  readonly namespaces: ReadonlyArray<string>
  /**
   * Starts a program inside a host, with `ip netns exec`: the only way this module runs anything that could use
   * the bed's addresses. Stopped (SIGTERM, then SIGKILL after 5 s) when the scope closes.
   */
  readonly spawn: (host: BedHost, options?: SpawnOptions) => Effect.Effect<BedProcess, TestBedMisuse, Scope.Scope>
  /**
   * Starts a test-bed node in a host (settings from `env`: P2P_* variables; here P2P_PORT defaults to BED_NODE_PORT and
   * P2P_DISCOVERY to false) and waits until it listens.
   */
  readonly startNode: (
    host: BedHost,
    env?: Readonly<Record<string, string>>
  ) => Effect.Effect<BedNode, TestBedMisuse | BedWaitTimeout | BedProcessExited, Scope.Scope>
  /**
   * Starts several nodes: loaded side by side, then started in the order given, each listening before the next starts
   * (so a node may name earlier ones in P2P_PEERS).
   */
  readonly startNodes: (
    nodes: ReadonlyArray<NodeSpec>
  ) => Effect.Effect<ReadonlyArray<BedNode>, TestBedMisuse | BedWaitTimeout | BedProcessExited, Scope.Scope>
  /** Runs a command inside a host (`ip netns exec <ns> ...`) and returns its stdout. */
  readonly exec: (host: BedHost, command: ReadonlyArray<string>) => Effect.Effect<string, TestBedCommandFailed>
}

export interface NodeSpec {
  readonly host: BedHost
  readonly env?: Readonly<Record<string, string>>
}

/** The TCP port bed nodes listen on by default: every host has its own port space, as on a real LAN. */
export const BED_NODE_PORT = 8051

export interface TestBedOptions {
  /** How many hosts, 1 to 250. */
  readonly hosts: number
}

const projectRoot = path.resolve(import.meta.dirname, "../..")
export const bedNodeScript = path.resolve(import.meta.dirname, "bed-node.ts")

/** A route's or address's IPv4 prefix as [network as number, length]; undefined for `default` and non-IPv4. */
const parseCidr = (s: string): readonly [number, number] | undefined => {
  const [addr, len] = s.split("/")
  const parts = (addr ?? "").split(".").map(Number)
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return undefined
  return [
    ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0,
    len === undefined ? 32 : Number(len)
  ]
}
const overlaps = (a: readonly [number, number], b: readonly [number, number]) => {
  const len = Math.min(a[1], b[1])
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0
  return (a[0] & mask) >>> 0 === (b[0] & mask) >>> 0
}
const ROUTE_TYPES = new Set([
  "unicast",
  "local",
  "broadcast",
  "multicast",
  "unreachable",
  "prohibit",
  "blackhole",
  "throw"
])

/** IPv4 prefixes the root namespace routes or holds, other than the default route. */
const rootPrefixes = Effect.gen(function* () {
  const routes = yield* ip(["-4", "-o", "route", "show", "table", "all"])
  const addrs = yield* ip(["-4", "-o", "addr", "show"])
  const found: Array<readonly [number, number]> = []
  for (const line of routes.split("\n")) {
    const words = line.trim().split(/\s+/)
    const dest = ROUTE_TYPES.has(words[0] ?? "") ? words[1] : words[0]
    const p = dest === undefined || dest === "default" ? undefined : parseCidr(dest)
    if (p !== undefined) found.push(p)
  }
  for (const m of addrs.matchAll(/inet (\d+\.\d+\.\d+\.\d+\/\d+)/g)) {
    const p = parseCidr(m[1]!)
    if (p !== undefined) found.push(p)
  }
  return found
})

const makeWith = (options: TestBedOptions) =>
  Effect.gen(function* () {
    if (!Number.isInteger(options.hosts) || options.hosts < 1 || options.hosts > 250) {
      return yield* new TestBedMisuse({ reason: `hosts must be 1 to 250, got ${options.hosts}` })
    }
    if (process.env[TESTBED_NS_ENV] !== undefined) {
      return yield* new TestBedMisuse({ reason: "a test bed cannot be made from inside a test-bed namespace" })
    }
    if (process.getuid?.() !== 0) return yield* new TestBedUnavailable({ reason: "not running as root" })
    const context = yield* Effect.context<CommandExecutor.CommandExecutor>()
    const rootNetns = netnsInode("/proc/self/ns/net") ?? ""
    yield* sweepStaleTestBeds

    // a /24 the root namespace neither routes nor holds (the default route aside), so a bed address can never be
    // mistaken for a real one here
    const taken = yield* rootPrefixes
    let third = -1
    for (let attempt = 0; attempt < 64 && third < 0; attempt++) {
      const y = crypto.randomInt(0, 256)
      if (!taken.some((p) => overlaps(p, [((10 << 24) | (213 << 16) | (y << 8)) >>> 0, 24]))) third = y
    }
    if (third < 0) return yield* new TestBedUnavailable({ reason: "no free /24 in 10.213.0.0/16" })
    const base = `10.213.${third}`
    const run = newRunId()
    const bridgeNamespace = `p2pbr-${run}`
    const hosts: ReadonlyArray<BedHost> = Array.from({ length: options.hosts }, (_, k) => ({
      index: k + 1,
      namespace: `p2ph${k + 1}-${run}`,
      interface: "eth0" as const,
      address: `${base}.${k + 1}`,
      cidr: `${base}.${k + 1}/24`,
      broadcast: `${base}.255`
    }))
    const all = [bridgeNamespace, ...hosts.map((h) => h.namespace)]
    const closed = yield* Ref.make(false)

    // registered before anything exists, so a failure half-way still deletes whatever was made
    yield* Effect.acquireRelease(Effect.void, () =>
      Effect.zipRight(Ref.set(closed, true), Effect.forEach(all, deleteNamespace, { discard: true }))
    )
    yield* ip(["netns", "add", bridgeNamespace])
    yield* ip(["-n", bridgeNamespace, "-b", "-"], "link add br0 type bridge mcast_snooping 0\nlink set br0 up\n")
    yield* Effect.forEach(
      hosts,
      (h) =>
        Effect.zipRight(
          ip(["netns", "add", h.namespace]),
          ip(
            ["-n", h.namespace, "-b", "-"],
            [
              `link add eth0 type veth peer name v${h.index} netns ${bridgeNamespace}`,
              "link set lo up",
              `addr add ${h.cidr} brd + dev eth0`,
              "link set eth0 up",
              "route add 224.0.0.0/4 dev eth0",
              "route add 255.255.255.255/32 dev eth0",
              ""
            ].join("\n")
          )
        ),
      { concurrency: 4, discard: true }
    )
    yield* ip(["-n", bridgeNamespace, "-b", "-"], hosts.map((h) => `link set v${h.index} master br0 up\n`).join(""))

    // the root namespace must not have gained an interface into the bed or a route to it
    const links = yield* ip(["-o", "link", "show"])
    const leaked = all.filter((n) => links.includes(`link-netns ${n}`))
    const routed = (yield* rootPrefixes).some((p) => overlaps(p, parseCidr(`${base}.0/24`)!))
    if (leaked.length > 0 || routed) {
      return yield* new TestBedMisuse({
        reason: `the root namespace reaches the bed (${leaked.length > 0 ? `links into ${leaked.join(", ")}` : `a route to ${base}.0/24`})`
      })
    }

    const checkHost = (host: BedHost) =>
      Effect.gen(function* () {
        if (yield* Ref.get(closed)) return yield* new TestBedMisuse({ reason: "the test bed is torn down" })
        if (!hosts.some((h) => h.namespace === host.namespace)) {
          return yield* new TestBedMisuse({ reason: `${host.namespace} is not a host of test bed ${run}` })
        }
      })

    const spawn = (host: BedHost, spawnOptions: SpawnOptions = {}) =>
      Effect.gen(function* () {
        yield* checkHost(host)
        const script = spawnOptions.script ?? bedNodeScript
        const command = Command.make(
          "ip",
          "netns",
          "exec",
          host.namespace,
          process.execPath,
          "--import",
          "tsx",
          script,
          ...(spawnOptions.args ?? [])
        ).pipe(
          Command.workingDirectory(projectRoot),
          Command.env({
            P2P_LOG_LEVEL: "Warning",
            ...spawnOptions.env,
            [TESTBED_NS_ENV]: host.namespace,
            [TESTBED_ROOT_NETNS_ENV]: rootNetns,
            [TESTBED_ADDRESS_ENV]: host.address
          })
        )
        return yield* startProcess(host, command)
      }).pipe(
        Effect.provide(context),
        Effect.catchIf(
          (e): e is Exclude<typeof e, TestBedMisuse> => e._tag !== "TestBedMisuse",
          (e) =>
            Effect.fail(new TestBedMisuse({ reason: `could not start a process in ${host.namespace}: ${e.message}` }))
        )
      )

    // all load side by side (the slow part), then start one after the other, each listening before the next starts
    const startNodes = (nodes: ReadonlyArray<NodeSpec>) =>
      Effect.gen(function* () {
        const procs = yield* Effect.forEach(
          nodes,
          ({ env, host }) =>
            spawn(host, {
              env: { P2P_DISCOVERY: "false", P2P_PORT: String(BED_NODE_PORT), ...env, P2P_BED_HOLD: "true" }
            }),
          { concurrency: "unbounded" }
        )
        yield* Effect.forEach(
          procs,
          (p) =>
            p.waitFor("the node to load", (l) => (isRecord(l) && l.event === "loaded" ? true : undefined), {
              timeout: "60 seconds"
            }),
          { concurrency: "unbounded", discard: true }
        )
        const started: Array<BedNode> = []
        for (const p of procs) {
          yield* p.writeLine(encodeCommand({ cmd: "start" }))
          started.push(yield* bedNode(p))
        }
        return started as ReadonlyArray<BedNode>
      })

    const startNode = (host: BedHost, env: Readonly<Record<string, string>> = {}) =>
      Effect.map(startNodes([{ host, env }]), (nodes) => nodes[0]!)

    const exec = (host: BedHost, command: ReadonlyArray<string>) =>
      checkHost(host).pipe(
        Effect.mapError(
          (e) => new TestBedCommandFailed({ command: command.join(" "), exitCode: -1, stderr: e.message })
        ),
        Effect.zipRight(ip(["netns", "exec", host.namespace, ...command])),
        Effect.provide(context)
      )

    return TestBed.of({
      run,
      subnet: `${base}.0/24`,
      bridgeNamespace,
      hosts,
      host: (i) => hosts[i - 1]!,
      namespaces: all,
      spawn,
      startNode,
      startNodes,
      exec
    })
  })

/** Starts `command` (an `ip netns exec`) and collects its stdout lines and stderr. */
const startProcess = (host: BedHost, command: Command.Command) =>
  Effect.gen(function* () {
    const proc = yield* Command.start(command)
    // Command.start's own release waits for the exit after SIGTERM; this one runs first and makes sure it comes
    yield* Effect.addFinalizer(() =>
      proc.kill("SIGTERM").pipe(
        Effect.timeout("5 seconds"),
        Effect.catchAll(() => proc.kill("SIGKILL")),
        Effect.ignore
      )
    )
    const lines = yield* SubscriptionRef.make<ReadonlyArray<unknown>>([])
    const stderr = yield* Ref.make("")
    const stdoutDone = yield* Deferred.make<void>()
    const exited = yield* Deferred.make<number | null>()
    yield* proc.stdout.pipe(
      Stream.decodeText(),
      Stream.splitLines,
      Stream.runForEach((line) => SubscriptionRef.update(lines, (ls) => [...ls, parseLine(line)])),
      Effect.ignore,
      Effect.zipRight(Deferred.succeed(stdoutDone, undefined)),
      Effect.forkScoped
    )
    yield* proc.stderr.pipe(
      Stream.decodeText(),
      Stream.runForEach((chunk) => Ref.update(stderr, (s) => (s + chunk).slice(-8192))),
      Effect.ignore,
      Effect.forkScoped
    )
    yield* proc.exitCode.pipe(
      Effect.map((c) => c as number | null),
      Effect.orElseSucceed(() => null),
      Effect.flatMap((c) => Deferred.succeed(exited, c)),
      Effect.forkScoped
    )
    const label = `host ${host.index} (${host.address})`
    // one stream into stdin for the life of the process (the stdin sink ends the pipe when its stream ends)
    const stdin = yield* Queue.unbounded<string>()
    yield* Stream.fromQueue(stdin).pipe(
      Stream.map((line) => new TextEncoder().encode(line + "\n")),
      Stream.run(proc.stdin),
      Effect.ignore,
      Effect.forkScoped
    )

    const find = <A>(ls: ReadonlyArray<unknown>, select: (line: unknown) => A | undefined, from: number) => {
      for (let i = from; i < ls.length; i++) {
        const a = select(ls[i])
        if (a !== undefined) return Option.some(a)
      }
      return Option.none<A>()
    }

    const waitFor: BedProcess["waitFor"] = (waitingFor, select, options = {}) => {
      const from = options.from ?? 0
      const found = lines.changes.pipe(
        Stream.map((ls) => find(ls, select, from)),
        Stream.filterMap((o) => o),
        Stream.runHead,
        Effect.flatMap((o) => o)
      )
      // the output is read to its end before deciding that what we wait for never came
      const gone = Effect.gen(function* () {
        yield* Deferred.await(stdoutDone)
        const last = find(yield* SubscriptionRef.get(lines), select, from)
        if (Option.isSome(last)) return last.value
        return yield* new BedProcessExited({
          host: label,
          waitingFor,
          exitCode: yield* Deferred.await(exited).pipe(
            Effect.timeout("1 second"),
            Effect.orElseSucceed(() => null)
          ),
          stderr: yield* Ref.get(stderr)
        })
      })
      return Effect.raceFirst(Effect.orDie(found), gone).pipe(
        Effect.timeout(options.timeout ?? "20 seconds"),
        Effect.catchTag("TimeoutException", () =>
          Effect.gen(function* () {
            const seen = (yield* SubscriptionRef.get(lines)).slice(-20).map((l) => JSON.stringify(l))
            return yield* new BedWaitTimeout({ host: label, waitingFor, seen, stderr: yield* Ref.get(stderr) })
          })
        )
      )
    }

    return {
      host,
      pid: proc.pid as number,
      lines,
      writeLine: (line: string) => Effect.asVoid(Queue.offer(stdin, line)),
      waitFor,
      exitCode: Deferred.await(exited),
      stderr: Ref.get(stderr)
    } satisfies BedProcess
  })

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

const parseLine = (line: string): unknown => {
  try {
    return JSON.parse(line)
  } catch {
    return line
  }
}

/** Decodes a bed node's events; waits until it listens. */
const bedNode = (proc: BedProcess) =>
  Effect.gen(function* () {
    const waitFor: BedNode["waitFor"] = (kind, where, options = {}) =>
      proc.waitFor(
        options.waitingFor ?? `a ${kind} event`,
        (line) => {
          const e = Option.getOrUndefined(decodeEvent(line))
          return e !== undefined && e.event === kind && (where === undefined || where(e as BedEventOf<typeof kind>))
            ? (e as BedEventOf<typeof kind>)
            : undefined
        },
        options
      )
    const send = (command: BedCommand) => proc.writeLine(encodeCommand(command))
    const listening = yield* waitFor("listening")
    return {
      host: proc.host,
      process: proc,
      id: listening.id,
      port: listening.port,
      send,
      waitFor,
      request: (command, kind) =>
        Effect.gen(function* () {
          const from = (yield* SubscriptionRef.get(proc.lines)).length
          yield* send(command)
          return yield* waitFor(kind, undefined, { from })
        })
    } satisfies BedNode
  })

/** A test bed as a service, for tests that share one bed through a Layer. */
export class TestBed extends Context.Tag("effect-p2pnet/test/TestBed")<TestBed, TestBedShape>() {
  static readonly layer = (options: TestBedOptions) => Layer.scoped(this, makeTestBed(options))
}

/**
 * Makes a test bed for the life of the scope: namespaces, bridge, veth pairs, addresses and routes; all of it is
 * deleted (and whatever still runs in it killed) when the scope closes, whether the test passed, failed or was
 * interrupted.
 *
 * @example
 * const bed = yield* makeTestBed({ hosts: 3 })
 * const a = yield* bed.startNode(bed.host(1))
 * const b = yield* bed.startNode(bed.host(2), { P2P_PEERS: `${bed.host(1).address}:${a.port}` })
 */
export const makeTestBed = (
  options: TestBedOptions
): Effect.Effect<TestBedShape, TestBedUnavailable | TestBedCommandFailed | TestBedMisuse, Scope.Scope> =>
  makeWith(options).pipe(Effect.provide(NodeContext.layer))

/** Namespaces whose name contains `fragment` (e.g. a bed's run suffix). */
export const namespacesMatching = (fragment: string) =>
  Effect.map(namespaces, (ns) => ns.filter((n) => n.includes(fragment))).pipe(Effect.provide(NodeContext.layer))

/**
 * Whether this machine can make a bed, found out once per test process; when it cannot, the reason is printed once so
 * the skipped tests explain themselves. For `it.skipIf(!(await Effect.runPromise(testBedReady)).available)`.
 */
export const testBedReady: Effect.Effect<Availability> = Effect.runSync(
  Effect.cached(
    testBedAvailability.pipe(
      Effect.tap((a) =>
        a.available ? Effect.void : Effect.sync(() => console.warn(`multi-host test bed skipped: ${a.reason}`))
      )
    )
  )
)
