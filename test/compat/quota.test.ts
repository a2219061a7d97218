/**
 * The space quota and auto-compaction on real agents, driven by etcdctl 3.4: writes fail with
 * etcd's "database space exceeded" once the retained history reaches --quota-backend-bytes,
 * `etcdctl alarm list` shows NOSPACE, reads and deletes keep working, and after a compaction
 * the alarm clears by itself and writes succeed again (etcd needs a manual disarm). With
 * --auto-compaction-mode periodic the leader compacts history older than the retention.
 */
import t from 'tap';
import { AgentCluster, etcdctl, hasEtcdctl, scrapeMetrics } from '../helpers/agents.js';

const QUOTA_BYTES = 256 * 1024;
const VALUE = 'v'.repeat(8 * 1024);

if (!hasEtcdctl()) {
  t.test('space quota', { skip: 'etcdctl not installed (apt-get install etcd-client)' }, async () => undefined);
} else {
  t.test('quota: NOSPACE refuses puts, keeps reads and deletes, clears itself after compaction', async (t) => {
    const cluster = new AgentCluster(['--tick-ms', '50', '--quota-backend-bytes', String(QUOTA_BYTES), '--auto-compaction-mode', 'off']);
    t.teardown(() => cluster.stopAll());
    await cluster.startCluster(['q1']);
    const ctl = (args: string[]) => etcdctl(cluster.endpoints(), args);

    t.equal(ctl(['put', 'small', 's']).status, 0);
    // Overwrite one key: every version is retained history until a compaction.
    let refused: { status: number; stderr: string } | undefined;
    let accepted = 0;
    for (let i = 0; i < 200 && !refused; i++) {
      const r = ctl(['put', 'big', `${i}:${VALUE}`]);
      if (r.status === 0) accepted++;
      else refused = r;
    }
    t.ok(refused, `a put was refused after ${accepted} accepted`);
    t.ok(accepted >= QUOTA_BYTES / VALUE.length / 2 && accepted <= QUOTA_BYTES / VALUE.length, `accepted ${accepted} versions of 8 KiB under a 256 KiB quota`);
    t.match(refused?.stderr ?? '', /etcdserver: mvcc: database space exceeded/, 'etcd\'s error text');
    t.match(ctl(['alarm', 'list']).stdout, /alarm:NOSPACE/, 'alarm list shows NOSPACE');
    const http = cluster.agents[0]!.ports.http;
    t.equal((await scrapeMetrics(http)).get('picloud_server_alarm_nospace'), 1, '/metrics shows the alarm');

    // Reads and deletes still work; puts and lease grants do not.
    t.match(ctl(['get', 'big']).stdout, new RegExp(`^big\\n${accepted - 1}:`), 'reads work');
    t.match(ctl(['put', 'other', 'x']).stderr, /database space exceeded/, 'every put is refused');
    t.equal(ctl(['del', 'small']).stdout.trim(), '1', 'deletes work');
    t.match(ctl(['lease', 'grant', '30']).stderr, /database space exceeded/, 'lease grants too, as etcd');
    const disarm = ctl(['alarm', 'disarm']);
    t.not(disarm.status, 0, 'disarm while over the quota is refused...');
    t.match(disarm.stderr, /clears by itself.*compact/, '...with what to do instead');

    // Compact at the current revision: history goes, the alarm clears, writes work again.
    const rev = (JSON.parse(ctl(['get', 'big', '-w', 'json']).stdout) as { header: { revision: number } }).header.revision;
    t.equal(ctl(['compact', String(rev)]).status, 0, `compact ${rev}`);
    t.equal(ctl(['alarm', 'list']).stdout.trim(), '', 'no alarm after the compaction');
    const after = ctl(['put', 'other', 'x']);
    t.equal(after.status, 0, `put works again ${after.stderr}`);
    const m = await scrapeMetrics(http);
    t.equal(m.get('picloud_server_alarm_nospace'), 0);
    t.ok((m.get('picloud_mvcc_db_total_size_in_use_in_bytes') ?? Infinity) < QUOTA_BYTES / 4, `retained ${m.get('picloud_mvcc_db_total_size_in_use_in_bytes')} B after compaction`);
    t.match(ctl(['endpoint', 'status', '-w', 'json']).stdout, /"dbSize":[1-9]/, 'endpoint status reports the size');
  });

  t.test('auto-compaction: periodic retention on a three-member cluster', async (t) => {
    const cluster = new AgentCluster(['--tick-ms', '50', '--auto-compaction-mode', 'periodic', '--auto-compaction-retention', '1s']);
    t.teardown(() => cluster.stopAll());
    await cluster.startCluster(['a1', 'a2', 'a3']);
    const ctl = (args: string[]) => etcdctl(cluster.endpoints(), args);
    const first = (JSON.parse(ctl(['put', 'k', 'v0', '-w', 'json']).stdout) as { header: { revision: number } }).header.revision;
    t.equal(ctl(['get', 'k', `--rev=${first}`]).status, 0, 'history readable at first');
    let compacted = false;
    const deadline = Date.now() + 15_000;
    for (let i = 1; !compacted && Date.now() < deadline; i++) {
      t.equal(ctl(['put', 'k', `v${i}`]).status, 0);
      await new Promise((r) => setTimeout(r, 300));
      compacted = /required revision has been compacted/.test(ctl(['get', 'k', `--rev=${first}`]).stderr);
    }
    t.ok(compacted, 'a read at the first revision fails as compacted once it is older than the retention');
    t.equal(ctl(['get', 'k']).status, 0, 'the latest value is kept');
    // Every member applied the compaction (it went through Raft).
    for (const a of cluster.agents) {
      const c = (await scrapeMetrics(a.ports.http)).get('picloud_mvcc_compact_revision') ?? -1;
      t.ok(c >= first, `${a.name} compacted at ${c}`);
    }
  });
}
