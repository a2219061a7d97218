import t from 'tap';
import { runSeed } from '../../core/sim/index.js';

t.test('the same seed replays exactly; another seed does not', async (t) => {
  for (const seed of [7, 123456]) {
    const a = runSeed(seed, { faults: 'all' });
    const b = runSeed(seed, { faults: 'all' });
    t.equal(a.traceHash, b.traceHash, `seed ${seed}: trace hash`);
    t.same(a.stats, b.stats, `seed ${seed}: stats`);
    t.same(a.history, b.history, `seed ${seed}: client history`);
    t.ok(a.stats.messagesSent > 10_000, 'a real run');
  }
  t.not(runSeed(7).traceHash, runSeed(8).traceHash);
  // A different fault mode on the same seed is a different run.
  t.not(runSeed(7, { faults: 'none' }).traceHash, runSeed(7, { faults: 'all' }).traceHash);
});

t.test('nothing outside the seed leaks in (Math.random, Date.now)', async (t) => {
  const realRandom = Math.random;
  const realNow = Date.now;
  const base = runSeed(99, { ticks: 3000, quietTicks: 1000 }).traceHash;
  try {
    Math.random = () => 0.5;
    Date.now = () => 0;
    t.equal(runSeed(99, { ticks: 3000, quietTicks: 1000 }).traceHash, base);
  } finally {
    Math.random = realRandom;
    Date.now = realNow;
  }
});
