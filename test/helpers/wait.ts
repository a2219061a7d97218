/**
 * Polling for the multi-process tests: a condition on agents that become true by themselves
 * (a member applies, a log line appears) is checked every 100 ms up to a bound.
 */

/** Resolves with `f`'s first value other than undefined or false; throws naming `what` after `timeoutMs`. */
export async function until<T>(what: string, f: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
