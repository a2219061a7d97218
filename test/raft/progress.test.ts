import t from 'tap';
import fc from 'fast-check';
import { Inflights, Progress, ProgressTracker, RESTART_WINDOW } from '../../core/raft/progress.js';

t.test('committedIndex is the largest index a majority of voters has', async (t) => {
  const property = fc.property(
    fc.array(fc.nat({ max: 1_000 }), { minLength: 1, maxLength: 9 }),
    fc.array(fc.nat({ max: 1_000 }), { maxLength: 3 }),
    (voterMatches, learnerMatches) => {
      const trk = new ProgressTracker(256);
      const voters = voterMatches.map((_, i) => i + 1);
      const learners = learnerMatches.map((_, i) => 100 + i);
      trk.applyConf({ voters, learners }, 1);
      voterMatches.forEach((m, i) => (trk.progress.get(voters[i]!)!.match = m));
      learnerMatches.forEach((m, i) => (trk.progress.get(learners[i]!)!.match = m));
      const sorted = [...voterMatches].sort((a, b) => b - a);
      const expected = sorted[Math.floor(voters.length / 2)]!;
      // Learners never count, however far ahead.
      return trk.committedIndex() === expected;
    },
  );
  t.doesNotThrow(() => fc.assert(property, { numRuns: 500 }));
  const trk = new ProgressTracker(256);
  trk.applyConf({ voters: [1, 2, 3], learners: [] }, 1);
  [7, 3, 5].forEach((m, i) => (trk.progress.get(i + 1)!.match = m));
  t.equal(trk.committedIndex(), 5);
  trk.applyConf({ voters: [], learners: [] }, 1);
  t.equal(trk.committedIndex(), 0, 'no voters, no quorum');
});

t.test('the in-flight window restarts small when replication restarts and doubles per acknowledgement', async (t) => {
  const w = new Inflights(256);
  for (let i = 1; i <= 256; i++) w.add(i);
  t.ok(w.full(), 'a fresh window is the whole capacity');
  const pr = new Progress(1, 256, false);
  pr.becomeReplicate();
  for (let i = 1; i <= RESTART_WINDOW; i++) pr.inflights.add(i);
  t.ok(pr.inflights.full(), `after (re)starting replication: ${RESTART_WINDOW} in flight`);
  pr.inflights.freeLE(1);
  pr.inflights.growWindow();
  let room = 0;
  while (!pr.inflights.full()) pr.inflights.add(100 + room++);
  t.equal(room, RESTART_WINDOW * 2 - (RESTART_WINDOW - 1), 'an acknowledgement doubles it');
  for (let i = 0; i < 10; i++) pr.inflights.growWindow();
  pr.inflights.freeLE(1_000);
  room = 0;
  while (!pr.inflights.full()) pr.inflights.add(2_000 + room++);
  t.equal(room, 256, 'up to the capacity, no further');
  const small = new Progress(1, 2, false);
  small.becomeReplicate();
  small.inflights.add(1);
  small.inflights.add(2);
  t.ok(small.inflights.full(), 'a capacity below the restart window caps it');
});
