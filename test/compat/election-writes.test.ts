/**
 * Writes sent while a member knows no leader (an election that cannot finish yet) are held
 * and applied once one is elected, as etcd 3.4's are: tried on etcd 3.4.23 with two of three
 * members SIGSTOPped, `etcdctl put` on the third waited until they were SIGCONTed 1.5 s later
 * and answered OK (2.9 s). picloud refused such writes at once with "etcdserver: no leader",
 * which clientv3 (etcdctl) does not retry for a put: the client saw an error etcd's never do.
 */
import t from 'tap';
import { etcdctlAsync, hasEtcdctl, raftStatus, startedCluster } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** What etcdctl printed last (its retry warnings come before). */
const said = (r: { stdout: string; stderr: string }): string => (r.stdout + r.stderr).trim().split('\n').pop()!.slice(0, 200);

t.test('a put, a delete and a lease grant made with no leader known wait for the election and succeed', { skip: !hasEtcdctl() && 'etcdctl not installed' }, async (t) => {
  const { cluster, leader } = await startedCluster(t, ['a', 'b', 'c']);
  // The member left alone: a follower (its leader goes quiet) or the leader (it steps down).
  const alone = cluster.agents.find((a) => a !== leader)!;
  const others = cluster.agents.filter((a) => a !== alone);
  const ep = `127.0.0.1:${alone.ports.client}`;
  t.equal((await etcdctlAsync(ep, ['put', 'before', '1'])).status, 0);
  for (const a of others) a.proc!.kill('SIGSTOP');
  let resumed = false;
  t.teardown(() => { if (!resumed) for (const a of others) a.proc?.kill('SIGCONT'); });
  await until('the member alone to know no leader', async () => (await raftStatus(alone))?.lead === '0', 10_000);
  const calls = Promise.all([
    etcdctlAsync(ep, ['--command-timeout=15s', 'put', 'during', '2']),
    etcdctlAsync(ep, ['--command-timeout=15s', 'del', 'before']),
    etcdctlAsync(ep, ['--command-timeout=15s', 'lease', 'grant', '30']),
  ]);
  await sleep(1_500);
  t.equal((await raftStatus(alone))?.lead, '0', 'still no leader when the others resume (the calls were waiting)');
  for (const a of others) a.proc!.kill('SIGCONT');
  resumed = true;
  const [put, del, grant] = await calls;
  t.equal(put.status, 0, `put answered OK (${said(put)})`);
  t.match(put.stdout, /^OK/);
  t.equal(del.stdout.trim(), '1', `delete answered: one key deleted (${said(del)})`);
  t.match(grant.stdout, /lease [0-9a-f]+ granted with TTL\(30s\)/, `lease granted (${said(grant)})`);
  const got = await etcdctlAsync(ep, ['get', 'during', '--print-value-only']);
  t.equal(got.stdout.trim(), '2', 'the held put was applied');
});
