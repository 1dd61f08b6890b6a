/**
 * The guard of test-bed programs, kept free of imports so a bed script can run it before loading anything that could
 * open a socket: a program started by TestBed.spawn runs only inside the test-bed namespace it was given.
 */
import * as fs from "node:fs"

/** Set by TestBed.spawn for the processes it starts: the host namespace, the spawner's namespace, the host's address. */
export const TESTBED_NS_ENV = "P2P_TESTBED_NS"
export const TESTBED_ROOT_NETNS_ENV = "P2P_TESTBED_ROOT_NETNS"
export const TESTBED_ADDRESS_ENV = "P2P_TESTBED_ADDRESS"

/** p2ph<i>-<run>, <run> being <creator pid, base 36>-<random> (see testbed.ts). */
export const HOST_NAMESPACE = /^p2ph\d+-[0-9a-z]+-[0-9a-z]+$/

export type GuardVerdict =
  | { readonly _tag: "InTestBed"; readonly namespace: string; readonly address: string | undefined }
  | { readonly _tag: "Refused"; readonly reason: string }

/** The inode of a network namespace file (`/proc/self/ns/net`, `/run/netns/<name>`), if it can be read. */
export const netnsInode = (file: string): string | undefined => {
  try {
    return fs.statSync(file, { bigint: true }).ino.toString()
  } catch {
    return undefined
  }
}

/**
 * InTestBed only when P2P_TESTBED_NS names a test-bed host namespace and this process's network namespace is that one
 * (same nsfs inode as /run/netns/<name>) and neither the spawner's (P2P_TESTBED_ROOT_NETNS) nor PID 1's.
 */
export const checkTestBedHost = (env: NodeJS.ProcessEnv = process.env): GuardVerdict => {
  const refused = (reason: string): GuardVerdict => ({ _tag: "Refused", reason })
  const namespace = env[TESTBED_NS_ENV]
  if (namespace === undefined || namespace === "") {
    return refused(`${TESTBED_NS_ENV} is not set: bed scripts run only through TestBed.spawn (ip netns exec)`)
  }
  if (!HOST_NAMESPACE.test(namespace)) return refused(`${namespace} is not a test-bed host namespace`)
  const self = netnsInode("/proc/self/ns/net")
  if (self === undefined) return refused("cannot read /proc/self/ns/net")
  if (self === env[TESTBED_ROOT_NETNS_ENV] || self === netnsInode("/proc/1/ns/net")) {
    return refused(`running in the root network namespace (net:[${self}]), not in ${namespace}`)
  }
  const expected = netnsInode(`/run/netns/${namespace}`)
  if (expected === undefined) return refused(`there is no network namespace ${namespace}`)
  if (expected !== self) {
    return refused(`running in net:[${self}], not in the test-bed namespace ${namespace} (net:[${expected}])`)
  }
  return { _tag: "InTestBed", namespace, address: env[TESTBED_ADDRESS_ENV] }
}
