/**
 * Whether a learner may become a voter: the checks `etcdctl member promote` and the leader's
 * own promotion of caught-up joiners both run on the leader. Pure: the caller says which voters
 * have started and which it reaches. Not responsible for asking Raft (the caller proposes).
 */
import { quorumSize } from '../raft/index.js';

/** etcd's rule (its isLearnerReady): a learner may become a voter once its log holds at least 90% of the leader's. */
export const LEARNER_READY_FRACTION = 0.9;

/**
 * One that never answered (match 0) is not ready, however short the log: as a voter it would
 * count toward a quorum it cannot help make.
 */
export function learnerReady(learnerMatch: number, leaderLastIndex: number): boolean {
  return learnerMatch > 0 && learnerMatch >= LEARNER_READY_FRACTION * leaderLastIndex;
}

export interface VoterSeen {
  /** It has run (it recorded its name); etcd's IsStarted. */
  started: boolean;
  /** The leader has a peer connection to it now (the leader itself: true). */
  reached: boolean;
}

export type PromotionRefusal = 'LEARNER_NOT_READY' | 'MEMBER_NOT_ENOUGH_STARTED' | 'UNHEALTHY';

/**
 * etcd 3.4's mayPromoteMember, plus one check etcd lacks. In etcd's order:
 * - LEARNER_NOT_READY: its log is behind (learnerReady);
 * - MEMBER_NOT_ENOUGH_STARTED (etcd's IsReadyToPromoteMember): the started voters with the
 *   learner (counted as started) are no quorum of the voters with it;
 * - UNHEALTHY, beyond etcd: the voters the leader reaches, with the learner if reached, would be
 *   no quorum of the voters with it. etcd 3.4 promotes a learner that caught up and then died
 *   while a voter is down (3 voters, 1 down, learner dead: 2 live of 4) and the cluster then
 *   commits nothing until one of them comes back (seen on etcd 3.4.23: the next put times out).
 */
export function promotionRefusal(voters: VoterSeen[], learner: { match: number; reached: boolean }, leaderLastIndex: number): PromotionRefusal | undefined {
  if (!learnerReady(learner.match, leaderLastIndex)) return 'LEARNER_NOT_READY';
  const quorum = quorumSize(voters.length + 1);
  if (voters.filter((v) => v.started).length + 1 < quorum) return 'MEMBER_NOT_ENOUGH_STARTED';
  if (voters.filter((v) => v.reached).length + (learner.reached ? 1 : 0) < quorum) return 'UNHEALTHY';
  return undefined;
}
