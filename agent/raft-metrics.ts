/**
 * The manager's Raft and disk metrics on /metrics, named after etcd's where one exists so
 * existing dashboards and alerts translate: fsync latency of the Raft log (a slow SD card
 * shows here before it causes elections), applied-state commit latency, leadership, indexes,
 * and the Ready loop's counters (how well proposals batch into one fsync).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { ManagerNode } from '../core/api/manager-node.js';
import { Role } from '../core/raft/index.js';

/** etcd's buckets for disk latencies: 1 ms doubling to about 4 s. */
export const DISK_LATENCY_BUCKETS = Array.from({ length: 13 }, (_, i) => 0.001 * 2 ** i);

export function registerRaftMetrics(registry: Registry, node: ManagerNode): void {
  const registers = [registry];
  const walFsync = new Histogram({
    name: 'picloud_disk_wal_fsync_duration_seconds',
    help: 'Latency of Raft log batches written with fsync (one covers every proposal that arrived meanwhile)',
    buckets: DISK_LATENCY_BUCKETS,
    registers,
  });
  const backendCommit = new Histogram({
    name: 'picloud_disk_backend_commit_duration_seconds',
    help: 'Latency of batches of applied changes written to the MVCC state',
    buckets: DISK_LATENCY_BUCKETS,
    registers,
  });
  const unsyncedLogWrites = new Counter({ name: 'picloud_disk_wal_unsynced_writes_total', help: 'Raft log batches written without fsync (compactions, commit-only hard states)', registers });
  node.observeDisk(
    (seconds, sync) => (sync ? walFsync.observe(seconds) : unsyncedLogWrites.inc()),
    (seconds) => backendCommit.observe(seconds),
  );

  const gauge = (name: string, help: string, read: () => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  };
  gauge('picloud_server_has_leader', '1 when this member knows a leader', () => (node.lead !== 0 ? 1 : 0));
  gauge('picloud_server_is_leader', '1 when this member is the leader', () => (node.role === Role.Leader ? 1 : 0));
  gauge('picloud_raft_term', 'Current Raft term', () => node.driver.node.raft.term);
  gauge('picloud_raft_commit_index', 'Highest log index known committed', () => node.driver.node.raft.log.committed);
  gauge('picloud_raft_applied_index', 'Highest log index applied to the KV store', () => node.driver.node.raft.log.applied);
  gauge('picloud_mvcc_revision', 'Current revision of the KV store', () => node.store.revision);
  gauge('picloud_mvcc_compact_revision', 'Revision the KV store is compacted at (-1: never)', () => node.store.compactRevision);
  gauge('picloud_mvcc_db_total_size_in_bytes', 'Estimated memory held by the retained history and the value arena\'s space not yet given back after compactions', () => node.store.allocatedBytes);
  gauge('picloud_mvcc_db_total_size_in_use_in_bytes', 'Estimated memory held by the retained history (what the space quota counts)', () => node.store.retainedBytes);
  gauge('picloud_server_quota_backend_bytes', 'This member\'s own space quota of the retained history (--quota-backend-bytes or its memory\'s default)', () => node.ownQuotaBytes);
  gauge('picloud_cluster_quota_bytes', 'The space quota the cluster holds to: its members\' smallest', () => node.clusterQuota.quotaBytes);
  gauge('picloud_server_alarm_nospace', '1 while the NOSPACE alarm is raised (writes that grow the store are refused)', () => (node.noSpace ? 1 : 0));

  // Monotonic counters kept by the driver and the log store, exported as they are.
  const counters: Array<[string, string, () => number]> = [
    ['picloud_server_leader_changes_seen_total', 'Leader changes seen by this member', () => node.driver.stats.leaderChanges],
    ['picloud_server_proposals_total', 'Proposals accepted by Raft on this member', () => node.driver.stats.proposals],
    ['picloud_raft_ready_total', 'Ready cycles handled (persist, send, apply)', () => node.driver.stats.readies],
    ['picloud_raft_entries_persisted_total', 'Log entries written (divide by picloud_raft_saves_total for entries per fsync)', () => node.driver.stats.entriesPersisted],
    ['picloud_raft_saves_total', 'Durable writes of the Raft log issued by the Ready loop', () => node.driver.stats.saves],
    ['picloud_raft_entries_applied_total', 'Committed entries applied', () => node.driver.stats.entriesApplied],
    ['picloud_raft_messages_sent_total', 'Raft messages handed to the peer transport', () => node.driver.stats.messagesSent],
    ['picloud_raft_term_jumps_refused_total', 'Peer messages dropped for a term far above this member\'s (MAX_TERM_STEP): a peer that holds the token and misbehaves', () => node.driver.node.raft.termJumpsRefused],
    ['picloud_disk_wal_bytes_written_total', 'Key and value bytes written to the Raft log (before LevelDB framing)', () => node.logStoreStats().bytesWritten],
  ];
  for (const [name, help, read] of counters) {
    new Counter({
      name,
      help,
      registers,
      collect() {
        // A collect-time counter: reset to the source's running total.
        this.reset();
        this.inc(read());
      },
    });
  }
}
