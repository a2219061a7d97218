/**
 * How often a manager compacts its Raft log and how much log it keeps behind. As in etcd, a
 * compaction only fsyncs the applied state and drops old entries; an image of the whole
 * state (a snapshot file) is made only when a follower is behind the log's start, because its
 * cost grows with the state (written every 10,000 entries it took a busy member ~15% of its
 * CPU once the state was large). Kept apart from the node so the agent's flag parser can name
 * the defaults without loading the node.
 */

/**
 * Applied entries between log compactions (etcd's --snapshot-count is 100,000; compaction is
 * cheap here, and the entries in between are held in memory, which a Pi has little of).
 */
export const DEFAULT_SNAPSHOT_EVERY_ENTRIES = 10_000;
/** Entries kept behind a compaction so slightly lagging followers catch up from the log (etcd's 5,000). */
export const LOG_ENTRIES_KEPT_AFTER_SNAPSHOT = 5_000;
