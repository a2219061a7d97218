import t from 'tap';
import fc from 'fast-check';
import { ProgressTracker } from '../../core/raft/progress.js';

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
