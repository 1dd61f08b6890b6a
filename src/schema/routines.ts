/**
 * Data of the routine scheduler: a routine's status as `RoutineScheduler.list` reports it, and its errors.
 */
import { Schema } from "effect"

export class RoutineInfo extends Schema.Class<RoutineInfo>("RoutineInfo")({
  name: Schema.String,
  intervalMillis: Schema.Number,
  running: Schema.Boolean,
  runs: Schema.Number,
  /** Epoch milliseconds of the last run's start, if any. */
  lastRunAt: Schema.OptionFromSelf(Schema.Number),
  lastError: Schema.OptionFromSelf(Schema.String)
}) {}

export class RoutineNotFound extends Schema.TaggedError<RoutineNotFound>()("RoutineNotFound", {
  name: Schema.String
}) {
  override get message() {
    return `no routine named ${JSON.stringify(this.name)}`
  }
}

export class RoutineExists extends Schema.TaggedError<RoutineExists>()("RoutineExists", {
  name: Schema.String
}) {
  override get message() {
    return `a routine named ${JSON.stringify(this.name)} already exists`
  }
}
