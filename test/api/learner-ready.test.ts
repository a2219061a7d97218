// etcd's rule for promoting a learner (isLearnerReady): at least 90% of the leader's log, and
// never a learner that has not answered at all.
import t from 'tap';
import { LEARNER_READY_FRACTION, learnerReady } from '../../core/api/etcd-backend.js';

t.test('a learner is ready with 90% of the leader\'s log, never without an answer', async (t) => {
  t.equal(LEARNER_READY_FRACTION, 0.9);
  t.notOk(learnerReady(0, 5), 'never answered, on a short log (this was let through before)');
  t.notOk(learnerReady(0, 0), 'never answered, even against an empty log');
  t.ok(learnerReady(5, 5), 'caught up');
  t.ok(learnerReady(900, 1000), 'at 90%');
  t.notOk(learnerReady(899, 1000), 'just under 90%');
  t.ok(learnerReady(1000, 900), 'ahead of what the leader reported (a snapshot moment)');
});
