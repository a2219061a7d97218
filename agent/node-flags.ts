/**
 * The Node flags every picloud-node process is launched with: `npm start`'s script, the `picloud-node`
 * bin's shebang (agent/cli.ts) and, for the single binary, the SEA config's `execArgv` (Node 24).
 * They cannot be set from inside: V8 sizes its heap before the first line of ours runs.
 * test/foundation/node-flags.test.ts keeps the launchers and this list in step, and the test
 * harness and the benchmarks start agents with them, so what is tested and measured is what runs.
 *
 * - `--max-semi-space-size=4` (MiB; Node 20's default grows to 16): a member keeps every revision
 *   it applies, so each young-generation collection copies the records made since the last one
 *   while the Raft pipeline waits. Smaller semi-spaces make those pauses shorter (and the young
 *   generation's new space at most 8 MiB instead of 32 on a Pi). Measured with `node dist/bench/kv/put-only.js picloud 16 10`
 *   (bench/RESULTS.md, 2026-12-06 twenty-second session): put p99 at 16 in flight, median of the
 *   rounds, 32.8 ms against 40.8 with the default (2 and 8 MiB: 39.0 and 39.3).
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];

/** The flags of NODE_FLAGS that `execArgv` does not set (by name: another value given on purpose counts as set). */
export function missingNodeFlags(execArgv: readonly string[]): string[] {
  const name = (f: string): string => f.split('=')[0]!;
  return NODE_FLAGS.filter((f) => !execArgv.some((a) => name(a) === name(f)));
}
