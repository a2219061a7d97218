/**
 * The npm `etcd3` client (the most used JavaScript etcd client) across its API against a real
 * etcd 3.4.23 and picloud: test/compat/fixtures/etcd3-client-script.ts calls what the library
 * offers (KV builders, the transaction builder, compaction, watches, leases and their events,
 * locks, elections, STM at each isolation level, namespaces, users, roles and logins,
 * maintenance and cluster calls, bad input) and prints a transcript. The transcripts from etcd
 * and picloud must be equal, on one member each and on three with the script's client on a
 * follower (its second client, the other lock holder and candidate, on the leader). Assertions
 * on etcd's own transcript make sure equality means the steps did what they claim.
 */
import t, { type Test } from 'tap';
import { existsSync, writeFileSync } from 'node:fs';
import { ETCD_BIN, type BenchCluster } from '../../bench/kv/clusters.js';
import { etcdAndPicloud } from '../helpers/etcd-ops.js';
import { runEtcd3Script, type Line, type ScriptTargets } from './fixtures/etcd3-client-script.js';

/** Steps the script records before its `end` line: fewer means steps went missing. */
const STEPS = 89;

/** The script's client on a follower (on one member, both on it), its second client on the leader. */
async function targets(c: BenchCluster): Promise<ScriptTargets> {
  if (c.members.length === 1) return { main: c.members[0]!.clientEndpoint, other: c.members[0]!.clientEndpoint };
  const leader = await c.leaderEndpoint();
  return { main: c.members.map((m) => m.clientEndpoint).find((e) => e !== leader)!, other: leader };
}

const step = (lines: Line[], name: string): Line | undefined => lines.find((l) => l.step === name);

/** Assertions on etcd's own transcript: the script really did what it claims, so equality means something. */
function checkReference(t: Test, lines: Line[]): void {
  const end = lines.at(-1)!;
  t.same([end.step, end.steps], ['end', STEPS], 'every step ran');
  t.same(lines.filter((l) => 'unexpected' in l).map((l) => `${l.step}: ${JSON.stringify(l.unexpected)}`), [], 'no step failed against etcd');
  const expect = (name: string, pattern: object, what: string): void => void t.match(step(lines, name), pattern, what);
  expect('txn: compares hold, then-branch', { res: { succeeded: true }, t: 'then' }, 'a txn whose compares hold runs its then-branch');
  expect('txn: a nested txn (raw request op)', { res: { succeeded: true }, inner: 'compared before the outer put' }, "a nested txn's compares see the state before the txn");
  expect('reads below, at and above the compacted revision', { below: { error: 'GRPCOutOfRangeError' }, at: { ok: 'v2' }, future: { error: 'GRPCOutOfRangeError' } }, 'a read below the compaction fails, at it succeeds');
  expect('watch a key: put, put, delete, cancel', { got: true, events: [{ type: 'put' }, { type: 'put' }, { type: 'delete' }], ended: true }, 'the watch saw its three events and ended when cancelled');
  expect('watch from a start revision (history replayed)', { got: true, events: [{ kv: { value: 'v2' } }, { kv: { value: 'v3' } }] }, 'history was replayed');
  expect('watch from a compacted revision', { got: true, error: { error: 'EtcdError' } }, 'a watch from a compacted revision ends in an error');
  expect('lease: keepalive events, then lost when revoked elsewhere', { alive: true, detected: true, lost: { error: 'EtcdLeaseInvalidError' } }, 'keepalives succeeded, then the loss was detected');
  expect('lease: the shortest TTL, then expiry removes its key', { granted: { TTL: '2' }, present: true, gone: true, ttlAfter: '-1' }, "a lease's expiry removed its key");
  expect('lease: unknown IDs', { put: { error: 'EtcdLeaseInvalidError' } }, 'a put with an unknown lease is refused');
  expect('lock contention: the second is refused until the first releases', { order: ['a acquired', 'b refused: EtcdLockFailedError', 'a released', 'b acquired'], holder: true, bHolds: true }, 'the second lock was refused while the first was held, then taken');
  expect('election: campaign, observe, contention, proclaim, resign', { order: ['a elected', 'b campaigning', 'a resigned', 'b elected'], changes: ['a', 'a2', 'b', null] }, 'the second candidate was elected only after the first resigned');
  t.same(['SerializableSnapshot', 'Serializable', 'RepeatableReads', 'ReadCommitted'].map((l) => step(lines, `stm ${l}: a write by another client between read and commit`)?.attempts), [2, 2, 2, 1], 'STM retried on the conflict, except ReadCommitted');
  expect('stm: a key read missing, then created by another client; prefetched keys', { attempts: 2, seen: { missing: 'created' } }, 'STM retried when a key it read missing was created');
  expect('stm: conflicts beyond its retries', { attempts: 2, res: { error: 'STMConflictError' } }, 'STM gave up after its retries');
  expect('cluster: add a learner', { member: { isLearner: true } }, 'a learner was added');
  expect('cluster: add a peer URL a member has', { res: { message: /Peer URLs already exists/ } }, 'a second member with the same peer URL is refused');
  expect('bad input: a value over the request limit (1.6 MiB)', { res: { error: 'GRPCInvalidArgumentError', message: /request is too large/ } }, 'an oversized request is refused');
  expect('auth: alice puts where she may only read', { res: { error: 'EtcdPermissionDeniedError' } }, 'a user is held to her grants');
  expect('auth: alice puts her read-write key', { res: { ok: {} } }, 'a user may write where granted');
  expect('auth: a watch refused, then one permitted, on one stream', { answered: true, got: [{ watch_id: '-1', canceled: true, cancel_reason: /permission denied/ }, { created: true, canceled: false }] }, 'a watch outside her grants is refused, one within them is created');
  expect('auth: a wrong password', { get: { error: 'EtcdAuthenticationFailedError' } }, 'a wrong password is refused');
}

