/**
 * DataStore: named blobs the data tasks (RequestData, SendData, SynchronizeData) read and write. The default keeps
 * them in memory, within limits on the number of entries and their total size, since peers can write to it; an
 * application swaps in its own store with a Layer (`networkLayer({ dataStore })`).
 */
import { Context, Effect, Layer, Option, Ref } from "effect"
import { createHash } from "node:crypto"
import { DataStoreFull } from "../schema/errors.js"
import type { Digest } from "../schema/tasks.js"

export interface DataStoreLimits {
  /** Entries held at most (default 1024). */
  readonly maxEntries?: number
  /** Total bytes held at most (default 64 MiB). */
  readonly maxBytes?: number
}

export class DataStore extends Context.Tag("effect-p2pnet/DataStore")<
  DataStore,
  {
    readonly get: (name: string) => Effect.Effect<Option.Option<Uint8Array>>
    /** Stores (or replaces) an entry; fails when it would go over the store's limits. */
    readonly put: (name: string, data: Uint8Array) => Effect.Effect<void, DataStoreFull>
    /** Removes an entry; tells whether there was one. */
    readonly remove: (name: string) => Effect.Effect<boolean>
    /** The names held, sorted. */
    readonly list: Effect.Effect<ReadonlyArray<string>>
    /** The SHA-256 (hex) of every entry, by name. */
    readonly digest: Effect.Effect<Digest>
  }
>() {
  /** In memory, with the default limits. */
  static readonly layer = Layer.effect(
    this,
    Effect.suspend(() => makeMemory({}))
  )
  /** In memory, with the given limits. */
  static readonly layerMemory = (limits: DataStoreLimits) => Layer.effect(this, makeMemory(limits))
}

/** SHA-256 of bytes, lowercase hex. */
export const sha256Hex = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex")

interface Entry {
  readonly data: Uint8Array
  readonly sha256: string
}

export const makeMemory = (limits: DataStoreLimits) =>
  Effect.gen(function* () {
    const maxEntries = limits.maxEntries ?? 1024
    const maxBytes = limits.maxBytes ?? 64 * 1024 * 1024
    const entries = yield* Ref.make(new Map<string, Entry>())
    const total = (m: ReadonlyMap<string, Entry>) => {
      let n = 0
      for (const e of m.values()) n += e.data.length
      return n
    }
    return DataStore.of({
      get: (name) => Effect.map(Ref.get(entries), (m) => Option.fromNullable(m.get(name)?.data)),
      put: (name, data) =>
        Effect.flatMap(
          Effect.sync(() => ({ data: data.slice(), sha256: sha256Hex(data) })),
          (entry) =>
            Effect.flatten(
              Ref.modify(entries, (m): readonly [Effect.Effect<void, DataStoreFull>, Map<string, Entry>] => {
                const previous = m.get(name)
                if (previous === undefined && m.size >= maxEntries) {
                  return [Effect.fail(new DataStoreFull({ name, detail: `it holds ${maxEntries} entries` })), m]
                }
                const bytes = total(m) - (previous?.data.length ?? 0) + entry.data.length
                if (bytes > maxBytes) {
                  return [
                    Effect.fail(new DataStoreFull({ name, detail: `it would hold more than ${maxBytes} bytes` })),
                    m
                  ]
                }
                return [Effect.void, new Map(m).set(name, entry)]
              })
            )
        ),
      remove: (name) =>
        Ref.modify(entries, (m) => {
          if (!m.has(name)) return [false, m]
          const next = new Map(m)
          next.delete(name)
          return [true, next]
        }),
      list: Effect.map(Ref.get(entries), (m) => [...m.keys()].sort()),
      digest: Effect.map(
        Ref.get(entries),
        (m) => Object.fromEntries([...m].map(([name, e]) => [name, e.sha256])) as Digest
      )
    })
  })
