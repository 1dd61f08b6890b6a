/**
 * Heap measurements for "memory stays bounded" tests. A full garbage collection before each reading makes the
 * difference between two readings what is still retained, not what merely has not been collected yet.
 */
import * as v8 from "node:v8"
import * as vm from "node:vm"

v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

/** V8 heap plus ArrayBuffer (Buffer) bytes still reachable, after a full collection. */
export const retainedBytes = (): number => {
  gc()
  const { arrayBuffers, heapUsed } = process.memoryUsage()
  return heapUsed + arrayBuffers
}
