/**
 * Compatibility with clients nobody here wrote: etcdctl 3.4 (Debian's etcd-client) and the
 * npm `etcd3` client, against three real picloud-node agents on loopback.
 */
import t, { Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { AgentCluster, etcdctl, freePort, hasEtcdctl, hashKvOfEachAgent, scrapeMetrics } from '../helpers/agents.js';

if (!hasEtcdctl()) {
  t.test('etcdctl compatibility', { skip: 'etcdctl not installed (apt-get install etcd-client)' }, async () => undefined);
} else {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());

  t.before(async () => {
    await cluster.startCluster(['c1', 'c2', 'c3']);
  });

  const ctl = (args: string[], input?: string) => etcdctl(cluster.endpoints(), args, input);
  const ok = (t: Test, args: string[], input?: string): string => {
    const r = ctl(args, input);
    t.equal(r.status, 0, `etcdctl ${args.join(' ')} ${r.stderr.trim()}`);
    return r.stdout;
  };

  t.test('put / get: prefix, --rev, --keys-only, --limit, -w json; del', async (t) => {
    ok(t, ['put', 'app/a', '1']);
    ok(t, ['put', 'app/b', '2']);
    ok(t, ['put', 'app/c', '3']);
    ok(t, ['put', 'other', 'x']);
    t.equal(ok(t, ['get', 'app/', '--prefix']), 'app/a\n1\napp/b\n2\napp/c\n3\n');
    t.equal(ok(t, ['get', 'app/', '--prefix', '--keys-only']).replace(/\n+/g, ' ').trim(), 'app/a app/b app/c');
    t.equal(ok(t, ['get', 'app/', '--prefix', '--limit', '2']), 'app/a\n1\napp/b\n2\n');
    const json = JSON.parse(ok(t, ['get', 'app/a', '-w', 'json'])) as { kvs: Array<{ key: string; value: string; mod_revision: number; version: number }>; count: number };
    t.equal(Buffer.from(json.kvs[0]!.key, 'base64').toString(), 'app/a');
    t.equal(Buffer.from(json.kvs[0]!.value, 'base64').toString(), '1');
    const rev = json.kvs[0]!.mod_revision;
    ok(t, ['put', 'app/a', 'changed']);
    t.equal(ok(t, ['get', 'app/a', `--rev=${rev}`]), 'app/a\n1\n', 'historical read at --rev');
    t.equal(ok(t, ['get', 'app/a', '--consistency=s']), 'app/a\nchanged\n', 'serializable read');
    t.equal(ok(t, ['del', 'app/', '--prefix']).trim(), '3');
    t.equal(ok(t, ['get', 'app/', '--prefix']), '');
  });

  t.test('txn: compare and swap, success and failure branches', async (t) => {
    ok(t, ['put', 'cas', 'v1']);
    const win = ok(t, ['txn'], 'value("cas") = "v1"\n\nput cas v2\n\nput cas-failed yes\n\n');
    t.match(win, /^SUCCESS/);
    const lose = ok(t, ['txn'], 'value("cas") = "v1"\n\nput cas v3\n\nget cas\n\n');
    t.match(lose, /^FAILURE[\s\S]*cas\nv2/);
    t.equal(ok(t, ['get', 'cas']), 'cas\nv2\n');
    t.equal(ok(t, ['get', 'cas-failed']), '', 'failure branch of the first txn did not run');
  });

  t.test('watch: prefix and --rev history', async (t) => {
    const rev = (JSON.parse(ok(t, ['put', 'w/x', '0', '-w', 'json'])) as { header: { revision: number } }).header.revision;
    const out = await new Promise<string>((resolve) => {
      const p = spawn('etcdctl', ['--endpoints', cluster.endpoints(), 'watch', 'w/', '--prefix', `--rev=${rev}`], { env: { ...process.env, ETCDCTL_API: '3' } });
      let buf = '';
      p.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        if ((buf.match(/PUT|DELETE/g) ?? []).length >= 3) p.kill();
      });
      const guard = setTimeout(() => p.kill(), 10_000);
      p.on('close', () => {
        clearTimeout(guard);
        resolve(buf);
      });
      setTimeout(() => {
        ctl(['put', 'w/y', '1']);
        ctl(['del', 'w/x']);
      }, 500);
    });
    t.equal(out, 'PUT\nw/x\n0\nPUT\nw/y\n1\nDELETE\nw/x\n\n', 'history from --rev, then live events');
  });

  t.test('lease: grant, put --lease, timetolive, keep-alive, revoke', async (t) => {
    const grant = ok(t, ['lease', 'grant', '60']);
    const id = /lease ([0-9a-f]+) granted/.exec(grant)?.[1];
    t.ok(id, `granted ${grant.trim()}`);
    ok(t, ['put', '--lease', id!, 'leased', 'v']);
    t.match(ok(t, ['lease', 'timetolive', id!, '--keys']), /granted with TTL\(60s\), remaining\(\d+s\), attached keys\(\[leased\]\)/);
    // On every member: followers forward keep-alives to the leader.
    for (const a of cluster.agents) {
      const ka = etcdctl(cluster.endpoints([a]), ['lease', 'keep-alive', '--once', id!]);
      t.equal(ka.status, 0, ka.stderr);
      t.match(ka.stdout, new RegExp(`lease ${id} keepalived with TTL\\(60\\)`), `keep-alive via ${a.name}`);
    }
    t.match(ok(t, ['lease', 'list']), new RegExp(id!));
    t.match(ok(t, ['lease', 'revoke', id!]), /revoked/);
    t.equal(ok(t, ['get', 'leased']), '', 'keys attached to a revoked lease are gone');
    const bad = ctl(['lease', 'revoke', '1234abcd']);
    t.not(bad.status, 0);
    t.match(bad.stderr, /requested lease not found/);
    // An ID at or above 2^53 (no picloud lease has one) is echoed as asked, as etcd does.
    t.match(ok(t, ['lease', 'timetolive', '20000000000001']), /^lease 0020000000000001 already expired/, 'as etcd prints it');
  });

  t.test('a lease that is not kept alive expires and its keys vanish on every member', async (t) => {
    const id = /lease ([0-9a-f]+) granted/.exec(ok(t, ['lease', 'grant', '2']))?.[1]!;
    ok(t, ['put', '--lease', id, 'ephemeral', 'v']);
    t.equal(ok(t, ['get', 'ephemeral']), 'ephemeral\nv\n');
    await new Promise((r) => setTimeout(r, 4500));
    for (const a of cluster.agents) {
      t.equal(etcdctl(cluster.endpoints([a]), ['get', 'ephemeral', '--consistency=s']).stdout, '', `gone on ${a.name}`);
    }
  });

  t.test('member list / add (learner) / remove; endpoint status', async (t) => {
    const list = JSON.parse(ok(t, ['member', 'list', '-w', 'json'])) as { members: Array<{ name: string; isLearner?: boolean }> };
    t.same(list.members.map((m) => m.name).sort(), ['c1', 'c2', 'c3']);
    const port = await freePort();
    const add = ok(t, ['member', 'add', 'spare', `--peer-urls=http://127.0.0.1:${port}`, '--learner']);
    const id = /Member\s+([0-9a-f]+)\s+added/.exec(add)?.[1];
    t.ok(id, add.trim());
    t.match(ok(t, ['member', 'list']), new RegExp(`${id}, unstarted, , http://127.0.0.1:${port}, , true`));
    t.match(ok(t, ['member', 'remove', id!]), /removed/);
    t.notMatch(ok(t, ['member', 'list']), new RegExp(id!));
    const status = ok(t, ['endpoint', 'status']);
    t.equal(status.trim().split('\n').length, 3);
    t.equal((status.match(/, true, false,/g) ?? []).length, 1, 'exactly one leader');
  });

  t.test('member add / update with a peer URL nobody can dial: refused, and every member keeps running', async (t) => {
    const before = ok(t, ['member', 'list']);
    const someone = /^([0-9a-f]+),/.exec(before)?.[1];
    for (const url of ['http://127.0.0.1:99999', 'http://127.0.0.1:0']) {
      const add = ctl(['member', 'add', 'typo', `--peer-urls=${url}`]);
      t.not(add.status, 0, `member add ${url} refused`);
      t.match(add.stderr, /given member URLs are invalid/, "etcd's error");
      const update = ctl(['member', 'update', someone!, `--peer-urls=${url}`]);
      t.not(update.status, 0, `member update ${url} refused`);
    }
    // etcdctl refuses an unclosed bracket itself; through the JSON gateway it reaches the server.
    const gateway = await fetch(`http://${cluster.endpoints().split(',')[0]}/v3/cluster/member/add`, { method: 'POST', body: JSON.stringify({ peerURLs: ['http://[::1'] }) });
    t.equal(gateway.status, 400, 'the gateway: member add http://[::1 refused');
    t.match(await gateway.text(), /given member URLs are invalid/);
    t.equal(ok(t, ['member', 'list']), before, 'the member table is unchanged');
    t.ok(cluster.agents.every((a) => a.proc !== undefined && a.proc.exitCode === null && a.proc.signalCode === null), 'all three agents still running');
    t.match(ok(t, ['put', 'after-bad-urls', 'v']), /OK/);
  });

  t.test('member promote of a learner that never started: refused by every member, as etcd refuses it', async (t) => {
    const port = await freePort();
    const add = ok(t, ['member', 'add', 'never-started', `--peer-urls=http://127.0.0.1:${port}`, '--learner']);
    const id = /Member\s+([0-9a-f]+)\s+added/.exec(add)?.[1];
    t.ok(id, add.trim());
    // Each member on its own: a follower does not know the learner's progress and asks the leader.
    for (const a of cluster.agents) {
      const r = etcdctl(cluster.endpoints([a]), ['member', 'promote', id!]);
      t.not(r.status, 0, `promote through ${a.name} refused`);
      t.match(r.stderr, /can only promote a learner member which is in sync with leader/, `through ${a.name}: etcd's error`);
    }
    t.match(ok(t, ['member', 'list']), new RegExp(`${id}, unstarted, , http://127.0.0.1:${port}, , true`), 'still a learner');
    t.match(ok(t, ['put', 'after-promote', 'v']), /OK/, 'the cluster keeps its quorum');
    t.match(ok(t, ['member', 'remove', id!]), /removed/);
  });

  t.test('endpoint status / hashkv with http:// endpoints and --cluster (grpc-go sends the URL as :authority)', async (t) => {
    const urls = cluster.endpoints().split(',').map((e) => `http://${e}`).join(',');
    const viaUrls = (args: string[]) => etcdctl(urls, args);
    const status = viaUrls(['endpoint', 'status', '-w', 'json']);
    t.equal(status.status, 0, status.stderr.trim());
    const entries = JSON.parse(status.stdout) as Array<{ Endpoint: string; Status: { leader: string; header: { member_id: string } } }>;
    t.same(entries.map((e) => e.Endpoint).sort(), urls.split(',').sort());
    t.equal(entries.filter((e) => e.Status.leader === e.Status.header.member_id).length, 1, 'exactly one leader');
    // --cluster dials the member list's client URLs, which carry the scheme as etcd's do.
    const clusterStatus = etcdctl(cluster.endpoints(cluster.agents.slice(0, 1)), ['endpoint', 'status', '--cluster']);
    t.equal(clusterStatus.status, 0, clusterStatus.stderr.trim());
    t.equal(clusterStatus.stdout.trim().split('\n').filter((l) => l.startsWith('http://')).length, 3, clusterStatus.stdout);
    const hashkv = etcdctl(cluster.endpoints(cluster.agents.slice(0, 1)), ['endpoint', 'hashkv', '--cluster', '-w', 'json']);
    t.equal(hashkv.status, 0, hashkv.stderr.trim());
    const hashes = (JSON.parse(hashkv.stdout) as Array<{ HashKV: { hash: number } }>).map((h) => h.HashKV.hash);
    t.equal(hashes.length, 3);
    // Writes through the rewritten connections' siblings still work: the main client uses the URLs too.
    t.equal(viaUrls(['put', 'url/k', 'v']).status, 0);
    t.equal(viaUrls(['get', 'url/k', '--print-value-only']).stdout.trim(), 'v');
  });

  const hasCurl = spawnSync('sh', ['-c', 'command -v curl'], { stdio: 'ignore' }).status === 0;
  t.test('the JSON gateway with curl (etcd serves it on the client port too)', { skip: hasCurl ? false : 'curl not installed (apt-get install curl)' }, async (t) => {
    const curl = (endpoint: string, path: string, body?: object): { status: number; json: Record<string, any> } => {
      const args = ['-s', '-m', '10', '-w', '\n%{http_code}', ...(body ? ['-X', 'POST', '-d', JSON.stringify(body)] : []), `http://${endpoint}${path}`];
      const r = spawnSync('curl', args, { encoding: 'utf8' });
      const lines = r.stdout.trimEnd().split('\n');
      return { status: Number(lines.pop()), json: JSON.parse(lines.join('\n') || '{}') as Record<string, any> };
    };
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    const [a, b] = cluster.agents.map((x) => cluster.endpoints([x]));
    // Written through one member, read through another and by etcdctl.
    const put = curl(a!, '/v3/kv/put', { key: b64('curl/k'), value: b64('from curl') });
    t.equal(put.status, 200, JSON.stringify(put.json));
    t.equal(ok(t, ['get', 'curl/k', '--print-value-only']).trim(), 'from curl');
    const range = curl(b!, '/v3/kv/range', { key: b64('curl/k') });
    t.equal(Buffer.from(range.json.kvs[0].value, 'base64').toString(), 'from curl');
    const rev = Number(range.json.kvs[0].mod_revision);
    for (const e of cluster.agents.map((x) => cluster.endpoints([x]))) {
      t.same(curl(e, '/health').json, { health: 'true' }, `/health on ${e}`);
    }
    t.same(curl(a!, '/version').json, { etcdserver: '3.4.0', etcdcluster: '3.4.0' });
    const metrics = spawnSync('curl', ['-s', '-m', '10', `http://${a!}/metrics`], { encoding: 'utf8' }).stdout;
    t.match(metrics, /^picloud_disk_wal_fsync_duration_seconds_count\S* \d+/m, 'Prometheus metrics on the client port, as etcd serves them');
    ok(t, ['put', 'curl/k', 'newer']);
    ok(t, ['compaction', String(rev + 1)]);
    const compacted = curl(b!, '/v3/kv/range', { key: b64('curl/k'), revision: String(rev) });
    t.same([compacted.status, compacted.json.code, compacted.json.error], [400, 11, 'etcdserver: mvcc: required revision has been compacted']);
    // A lease granted by etcdctl runs down on every member (a follower asks the leader, as
    // etcd's does) and is kept alive with curl through a follower.
    const endpoints = cluster.agents.map((x) => cluster.endpoints([x]));
    const isLeader = (e: string): boolean => {
      const st = curl(e, '/v3/maintenance/status', {}).json as { leader: string; header: { member_id: string } };
      return st.leader === st.header.member_id;
    };
    const follower = endpoints.find((e) => !isLeader(e))!;
    const lease = String((JSON.parse(ok(t, ['lease', 'grant', '30', '-w', 'json'])) as { ID: number }).ID);
    await new Promise((r) => setTimeout(r, 2_200));
    const ttl = (e: string): number => Number(curl(e, '/v3/lease/timetolive', { ID: lease }).json.TTL);
    for (const e of endpoints) {
      const left = ttl(e);
      t.ok(left <= 28 && left >= 25, `${e}${e === follower ? ' (a follower)' : ''}: the lease ran down for two seconds (${left} s left)`);
    }
    const kept = spawnSync('curl', ['-s', '-m', '10', '-X', 'POST', '-d', JSON.stringify({ ID: lease }), `http://${follower}/v3/lease/keepalive`], { encoding: 'utf8' });
    t.match(JSON.parse(kept.stdout.trim()), { result: { ID: lease, TTL: '30' } }, 'one result line, the full TTL');
    t.ok(ttl(follower) >= 29, 'and the lease is back to its full TTL');
    t.equal(curl(follower, '/v3/lease/timetolive', { ID: '12345' }).json.TTL, '-1', 'an unknown lease: TTL -1, as etcd answers');
  });

  t.test('endpoint hashkv: every member hashes its key space alike, at the current and a past revision', async (t) => {
    ok(t, ['put', 'hash/a', '1']);
    const rev = (JSON.parse(ok(t, ['put', 'hash/b', '2', '-w', 'json'])) as { header: { revision: number } }).header.revision;
    ok(t, ['put', 'hash/a', '3']);
    const hashes = async (args: string[]): Promise<number[]> => (await hashKvOfEachAgent(cluster, args)).hashes;
    const now = await hashes([]);
    t.equal(new Set(now).size, 1, `one hash on three members (${now.join(', ')})`);
    const past = await hashes([`--rev=${rev}`]);
    t.equal(new Set(past).size, 1, 'one hash at a past revision');
    t.not(past[0], now[0], 'which differs from the current one');
  });

  t.test('move-leader: leadership goes to the member named; a follower refuses, as etcd does', async (t) => {
    type Status = Array<{ Endpoint: string; Status: { header: { member_id: string | number }; leader: string | number } }>;
    const statuses = (): Status => JSON.parse(ok(t, ['endpoint', 'status', '-w', 'json'])) as Status;
    const hex = (v: string | number): string => BigInt(v).toString(16);
    const before = statuses();
    const leader = hex(before[0]!.Status.leader);
    const follower = before.find((s) => hex(s.Status.header.member_id) !== leader)!;
    const target = hex(follower.Status.header.member_id);
    t.match(ok(t, ['move-leader', target]), new RegExp(`Leadership transferred from ${leader} to ${target}`));
    t.ok(statuses().every((s) => hex(s.Status.leader) === target), 'every member sees the new leader');
    // MoveLeader sent to a member that is not the leader (etcdctl itself always picks the leader).
    const other = before.find((s) => hex(s.Status.header.member_id) !== leader && hex(s.Status.header.member_id) !== target)!;
    const client = new Etcd3({ hosts: `http://${other.Endpoint}` });
    t.teardown(() => client.close());
    await t.rejects(client.maintenance.moveLeader({ targetID: leader }), /not leader/, 'a follower answers etcd\'s not-leader error');
    t.equal(ok(t, ['put', 'after-move', 'v']).trim(), 'OK', 'the cluster commits under the new leader');
  });

  t.test('etcdctl lock and elect (clientv3 concurrency: leases, txn on create revision, watch)', async (t) => {
    t.equal(ok(t, ['lock', 'ctl-lock', '--', 'echo', 'held']).trim(), 'held', 'lock taken, command run, lock released');
    const campaign = spawn('etcdctl', ['--endpoints', cluster.endpoints(), 'elect', 'ctl-election', 'first'], { env: { ...process.env, ETCDCTL_API: '3' } });
    t.teardown(() => void campaign.kill('SIGKILL'));
    let out = '';
    campaign.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 10_000;
    while (!out.includes('first') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    t.match(out, /^ctl-election\/[0-9a-f]+\nfirst\n/, 'the only candidate is elected');
    const leader = etcdctl(cluster.endpoints(), ['get', 'ctl-election/', '--prefix', '--print-value-only']);
    t.equal(leader.stdout, 'first\n', 'its proclamation is the key under the election prefix');
    campaign.kill('SIGINT');
    await new Promise((r) => campaign.once('exit', r));
    t.equal(ok(t, ['lock', 'ctl-lock', '--', 'echo', 'again']).trim(), 'again', 'the lock is free again');
  });

  t.test('compaction: old revisions fail with etcd\'s error; snapshot save', async (t) => {
    const r1 = (JSON.parse(ok(t, ['put', 'cmp', 'a', '-w', 'json'])) as { header: { revision: number } }).header.revision;
    const r2 = (JSON.parse(ok(t, ['put', 'cmp', 'b', '-w', 'json'])) as { header: { revision: number } }).header.revision;
    t.match(ok(t, ['compaction', String(r2)]), new RegExp(`compacted revision ${r2}`));
    const old = ctl(['get', 'cmp', `--rev=${r1}`]);
    t.not(old.status, 0);
    t.match(old.stderr, /required revision has been compacted/);
    const future = ctl(['get', 'cmp', '--rev=99999999']);
    t.match(future.stderr, /required revision is a future revision/);
    const watchOld = ctl(['watch', 'cmp', `--rev=${r1}`]);
    t.match(watchOld.stdout + watchOld.stderr, /required revision has been compacted/, 'a watch from a compacted revision is cancelled with etcd\'s reason');
    // The server answers TTL 0 (as etcd does); clientv3's KeepAliveOnce reports that as not found.
    t.match(ctl(['lease', 'keep-alive', '--once', '7777']).stderr, /requested lease not found/, 'keep-alive of an unknown lease');
    t.match(ctl(['put', '--lease=7777', 'x', 'y']).stderr, /requested lease not found/, 'put with an unknown lease');
    t.equal(ok(t, ['get', 'cmp']), 'cmp\nb\n', 'still serving after the bad requests');
    const dir = mkdtempSync(join(tmpdir(), 'picloud-snap-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'snap.db');
    t.match(ok(t, ['defrag']), /Finished defragmenting etcd member/g, 'defrag after the compaction (LevelDB compacted on each member)');
    const snap = etcdctl(cluster.endpoints(cluster.agents.slice(0, 1)), ['snapshot', 'save', file]);
    t.equal(snap.status, 0, snap.stderr);
    t.ok(existsSync(file), 'snapshot file written');
  });

  t.test('oversized requests get etcd\'s error and the node keeps serving', async (t) => {
    // Value on stdin: a 2 MiB argv would exceed the OS limit before etcdctl runs.
    const r = ctl(['put', 'big'], 'x'.repeat(2 * 1024 * 1024));
    t.not(r.status, 0);
    t.match(r.stderr, /request is too large|larger than max/);
    t.equal(ok(t, ['put', 'small', 'ok']).trim(), 'OK', 'still serving');
  });

  t.test('the npm etcd3 client: put/get/prefix/delete/watch/lease/txn', async (t) => {
    const client = new Etcd3({ hosts: cluster.agents.map((a) => `http://127.0.0.1:${a.ports.client}`) });
    t.teardown(() => client.close());
    await client.put('js/a').value('1');
    await client.put('js/b').value('2');
    t.equal(await client.get('js/a').string(), '1');
    t.same(await client.getAll().prefix('js/').strings(), { 'js/a': '1', 'js/b': '2' });
    const watcher = await client.watch().prefix('js/').create();
    const seen = new Promise<string>((resolve) => watcher.on('put', (kv) => resolve(`${kv.key.toString()}=${kv.value.toString()}`)));
    await client.put('js/c').value('3');
    t.equal(await seen, 'js/c=3', 'watch event');
    await watcher.cancel();
    const res = await client.if('js/a', 'Value', '==', '1').then(client.put('js/a').value('10')).else(client.put('js/a').value('fail')).commit();
    t.equal(res.succeeded, true);
    t.equal(await client.get('js/a').string(), '10');
    const lease = client.lease(30, { autoKeepAlive: false });
    await lease.put('js/leased').value('v');
    t.equal(await client.get('js/leased').string(), 'v');
    const ka = await lease.keepaliveOnce();
    t.equal(Number(ka.TTL), 30, 'keep-alive renews the full TTL');
    await lease.revoke();
    t.equal(await client.get('js/leased').string(), null);
    t.equal(Number((await client.delete().prefix('js/')).deleted), 3);
  });

  t.test('/metrics: fsync latency, leadership and Ready-loop counters move with writes', async (t) => {
    const scrape = (): Promise<Map<string, number>> => scrapeMetrics(cluster.agents[0]!.ports.http);
    const before = await scrape();
    for (let i = 0; i < 5; i++) ok(t, ['put', `metrics/${i}`, 'v']);
    const after = await scrape();
    t.equal(after.get('picloud_server_has_leader'), 1, 'has a leader');
    t.ok(after.get('picloud_disk_wal_fsync_duration_seconds_count')! >= before.get('picloud_disk_wal_fsync_duration_seconds_count')! + 5, 'each acknowledged put was fsynced on this member');
    t.ok(after.get('picloud_disk_wal_fsync_duration_seconds_sum')! > 0, 'fsync time is recorded');
    t.ok(after.get('picloud_raft_entries_applied_total')! >= before.get('picloud_raft_entries_applied_total')! + 5, 'entries applied');
    t.ok(after.get('picloud_raft_applied_index')! >= after.get('picloud_mvcc_revision')!, 'applied index counts every entry, revisions only writes');
    t.ok(after.get('picloud_raft_entries_persisted_total')! >= before.get('picloud_raft_entries_persisted_total')! + 5, 'entries persisted');
  });

  // promtool exits 1 when the text does not parse and 3 when it only has lint problems; those
  // of prom-client's default nodejs_* metrics are upstream's, ours must have none.
  const hasPromtool = spawnSync('sh', ['-c', 'command -v promtool'], { stdio: 'ignore' }).status === 0;
  t.test('/metrics parses with promtool and picloud_* metrics pass its lint', { skip: hasPromtool ? false : 'promtool not installed (apt-get install prometheus)' }, async (t) => {
    const text = await (await fetch(`http://127.0.0.1:${cluster.agents[0]!.ports.http}/metrics`)).text();
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    t.not(r.status, 1, `promtool parses the exposition: ${r.stderr}`);
    const ours = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.startsWith('picloud_'));
    t.same(ours, [], 'no lint problems in picloud_* metrics');
    t.match(text, /^picloud_disk_wal_fsync_duration_seconds_bucket\{le="0\.001"\} \d+$/m, 'the fsync histogram is exposed');
  });
}