/** Where etcd 3.4.23 is wrong and picloud is not (the script leaves these out of the comparison). */
function checkPicloudOnly(t: Test, etcd: Line[], picloud: Line[]): void {
  const name = 'cluster: update its peer URL';
  t.match(step(etcd, name), { uncompared: { learnerStill: false } }, 'etcd 3.4.23 lists an updated learner as a voter');
  t.match(step(picloud, name), { uncompared: { learnerStill: true } }, 'picloud keeps an updated learner a learner');
}

/** A step as compared: without what differs by design. */
const compared = (l: Line | undefined): string => JSON.stringify(l === undefined ? l : { ...l, uncompared: undefined });

/** picloud's transcript equals etcd's, step by step (every differing step is reported). */
function compare(t: Test, etcd: Line[], picloud: Line[]): void {
  const differ = etcd
    .map((l, i) => [l, picloud[i]] as const)
    .filter(([e, p]) => compared(e) !== compared(p))
    .map(([e, p]) => `"${e.step}":\n  etcd:    ${JSON.stringify(e)}\n  picloud: ${JSON.stringify(p)}`);
  t.same(differ, [], `picloud's transcript is etcd's (${etcd.length} lines)`);
  t.equal(picloud.length, etcd.length, 'as many lines');
}

// A step that failed half-way can leave a library object behind that keeps the process alive (a
// lock's or a campaign's lease renews itself on a timer): once the test is over and its clusters
// are stopped, the process exits (with the test's exit code) instead of waiting out tap's timeout.
t.teardown(() => void setTimeout(() => process.exit(process.exitCode ?? 0), 5_000).unref());

t.test('the npm etcd3 client sees picloud as it sees etcd 3.4', { skip: existsSync(ETCD_BIN) ? false : 'etcd not installed (apt-get install etcd-server)', timeout: 180_000 }, async (t) => {
  const sizes = [1, 3];
  const results = await Promise.all(
    sizes.map(async (size) => {
      const { clusters } = await etcdAndPicloud(t, size);
      const [etcd, picloud] = await Promise.all(clusters.map(async (c) => runEtcd3Script(await targets(c))));
      // A member that died during the script fails the test with what it said last.
      const died = clusters.flatMap((c) => c.members.filter((m) => m.proc.exitCode !== null || m.proc.signalCode !== null));
      t.same(died.map((m) => `${m.name} (${m.proc.exitCode ?? m.proc.signalCode}): ${m.logTail.join('').slice(-1500)}`), [], `every member of ${size} still runs`);
      return { etcd: etcd!, picloud: picloud! };
    }),
  );
  for (const [i, size] of sizes.entries()) {
    t.test(`${size} member${size > 1 ? 's, through a follower' : ''}`, async (t) => {
      // ETCD3_SCRIPT_DUMP=DIR writes both transcripts there, a step a line, to read side by side.
      const dump = process.env.ETCD3_SCRIPT_DUMP;
      if (dump) for (const sys of ['etcd', 'picloud'] as const) writeFileSync(`${dump}/${size}-${sys}.jsonl`, results[i]![sys].map((l) => JSON.stringify(l)).join('\n') + '\n');
      checkReference(t, results[i]!.etcd);
      compare(t, results[i]!.etcd, results[i]!.picloud);
      checkPicloudOnly(t, results[i]!.etcd, results[i]!.picloud);
    });
  }
});
