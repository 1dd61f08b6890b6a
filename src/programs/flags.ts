/**
 * Command-line plumbing shared by the node program (node.ts) and the bootstrap program (bootstrap.ts): flags that
 * override environment variables (flags > environment > the program's defaults), the flag shapes both use, and the
 * `main` that runs a command when its module is the entry point.
 */
import type { CliApp } from "@effect/cli"
import { Command, HelpDoc, Options, ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, ConfigProvider, Effect, FiberRef, Option } from "effect"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const invalid = (message: string) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(message)))

export const nonNegative = (n: number) => (n >= 0 ? Effect.succeed(n) : invalid("expected 0 or more"))

/** `--port` / `-p`: 0 to 65535 (0 picks a free one); None when not given. */
export const portFlag = (description: string) =>
  Options.integer("port").pipe(
    Options.withAlias("p"),
    Options.withDescription(description),
    Options.mapEffect((n) => (n >= 0 && n <= 65535 ? Effect.succeed(n) : invalid("expected a port from 0 to 65535"))),
    Options.optional
  )

/** `--name` / `--no-name`: Some(true), Some(false) or None when neither is given (the variable decides). */
export const onOff = (name: string, onDescription: string, offDescription: string) =>
  Options.all([
    Options.boolean(name).pipe(Options.withDescription(onDescription)),
    Options.boolean(`no-${name}`).pipe(Options.withDescription(offDescription))
  ]).pipe(
    Options.mapEffect(([on, off]) =>
      on && off
        ? invalid(`--${name} and --no-${name} contradict each other`)
        : Effect.succeed(on ? Option.some(true) : off ? Option.some(false) : Option.none())
    )
  )

/** A flag's value for `variables`: None or an empty repeated flag leaves its variable (or its default) in force. */
export type FlagValue =
  Option.Option<string | number | boolean | ReadonlyArray<string | number>> | ReadonlyArray<string>

/** The variables the given flags override, by variable name; lists are written comma-separated. */
export const variables = (flags: Record<string, FlagValue>): Map<string, string> => {
  const vars = new Map<string, string>()
  for (const [name, value] of Object.entries(flags)) {
    const given = Option.isOption(value) ? value : value.length > 0 ? Option.some(value) : Option.none()
    Option.map(given, (v) => vars.set(name, Array.isArray(v) ? v.join(",") : String(v)))
  }
  return vars
}

/** @effect/cli's built-in `--log-level` sets the minimum log level around the handler; it also overrides P2P_LOG_LEVEL. */
export const logLevelFlag = Effect.gen(function* () {
  const given = process.argv.some((a) => a === "--log-level" || a.startsWith("--log-level="))
  return given ? Option.some((yield* FiberRef.get(FiberRef.currentMinimumLogLevel))._tag) : Option.none<string>()
})

/**
 * Both programs print what matters themselves, so the library's own logs default to Warning there (the library default
 * is Info): `--log-level info` or P2P_LOG_LEVEL=Info shows them.
 */
const programDefaults = new Map([["P2P_LOG_LEVEL", "Warning"]])

/** Flags, then the environment, then the program's defaults. */
export const configProvider = (vars: Map<string, string>) =>
  ConfigProvider.fromMap(vars).pipe(
    ConfigProvider.orElse(() => ConfigProvider.fromEnv()),
    ConfigProvider.orElse(() => ConfigProvider.fromMap(programDefaults))
  )

/** Command-line mistakes are already explained by the CLI; other failures are logged. */
const reportFailure = (cause: Cause.Cause<unknown>) =>
  Cause.isInterruptedOnly(cause) || Option.exists(Cause.failureOption(cause), ValidationError.isValidationError)
    ? Effect.void
    : Effect.logError(cause)

/** Runs `command` on process.argv when the module at `moduleUrl` (its `import.meta.url`) is the entry point. */
export const main = <Name extends string, E, A>(
  moduleUrl: string,
  command: Command.Command<Name, CliApp.CliApp.Environment, E, A>,
  config: { readonly name: string; readonly version: string }
): void => {
  const entry = process.argv[1]
  if (entry === undefined || path.resolve(entry) !== fileURLToPath(moduleUrl)) return
  Command.run(
    command,
    config
  )(process.argv).pipe(
    Effect.tapErrorCause(reportFailure),
    Effect.provide(NodeContext.layer),
    NodeRuntime.runMain({ disableErrorReporting: true })
  )
}
