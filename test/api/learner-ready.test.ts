// etcd's rules for promoting a learner (isLearnerReady: at least 90% of the leader's log, and
// never a learner that has not answered at all; IsReadyToPromoteMember), and the one picloud
// adds: the members the leader reaches stay a quorum.
import t from 'tap';
import { LEARNER_READY_FRACTION, learnerReady, promotionRefusal } from '../../core/api/promotion-check.js';

t.test('a learner is ready with 90% of the leader\'s log, never without an answer', async (t) => {
  t.equal(LEARNER_READY_FRACTION, 0.9);
  t.notOk(learnerReady(0, 5), 'never answered, on a short log (this was let through before)');
  t.notOk(learnerReady(0, 0), 'never answered, even against an empty log');
  t.ok(learnerReady(5, 5), 'caught up');
  t.ok(learnerReady(900, 1000), 'at 90%');
  t.notOk(learnerReady(899, 1000), 'just under 90%');
  t.ok(learnerReady(1000, 900), 'ahead of what the leader reported (a snapshot moment)');
});

const up = { started: true, reached: true };
const down = { started: true, reached: false };
const unstarted = { started: false, reached: false };

t.test('promotion: refused for a learner behind, first, as etcd checks it first', async (t) => {
  t.equal(promotionRefusal([up, up, up], { match: 899, reached: true }, 1000), 'LEARNER_NOT_READY');
  t.equal(promotionRefusal([unstarted, unstarted, up], { match: 0, reached: false }, 10), 'LEARNER_NOT_READY');
  t.equal(promotionRefusal([up, up, up], { match: 900, reached: true }, 1000), undefined, 'caught up, every voter up');
});

t.test('promotion: etcd\'s started-members rule (the learner counts as started)', async (t) => {
  // One started voter and three added that never ran: with the learner 2 started of 5.
  t.equal(promotionRefusal([up, unstarted, unstarted, unstarted], { match: 5, reached: true }, 5), 'MEMBER_NOT_ENOUGH_STARTED');
  // One started, one added (etcd's way to grow a one-member cluster): 2 started of 3.
  t.equal(promotionRefusal([up, unstarted], { match: 5, reached: true }, 5), undefined);
});

t.test('promotion: the members the leader reaches must stay a quorum of the voters with the learner', async (t) => {
  // etcd 3.4 lets this through and then commits nothing: 2 live of 4.
  t.equal(promotionRefusal([up, up, down], { match: 5, reached: false }, 5), 'UNHEALTHY', 'a voter down and the learner gone');
  t.equal(promotionRefusal([up, up, down], { match: 5, reached: true }, 5), undefined, 'a voter down, the learner up: 3 live of 4');
  t.equal(promotionRefusal([up, up, up], { match: 5, reached: false }, 5), undefined, 'every voter up, the learner gone: 3 live of 4');
  t.equal(promotionRefusal([up, down], { match: 5, reached: true }, 5), undefined, '2 live of 3');
  t.equal(promotionRefusal([up], { match: 5, reached: false }, 5), 'UNHEALTHY', 'one voter and a learner it does not reach: 1 of 2');
});
