/** A bad command-line argument to a benchmark: bench/run.ts prints its message alone (no stack) and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}
