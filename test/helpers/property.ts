/**
 * Runs a fast-check property as a tap assertion: it fails with the shrunk counterexample
 * (and the seed to replay it) instead of throwing out of the test.
 */
import fc from 'fast-check';
import type { Test } from 'tap';

export function assertProperty<Ts>(t: Test, message: string, property: fc.IProperty<Ts>, params?: fc.Parameters<Ts>): void {
  const r = fc.check(property, params);
  const why = r.failed
    ? ` — counterexample ${fc.stringify(r.counterexample)} (seed ${r.seed}, path ${r.counterexamplePath})${r.errorInstance ? `: ${String(r.errorInstance)}` : ''}`
    : '';
  t.ok(!r.failed, `${message} (${r.numRuns} runs)${why}`);
}
