/**
 * LocalIdentifierSetPolicy (spec 4.3) enforced: local changes (this node's own code or tasks) and remote ones (a
 * trusted peer's SetLocalIdentifier / AssignIdentifierToPeer task) are told apart, and Strict modes lock after the
 * first accepted assignment. Real nodes on 127.0.0.1.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Option } from "effect"
import { defaultRemoteTaskTypes, LocalIdentifier, RemoteTaskPolicy } from "../src/layers/TaskPolicy.js"
import type { TaskOutcome } from "../src/schema/tasks.js"
import { Tasks } from "../src/schema/tasks.js"
import type { LocalIdentifierSetPolicy } from "../src/schema/trustPolicy.js"
import { bounded, connect, startTaskNode } from "./support/task-nodes.js"
import type { TaskNode } from "./support/task-nodes.js"

const startNode = startTaskNode
type Node = TaskNode

/** A peer `asker` connected to a node `node` running `policy`, whose RemoteTaskPolicy lets peers ask for identifiers. */
const pair = (policy: LocalIdentifierSetPolicy) =>
  Effect.gen(function* () {
    const asker = yield* startNode()
    const node = yield* startNode({
      taskPolicy: RemoteTaskPolicy.layerAllowing([
        ...defaultRemoteTaskTypes,
        "SetLocalIdentifier",
        "AssignIdentifierToPeer"
      ]),
      localIdentifier: LocalIdentifier.layerPolicy(policy)
    })
    yield* connect(asker, node)
    return { asker, node }
  })

type Change = "local" | "remote-set" | "remote-assign"
type Step = readonly [change: Change, identifier: string, accepted: boolean]

const apply = ({ asker, node }: { asker: Node; node: Node }, change: Change, identifier: string) =>
  bounded(
    change === "local"
      ? node.tasks.submit(Tasks.setLocalIdentifier(identifier))
      : change === "remote-set"
        ? asker.tasks.submitTo(node.id, Tasks.setLocalIdentifier(identifier))
        : asker.tasks.submit(Tasks.assignIdentifierToPeer(node.id, identifier))
  )

const assertOutcome = (outcome: TaskOutcome, accepted: boolean, label: string) =>
  accepted
    ? assert.strictEqual(outcome._tag, "Done", `${label}: ${JSON.stringify(outcome)}`)
    : assert.deepStrictEqual(
        outcome._tag === "Rejected" ? outcome.code : outcome._tag,
        "Refused",
        `${label}: ${JSON.stringify(outcome)}`
      )

const table: ReadonlyArray<readonly [LocalIdentifierSetPolicy, ReadonlyArray<Step>, string]> = [
  [
    "StrictLocalOnly",
    [
      ["remote-set", "mallory", false],
      ["local", "alice", true],
      ["local", "alice2", false],
      ["remote-assign", "mallory", false]
    ],
    "alice"
  ],
  [
    "Local",
    [
      ["remote-set", "mallory", false],
      ["remote-assign", "mallory", false],
      ["local", "alice", true],
      ["local", "alice2", true]
    ],
    "alice2"
  ],
  [
    "LocalAndRemote",
    [
      ["local", "alice", true],
      ["remote-set", "bob", true],
      ["remote-assign", "carol", true],
      ["local", "alice2", true]
    ],
    "alice2"
  ],
  [
    "RemoteOnly",
    [
      ["local", "alice", false],
      ["remote-set", "bob", true],
      ["remote-assign", "carol", true],
      ["local", "alice2", false]
    ],
    "carol"
  ],
  [
    "StrictRemoteOnly",
    [
      ["local", "alice", false],
      ["remote-assign", "bob", true],
      ["remote-set", "carol", false],
      ["remote-assign", "dave", false],
      ["local", "alice2", false]
    ],
    "bob"
  ]
]

describe("LocalIdentifierSetPolicy", () => {
  for (const [policy, steps, final] of table) {
    it.scopedLive(`${policy}: ${steps.map(([c, , ok]) => `${c} ${ok ? "accepted" : "refused"}`).join(", ")}`, () =>
      Effect.gen(function* () {
        const nodes = yield* pair(policy)
        for (const [change, identifier, accepted] of steps) {
          assertOutcome(yield* apply(nodes, change, identifier), accepted, `${policy} ${change} ${identifier}`)
        }
        assert.deepStrictEqual(yield* nodes.node.identifier.get, Option.some(final))
      })
    )
  }

  it.effect("a refused change is a typed IdentifierRefused naming the source and the reason", () =>
    Effect.gen(function* () {
      const identifier = yield* LocalIdentifier
      const remote = yield* Effect.exit(identifier.set("mallory", "remote"))
      assert.isTrue(Exit.isFailure(remote))
      yield* identifier.set("alice", "local")
      const locked = yield* Effect.flip(identifier.set("alice2", "local"))
      assert.strictEqual(locked._tag, "IdentifierRefused")
      assert.strictEqual(locked.source, "local")
      assert.include(locked.reason, "locked")
      const refused = yield* Effect.flip(identifier.set("bob", "remote"))
      assert.include(refused.reason, "remote identifiers are not accepted")
      assert.deepStrictEqual(yield* identifier.get, Option.some("alice"))
    }).pipe(Effect.provide(LocalIdentifier.layerPolicy("StrictLocalOnly")))
  )

  it.effect("concurrent changes under a Strict policy: exactly one is accepted", () =>
    Effect.gen(function* () {
      const identifier = yield* LocalIdentifier
      const results = yield* Effect.forEach(
        ["a1", "a2", "a3", "a4"],
        (id) => Effect.either(identifier.set(id, "remote")),
        {
          concurrency: "unbounded"
        }
      )
      assert.strictEqual(results.filter((r) => r._tag === "Right").length, 1)
    }).pipe(Effect.provide(LocalIdentifier.layerPolicy("StrictRemoteOnly")))
  )

  it.effect("the default layer is LocalAndRemote", () =>
    Effect.gen(function* () {
      const identifier = yield* LocalIdentifier
      yield* identifier.set("alice", "local")
      yield* identifier.set("bob", "remote")
      yield* identifier.set("carol", "local")
      assert.deepStrictEqual(yield* identifier.get, Option.some("carol"))
    }).pipe(Effect.provide(LocalIdentifier.layer))
  )
})
