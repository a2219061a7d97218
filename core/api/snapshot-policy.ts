/**
 * When a manager takes a Raft snapshot and how much log it keeps behind it. The numbers are
 * etcd's (--snapshot-count 100,000; 5,000 catch-up entries): a snapshot writes the whole
 * applied state, so taking one every few thousand entries costs a busy node a large share of
 * its CPU once the state is big, while the log kept in between is what a briefly lagging
 * follower catches up from without a snapshot. Kept apart from the node so the agent's flag
 * parser can name the default without loading the node.
 */

/** Applied entries between snapshots (etcd's --snapshot-count default). */
export const DEFAULT_SNAPSHOT_EVERY_ENTRIES = 100_000;
/** Entries kept behind a snapshot so slightly lagging followers catch up from the log (etcd's snapshotCatchUpEntries). */
export const LOG_ENTRIES_KEPT_AFTER_SNAPSHOT = 5_000;
