/**
 * Power cuts on real agents: a Raspberry Pi cluster loses power as a whole (one power strip)
 * or one board at a time (a pulled plug), and what was written but not fsynced is gone. Each
 * agent's data dir is its own ext4 filesystem on a loop device (test/helpers/loop-disk.ts);
 * a cut stops the agents (SIGSTOP), copies their disks as they stand (the page cache's unsynced
 * writes are not in the copy), kills them, and boots them on the copies (ext4 replays its
 * journal). Rounds under the put/get/CAS workload: the whole cluster cut at once, then single
 * members (the leader, a follower) cut.
 *
 * Asserted: every member starts again from its cut disk (no corruption reported), the cluster
 * elects and serves, the history (with every acknowledged write) is linearizable and every
 * member ends with the same key space. Teeth: with the Raft log written without fsync, the
 * cluster does not come back from the first whole-cluster cut (a member never gets ready).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Prng } from '../../core/sim/prng.js';
import { AgentCluster, AgentProc, hasEtcdctl, hashKvOfEachAgent, raftStatus } from '../helpers/agents.js';
import { FaultWorkload } from '../helpers/fault-workload.js';
import { LoopDisk } from '../helpers/loop-disk.js';

const TICK_MS = 50;
const ELECTION_TICKS = 10;
const DISK_MB = 96;
const SNAPSHOT_COUNT = 50;
const SNAPSHOT_CATCHUP_ENTRIES = 10;
/** Whole-cluster cuts, then single-member cuts (alternately the leader and a follower). */
const WHOLE_CLUSTER_CUTS = 3;
const SINGLE_CUTS = 2;
const RESTART_READY_MS = 30_000;
/** Acknowledged puts the cluster must serve after a cut before the next one, within RESUME_MS. */
const WRITES_BETWEEN_CUTS = 30;
const RESUME_MS = 20_000;

const unavailable = !hasEtcdctl() ? 'etcdctl not installed' : LoopDisk.unavailable();

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('power cuts of the whole cluster and of single members lose nothing acknowledged', { skip: unavailable ?? false }, async (t) => {
  // Snapshots and log compaction every few dozen entries, so cuts also land in the middle of
  // those (applied-state fsyncs, snapshot files renamed into place, log truncation).
  const cluster = new AgentCluster(['--tick-ms', String(TICK_MS), '--election-ticks', String(ELECTION_TICKS), '--snapshot-count', String(SNAPSHOT_COUNT), '--snapshot-catchup-entries', String(SNAPSHOT_CATCHUP_ENTRIES)]);
  const disks = new Map<AgentProc, LoopDisk>();
  t.teardown(async () => {
    await cluster.stopAll().catch(() => undefined);
    for (const d of disks.values()) d.destroy();
    // stopAll could not remove the mount points while the disks were mounted.
    rmSync(cluster.root, { recursive: true, force: true });
  });
  for (const name of ['p1', 'p2', 'p3']) {
    const a = await cluster.add(name);
    const disk = LoopDisk.create(join('/dev/shm', `picloud-${process.pid}-${name}.img`), join(cluster.root, `${name}-disk`), DISK_MB);
    disks.set(a, disk);
    a.dataDir = join(disk.mountpoint, 'data');
  }
  await cluster.startAdded();
  const rng = new Prng(Number(process.env.FAULT_SEED ?? 3));
  const workload = new FaultWorkload(cluster.agents.map((a) => `${a.host}:${a.ports.client}`), rng.fork());
  t.teardown(() => workload.close());

  /** Cuts the power of `victims` at one moment and boots them again on what their disks held. */
  const cut = async (victims: AgentProc[]): Promise<void> => {
    for (const a of victims) cluster.kill(a, 'SIGSTOP');
    for (const a of victims) disks.get(a)!.cutPower();
    for (const a of victims) cluster.kill(a, 'SIGKILL');
    for (const a of victims) await cluster.exited(a);
    for (const a of victims) disks.get(a)!.boot();
    for (const a of victims) {
      a.log.length = 0;
      cluster.start(a, false);
    }
    for (const a of victims) await cluster.ready(a, RESTART_READY_MS);
  };

  for (let round = 0; round < WHOLE_CLUSTER_CUTS + SINGLE_CUTS; round++) {
    await sleep(800 + rng.int(1_700));
    let victims = cluster.agents;
    if (round >= WHOLE_CLUSTER_CUTS) {
      const statuses = await Promise.all(cluster.agents.map(raftStatus));
      const leader = cluster.agents.find((_, i) => statuses[i]?.role === 'leader') ?? cluster.agents[0]!;
      victims = [round % 2 === 0 ? leader : cluster.agents.find((a) => a !== leader)!];
    }
    const before = workload.writes;
    await cut(victims);
    const corrupt = victims.filter((a) => /corrupt|ERR_CORRUPT/i.test(a.log.join('')));
    t.same(corrupt.map((a) => a.name), [], `round ${round}: ${victims.map((a) => a.name).join(', ')} cut after ${before} acknowledged puts, and started again from their disks`);
    // The cluster serves again (clients reconnect with backoff) before the next cut.
    const resumed = performance.now();
    while (workload.writes < before + WRITES_BETWEEN_CUTS && performance.now() - resumed < RESUME_MS) await sleep(50);
    t.ok(workload.writes >= before + WRITES_BETWEEN_CUTS, `round ${round}: ${workload.writes - before} puts acknowledged ${Math.round(performance.now() - resumed)} ms after the members were ready (bound ${RESUME_MS} ms)`);
  }
  await sleep(1_500);
  await workload.stop();
  workload.check(t, 100);
  const end = await hashKvOfEachAgent(cluster, [], 20_000);
  t.equal(new Set(end.hashes).size, 1, `every member has the same key space at revision ${end.revisions.join(', ')}`);
});
