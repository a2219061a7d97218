/**
 * The etcd v3 front end against the real etcdctl 3.4 (apt: etcd-client), with the in-memory
 * fake backend: proves the protos, int64 handling, error strings and stream protocols are
 * wire-compatible with etcd's own client.
 */
import t, { type Test } from 'tap';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdGrpcServer } from '../../core/net/etcd/server.js';
import { readSnapshotFile } from '../../core/net/etcd/snapshot-file.js';
import { FakeEtcdBackend } from './fake-etcd-backend.js';

function etcdctlPath(): string | undefined {
  try {
    return execFileSync('which', ['etcdctl'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

const ETCDCTL = etcdctlPath();
const COMMAND_TIMEOUT_MS = 10_000;

if (ETCDCTL === undefined) {
  t.test('etcdctl compatibility', { skip: 'etcdctl not installed (apt-get install etcd-client)' }, async () => undefined);
} else {
  const etcdctl = ETCDCTL;
  const backend = new FakeEtcdBackend();
  const server = await EtcdGrpcServer.start({ backend, port: 0, onInternalError: (e, m) => t.fail(`internal error in ${m}: ${String(e)}`) });
  t.teardown(() => server.close());
  const endpoint = `127.0.0.1:${server.port}`;
  const env = { ...process.env, ETCDCTL_API: '3' };
  // Watch children are killed by pid whatever happens to the test.
  const children = new Set<ChildProcess>();
  t.teardown(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  });
  t.setTimeout(90_000);

  const ctl = (args: string[], input?: string): Promise<{ out: string; err: string; code: number }> =>
    new Promise((resolve) => {
      const child = execFile(etcdctl, ['--endpoints', endpoint, '--command-timeout=5s', ...args], { env, timeout: COMMAND_TIMEOUT_MS }, (error, stdout, stderr) => {
        resolve({ out: stdout, err: stderr, code: error ? (typeof error.code === 'number' ? error.code : 1) : 0 });
      });
      if (input !== undefined) child.stdin!.end(input);
    });

  const ok = async (test: Test, args: string[], expected: string | RegExp, input?: string): Promise<string> => {
    const r = await ctl(args, input);
    test.equal(r.code, 0, `etcdctl ${args.join(' ')} exits 0 ${r.err.slice(-300)}`);
    if (typeof expected === 'string') test.equal(r.out, expected, `etcdctl ${args.join(' ')}`);
    else test.match(r.out, expected, `etcdctl ${args.join(' ')}`);
    return r.out;
  };

  const fails = async (test: Test, args: string[], message: string): Promise<void> => {
    const r = await ctl(args);
    test.not(r.code, 0, `etcdctl ${args.join(' ')} fails`);
    test.match(r.err, message, `etcdctl ${args.join(' ')}: ${message}`);
  };

  /** Starts `etcdctl watch ...`, waits until its watcher is registered, returns a reader. */
  const watch = async (args: string[]): Promise<{ child: ChildProcess; lines: () => string[]; waitLines: (n: number) => Promise<string[]>; stop: () => void }> => {
    const before = backend.watcherCount;
    const child = spawn(etcdctl, ['--endpoints', endpoint, 'watch', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + COMMAND_TIMEOUT_MS;
    while (backend.watcherCount === before && !args.some((a) => a.startsWith('--rev'))) {
      if (Date.now() > deadline) throw new Error('etcdctl watch never registered');
      await new Promise((r) => setTimeout(r, 10));
    }
    const lines = (): string[] => out.split('\n').filter((l) => l !== '');
    return {
      child,
      lines,
      waitLines: async (n) => {
        while (lines().length < n) {
          if (Date.now() > deadline) throw new Error(`watch output so far: ${JSON.stringify(out)}`);
          await new Promise((r) => setTimeout(r, 10));
        }
        return lines();
      },
      stop: () => child.kill('SIGKILL'),
    };
  };

  t.test('put / get / del with --prefix, --rev, --keys-only, --limit, -w json, --consistency=s', async (t) => {
    await ok(t, ['put', 'foo', 'bar'], 'OK\n');
    await ok(t, ['put', 'foo2', 'baz'], 'OK\n');
    await ok(t, ['put', 'foo', 'bar2'], 'OK\n');
    await ok(t, ['get', 'foo'], 'foo\nbar2\n');
    await ok(t, ['get', 'foo', '--rev=2'], 'foo\nbar\n');
    await ok(t, ['get', '--prefix', 'foo'], 'foo\nbar2\nfoo2\nbaz\n');
    await ok(t, ['get', '--prefix', 'foo', '--keys-only'], 'foo\n\nfoo2\n\n');
    await ok(t, ['get', '--prefix', 'foo', '--limit=1'], 'foo\nbar2\n');
    await ok(t, ['get', '--prefix', 'f', '--sort-by=MODIFY', '--order=DESCEND'], 'foo\nbar2\nfoo2\nbaz\n');
    await ok(t, ['get', '--from-key', 'foo2'], 'foo2\nbaz\n');
    await ok(t, ['get', 'foo', '--consistency=s'], 'foo\nbar2\n');
    t.ok(backend.calls.includes('range:s') && backend.calls.includes('range:l'), 'serializable flag carried');
    const json = JSON.parse(await ok(t, ['get', '--prefix', 'foo', '-w', 'json', '--limit=1'], /^\{/)) as {
      header: { revision: number; cluster_id: number; member_id: number };
      kvs: { key: string; value: string; create_revision: number; mod_revision: number; version: number }[];
      more: boolean;
      count: number;
    };
    t.equal(json.header.revision, 4);
    t.equal(json.header.cluster_id, backend.clusterId, 'uint64 cluster id round-trips');
    t.equal(json.header.member_id, backend.memberId);
    t.same(json.kvs[0], { key: Buffer.from('foo').toString('base64'), create_revision: 2, mod_revision: 4, version: 2, value: Buffer.from('bar2').toString('base64') });
    t.equal(json.more, true);
    t.equal(json.count, 2);
    await ok(t, ['del', 'foo2'], '1\n');
    await ok(t, ['del', 'nothing'], '0\n');
    await ok(t, ['del', '--prev-kv', 'foo'], '1\nfoo\nbar2\n');
    await ok(t, ['get', 'foo'], '');
    await fails(t, ['get', 'foo', '--rev=99'], 'etcdserver: mvcc: required revision is a future revision');
  });

  t.test('txn from stdin: compares, success and failure branches', async (t) => {
    await ok(t, ['put', 'tk', 'v1'], 'OK\n');
    await ok(t, ['txn'], 'SUCCESS\n\nOK\n\ntk\nv2\n', 'value("tk") = "v1"\n\nput tk "v2"\nget tk\n\nput tk "lost"\n\n');
    await ok(t, ['txn'], 'FAILURE\n\nOK\n', 'value("tk") = "v1"\n\nput tk "v3"\n\nput other "x"\n\n');
    await ok(t, ['txn'], /^SUCCESS/, 'version("tk") = "2"\nmod("tk") > "0"\ncreate("nokey") = "0"\n\ndel tk\n\n\n');
    await ok(t, ['get', 'tk'], '');
    await ok(t, ['get', 'other'], 'other\nx\n');
  });

  t.test('watch: key, prefix, --prev-kv, --rev from history, and a compacted --rev', async (t) => {
    const w1 = await watch(['--prefix', 'w']);
    const w2 = await watch(['--prev-kv', 'w1']);
    await ok(t, ['put', 'w1', 'one'], 'OK\n');
    await ok(t, ['put', 'w2', 'two'], 'OK\n');
    await ok(t, ['put', 'w1', 'uno'], 'OK\n');
    await ok(t, ['del', 'w1'], '1\n');
    t.same(await w1.waitLines(11), ['PUT', 'w1', 'one', 'PUT', 'w2', 'two', 'PUT', 'w1', 'uno', 'DELETE', 'w1']);
    // prev-kv: each event is followed by the previous key-value when there was one.
    t.same(await w2.waitLines(12), ['PUT', 'w1', 'one', 'PUT', 'w1', 'one', 'w1', 'uno', 'DELETE', 'w1', 'uno', 'w1']);
    w1.stop();
    w2.stop();
    t.ok(backend.calls.some((c) => /^watch:\d+:leader$/.test(c)), 'etcdctl\'s "hasleader" metadata reaches the backend');
    const rev = backend.rev;
    const hist = await watch(['--rev=2', 'foo']);
    t.same(await hist.waitLines(8), ['PUT', 'foo', 'bar', 'PUT', 'foo', 'bar2', 'DELETE', 'foo'], 'history replayed from --rev');
    hist.stop();
    await ok(t, ['compaction', String(rev)], `compacted revision ${rev}\n`);
    const compacted = await watch(['--rev=2', 'foo']);
    const lines = await compacted.waitLines(1);
    t.match(lines.join('\n'), /watch was canceled \(etcdserver: mvcc: required revision has been compacted\)/);
    compacted.stop();
    await fails(t, ['get', 'foo', '--rev=2'], 'etcdserver: mvcc: required revision has been compacted');
    await fails(t, ['compaction', String(rev)], 'etcdserver: mvcc: required revision has been compacted');
  });

  t.test('lease grant / put --lease / timetolive / keep-alive / list / revoke (int64 ids in hex)', async (t) => {
    const granted = await ok(t, ['lease', 'grant', '60'], /^lease [0-9a-f]{16} granted with TTL\(60s\)\n$/);
    const id = granted.split(' ')[1]!;
    t.equal(BigInt(`0x${id}`), BigInt(2 ** 52 + 0xabc), 'a lease id above 2^32 survives the trip through etcdctl');
    await ok(t, ['put', '--lease', id, 'leased', 'v'], 'OK\n');
    await ok(t, ['lease', 'timetolive', id, '--keys'], `lease ${id} granted with TTL(60s), remaining(60s), attached keys([leased])\n`);
    await ok(t, ['lease', 'keep-alive', '--once', id], `lease ${id} keepalived with TTL(60)\n`);
    await ok(t, ['lease', 'list'], `found 1 leases\n${id}\n`);
    await ok(t, ['lease', 'revoke', id], `lease ${id} revoked\n`);
    await ok(t, ['get', 'leased'], '');
    await ok(t, ['lease', 'timetolive', id], `lease ${id} already expired\n`);
    await fails(t, ['lease', 'revoke', id], 'etcdserver: requested lease not found');
    await fails(t, ['lease', 'keep-alive', '--once', id], 'etcdserver: requested lease not found');
    await fails(t, ['put', '--lease', id, 'k', 'v'], 'etcdserver: requested lease not found');
    await fails(t, ['put', '--lease', '7fffffffffffffff', 'k', 'v'], 'etcdserver: requested lease not found');
  });

  t.test('member list / add --learner / promote / update / remove', async (t) => {
    await ok(t, ['member', 'list'], `${backend.memberId.toString(16)}, started, fake1, http://127.0.0.1:2380, http://127.0.0.1:2379, false\n`);
    const added = await ok(t, ['member', 'add', 'pi02', '--learner', '--peer-urls=http://127.0.0.1:12380'], /Member\s+1a2b3c4d5e6f added to cluster\s+a1b2c3d4e5f60/);
    t.match(added, /ETCD_INITIAL_CLUSTER="fake1=http:\/\/127.0.0.1:2380,pi02=http:\/\/127.0.0.1:12380"/);
    await ok(t, ['member', 'list'], /1a2b3c4d5e6f, unstarted, , http:\/\/127.0.0.1:12380, , true\n/);
    await ok(t, ['member', 'promote', '1a2b3c4d5e6f'], /promoted in cluster/);
    await ok(t, ['member', 'update', '1a2b3c4d5e6f', '--peer-urls=http://127.0.0.1:12381'], /updated in cluster/);
    const json = JSON.parse(await ok(t, ['member', 'list', '-w', 'json'], /^\{/)) as { members: { ID: number; peerURLs: string[]; isLearner?: boolean }[] };
    t.same(json.members[1], { ID: 0x1a2b3c4d5e6f, peerURLs: ['http://127.0.0.1:12381'] }, 'promoted: isLearner false (omitted)');
    await ok(t, ['member', 'remove', '1a2b3c4d5e6f'], /removed from cluster/);
    await fails(t, ['member', 'remove', '1a2b3c4d5e6f'], 'etcdserver: member not found');
    await fails(t, ['member', 'promote', backend.memberId.toString(16)], 'etcdserver: can only promote a learner member');
    await fails(t, ['member', 'add', 'bad', '--peer-urls=http://127.0.0.1:2380'], 'etcdserver: Peer URLs already exists');
  });

  t.test('endpoint status / health / hashkv, alarm list, defrag', async (t) => {
    await ok(t, ['endpoint', 'status'], new RegExp(`^${endpoint}, ${backend.memberId.toString(16)}, 3.4.0, 25 kB, true, false, 3, \\d+, \\d+, \\n$`));
    const st = JSON.parse(await ok(t, ['endpoint', 'status', '-w', 'json'], /^\[/)) as { Status: { dbSize: number; leader: number; raftTerm: number } }[];
    t.equal(st[0]!.Status.dbSize, 24_576);
    t.equal(st[0]!.Status.leader, backend.memberId);
    const health = await ctl(['endpoint', 'health']);
    t.equal(health.code, 0);
    t.match(health.out + health.err, new RegExp(`${endpoint} is healthy: successfully committed proposal`), 'endpoint health (a get of "health")');
    await ok(t, ['endpoint', 'hashkv'], new RegExp(`^${endpoint}, \\d+\\n$`));
    await ok(t, ['alarm', 'list'], '');
    await ok(t, ['defrag'], `Finished defragmenting etcd member[${endpoint}]\n`);
  });

  t.test('snapshot save: etcdctl accepts our framing; the data comes back intact', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'picloud-snap-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'snap.db');
    const r = await ctl(['snapshot', 'save', file]);
    t.equal(r.code, 0, r.err.slice(-500));
    t.match(r.out, `Snapshot saved at ${file}`);
    const { dataBytes } = await readSnapshotFile(file);
    t.equal(dataBytes, backend.snapshotBytes.length);
    const content = await readFile(file);
    t.ok(content.subarray(0, dataBytes).equals(backend.snapshotBytes), 'data is the backend snapshot');
  });

  t.test('the fake is still serving after every command above', async (t) => {
    await ok(t, ['put', 'last', 'one'], 'OK\n');
  });
}
