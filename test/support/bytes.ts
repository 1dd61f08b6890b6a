/**
 * Cutting a byte stream into chunks, to feed parsers the same bytes however a socket might deliver them.
 */

/** Cuts `bytes` at the offsets `at`, taken as given (ascending, within 0..length): empty chunks included. */
export const splitAt = (bytes: Uint8Array, at: ReadonlyArray<number>): Array<Uint8Array> => {
  const chunks: Array<Uint8Array> = []
  let from = 0
  for (const to of at) {
    chunks.push(bytes.subarray(from, to))
    from = to
  }
  chunks.push(bytes.subarray(from))
  return chunks
}
