/**
 * The space quota and auto-compaction on real agents, driven by etcdctl 3.4: writes fail with
 * etcd's "database space exceeded" once the retained history reaches --quota-backend-bytes,
 * `etcdctl alarm list` shows NOSPACE, reads and deletes keep working, and after a compaction
 * the alarm clears by itself and writes succeed again (etcd needs a manual disarm). The
 * cluster holds to its smallest member quota, whichever member a write enters; a quota the
 * member's heap or memory cannot hold is refused at start. With --auto-compaction-mode
 * periodic the leader compacts history older than the retention.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AgentCluster, etcdctl, hasEtcdctl, raftStatus, scrapeMetrics, type AgentProc } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';
import { measuredMemoryLimits } from '../../core/api/manager-node.js';
import { defaultQuotaBytes, maxQuotaBytes } from '../../core/kv/quota.js';
import { NODE_FLAGS } from '../../agent/node-flags.js';

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
    const alarms = ctl(['alarm', 'list']);
    t.same([alarms.status, alarms.stdout.trim()], [0, ''], 'no alarm after the compaction');
    const after = ctl(['put', 'other', 'x']);
    t.equal(after.status, 0, `put works again ${after.stderr}`);
    const m = await scrapeMetrics(http);
    t.equal(m.get('picloud_server_alarm_nospace'), 0);
    t.ok((m.get('picloud_mvcc_db_total_size_in_use_in_bytes') ?? Infinity) < QUOTA_BYTES / 4, `retained ${m.get('picloud_mvcc_db_total_size_in_use_in_bytes')} B after compaction`);
    // With the value arena's current slab (at most 64 KiB at this size) beside what is in use.
    t.ok((m.get('picloud_mvcc_db_total_size_in_bytes') ?? Infinity) < QUOTA_BYTES / 2, `held ${m.get('picloud_mvcc_db_total_size_in_bytes')} B after compaction (the value arena gave its space back)`);
    t.match(ctl(['endpoint', 'status', '-w', 'json']).stdout, /"dbSize":[1-9]/, 'endpoint status reports the size');
  });

  t.test('the member with the smallest quota bounds the cluster: writes through another member are refused at its quota', async (t) => {
    // m2 stands for a board with less memory: every member holds the same history, so its quota
    // must hold for writes that enter anywhere (each member checks the requests it serves).
    const big = 16 * QUOTA_BYTES;
    const cluster = new AgentCluster(['--tick-ms', '50', '--auto-compaction-mode', 'off']);
    t.teardown(() => cluster.stopAll());
    for (const [name, quota] of [['m1', big], ['m2', QUOTA_BYTES], ['m3', big]] as const) (await cluster.add(name)).extraArgs = ['--quota-backend-bytes', String(quota)];
    await cluster.startAdded();
    const [m1, m2, m3] = cluster.agents as [AgentProc, AgentProc, AgentProc];
    const clusterQuotaOn = async (a: AgentProc) => (await scrapeMetrics(a.ports.http)).get('picloud_cluster_quota_bytes');
    // A joiner's quota comes with its join request, into the conf change that adds it.
    t.equal(await clusterQuotaOn(m1), QUOTA_BYTES, 'm1 holds to m2\'s quota once m2 has joined');
    t.equal((await scrapeMetrics(m1.ports.http)).get('picloud_server_quota_backend_bytes'), big, 'm1\'s own quota is unchanged');
    // Restarted, m1 knows it from its persisted member table at once (the record is not replayed).
    cluster.kill(m1, 'SIGTERM');
    t.equal(await cluster.exited(m1), 0);
    cluster.start(m1, true);
    await cluster.ready(m1);
    t.equal(await clusterQuotaOn(m1), QUOTA_BYTES, 'after a restart m1 holds to m2\'s quota');
    const ctl = (args: string[]) => etcdctl(cluster.endpoints([m1]), args);

    let refused: { status: number; stderr: string } | undefined;
    let accepted = 0;
    const otherFailures: string[] = [];
    for (let i = 0; i < 200 && !refused && otherFailures.length < 20; i++) {
      const r = ctl(['put', 'big', `${i}:${VALUE}`]);
      if (r.status === 0) accepted++;
      // m1's restart may have moved leadership: a put can meet that election (and may still be
      // committed); the loop goes on with the next.
      else if (/space exceeded/.test(r.stderr)) refused = r;
      else otherFailures.push(r.stderr);
    }
    t.ok(refused, `a put through m1 was refused after ${accepted} accepted (${otherFailures.length} met an election)`);
    const perQuota = QUOTA_BYTES / VALUE.length;
    t.ok(accepted <= perQuota && accepted + otherFailures.length >= perQuota / 2, `accepted ${accepted} versions of 8 KiB: m2's 256 KiB quota, not m1's 4 MiB`);
    t.match(refused?.stderr ?? '', /etcdserver: mvcc: database space exceeded/);
    const ids = new Map((JSON.parse(ctl(['member', 'list', '-w', 'json']).stdout) as { members: Array<{ ID: number; name: string }> }).members.map((m) => [m.name, m.ID]));
    t.match(ctl(['alarm', 'list']).stdout, new RegExp(`memberID:${ids.get('m2')} alarm:NOSPACE`), 'alarm list names m2, whose quota it is');
    t.match(ctl(['alarm', 'disarm']).stderr, /below 90% of the cluster's quota \(262144 bytes, member m2's, the smallest\)/, 'disarm says whose quota and what to do');

    // A board that could not hold the history is refused at join, at once, saying why.
    const m4 = await cluster.add('m4');
    m4.extraArgs = ['--quota-backend-bytes', String(QUOTA_BYTES / 2)];
    const joinStarted = Date.now();
    cluster.start(m4, false);
    t.equal(await cluster.exited(m4), 1, 'm4 (128 KiB quota) does not start');
    t.ok(Date.now() - joinStarted < 20_000, `it stops at once (${Date.now() - joinStarted} ms)`);
    t.notMatch(m4.log.join(''), /join attempt failed/, 'without asking again');
    t.match(m4.log.join(''), /refused the join: the cluster's history already takes \d+ bytes, and m4's space quota \(what its memory can hold\) is 131072 bytes: compact the history first/);
    t.equal((JSON.parse(ctl(['member', 'list', '-w', 'json']).stdout) as { members: unknown[] }).members.length, 3, 'm4 was not added');

    // Once m2 is removed its quota no longer binds: m1's own holds again.
    t.equal(ctl(['member', 'remove', (ids.get('m2') ?? 0).toString(16)]).status, 0, 'member remove m2');
    await until('the quota goes back to m1\'s own', async () => (await clusterQuotaOn(m1)) === big, 20_000);
    // m2 may have been the leader (m1's restart moved leadership): a put sent to it before its
    // removal would wait out the request timeout, so wait for the new leader first.
    const m2Hex = (ids.get('m2') ?? 0).toString(16);
    await until('m1 follows a leader other than m2', async () => {
      const lead = (await raftStatus(m1))?.lead;
      return lead !== undefined && lead !== '0' && lead !== m2Hex;
    }, 30_000);
    const failures: string[] = [];
    await until('a put through m1 succeeds', () => {
      const r = ctl(['put', 'other', 'x']);
      if (r.status !== 0) failures.push(r.stderr);
      return r.status === 0;
    }, 30_000);
    t.notMatch(failures.join('\n'), /space exceeded/, `puts work again without a compaction (${failures.length} attempts met the election)`);
    const alarms = ctl(['alarm', 'list']);
    t.same([alarms.status, alarms.stdout.trim()], [0, ''], 'no alarm');
    t.equal(await cluster.exited(m2), 0, 'm2, removed, stopped');

    // m3 restarted with a smaller quota (less memory, another flag) records it: the cluster follows.
    cluster.kill(m3, 'SIGTERM');
    t.equal(await cluster.exited(m3), 0);
    m3.extraArgs = ['--quota-backend-bytes', String(8 * QUOTA_BYTES)];
    cluster.start(m3, false);
    await cluster.ready(m3);
    await until('m1 holds to m3\'s new quota', async () => (await clusterQuotaOn(m1)) === 8 * QUOTA_BYTES, 20_000);
  });

  t.test('a quota beyond what the member\'s memory can hold is refused at start; the default fits', async (t) => {
    // A 192 MiB heap stands for a small board: 128 MiB of history (etcd users write 8 GiB) cannot fit.
    const cluster = new AgentCluster(['--tick-ms', '50']);
    t.teardown(() => cluster.stopAll());
    const a = await cluster.add('h1');
    a.env = { NODE_OPTIONS: '--max-old-space-size=192' };
    // What the agent will see: this machine's memory and the heap limit that flag gives with the
    // flags agents run with (V8's young generation comes on top: its size is one of them).
    const heapLimitBytes = Number(
      spawnSync(process.execPath, [...NODE_FLAGS, '-p', 'require("v8").getHeapStatistics().heap_size_limit'], { env: { ...process.env, ...a.env }, encoding: 'utf8' }).stdout,
    );
    const limits = { ...measuredMemoryLimits(), heapLimitBytes };
    t.ok(limits.memoryBytes >= 3 * 128 * 2 ** 20, `this machine has the ${3 * 128} MiB a 128 MiB quota needs (${Math.floor(limits.memoryBytes / 2 ** 20)} MiB), so the heap is what refuses it`);
    a.extraArgs = ['--quota-backend-bytes', String(128 * 2 ** 20)];
    cluster.start(a, true);
    t.equal(await cluster.exited(a), 1, 'the agent refuses to start');
    const max = maxQuotaBytes(limits);
    t.match(
      a.log.join(''),
      `--quota-backend-bytes 134217728 is more than this member can hold: the history lives in memory (a snapshot from the leader is decoded beside it, so it can be there twice); ` +
        `it needs a JavaScript heap limit of at least 384 MiB (three times the quota) and this process has ${Math.floor(heapLimitBytes / 2 ** 20)} MiB. ` +
        `Lower --quota-backend-bytes to at most ${max} (${Math.floor(max / 2 ** 20)} MiB), or start with NODE_OPTIONS=--max-old-space-size=384`,
    );
    t.notOk(existsSync(join(a.dataDir, 'identity.json')), 'nothing was written to the data dir');

    // More than a third of any machine's memory: raising the heap would not help, so it is not offered.
    a.extraArgs = ['--quota-backend-bytes', String(2 ** 50)];
    a.log.length = 0;
    cluster.start(a, true);
    t.equal(await cluster.exited(a), 1, 'a petabyte quota: refused too');
    t.match(a.log.join(''), /it needs at least 3221225472 MiB of memory \(three times the quota\) and this machine \(or its container\) has \d+ MiB\. Lower --quota-backend-bytes to at most \d+ \(\d+ MiB\)\n?/);
    t.notMatch(a.log.join(''), /max-old-space-size/);

    a.extraArgs = [];
    a.log.length = 0;
    cluster.start(a, true);
    await cluster.ready(a);
    const own = (await scrapeMetrics(a.ports.http)).get('picloud_server_quota_backend_bytes');
    t.equal(own, defaultQuotaBytes(limits), `without the flag the default fits the ${Math.floor(heapLimitBytes / 2 ** 20)} MiB heap limit (${own} bytes)`);
    t.ok((own ?? Infinity) <= heapLimitBytes / 3);
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
