/**
 * `picloud-node members` and `picloud-node keyring` against in-process agents (the gossip
 * subsystem plus a node:http server with its routes): output, flags and their errors, key
 * rotation through the CLI, persistence of keyring and incarnation in the data dir, and the
 * HTTP routes' input limits.
 */
import t from 'tap';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { MAX_INCARNATION } from '../../core/gossip/limits.js';
import { createHash } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run as keyringCommand } from '../../agent/commands/keyring.js';
import { run as membersCommand } from '../../agent/commands/members.js';
import { MAX_HTTP_BODY_BYTES, clusterKeyringAuthority, parseHostPort, startGossip, type GossipSubsystem } from '../../agent/gossip-subsystem.js';
import { createSocket } from 'node:dgram';
import { encodePacket } from '../../core/gossip/codec/index.js';
import { Keyring, generateKey, parseKey } from '../../core/gossip/keyring/index.js';
import { checkingAuthority, signingAuthority, type KeyringAuthority } from '../../core/gossip/keyring/authority.js';
import { MsgType } from '../../core/gossip/types.js';
import { formatWorkerToken, generateToken, parseJoinToken, parseToken, type ParsedWorkerToken } from '../../core/net/token.js';
import { until } from '../helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'picloud-gossip-cmd-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

interface Io {
  out: string[];
  err: string[];
  io: { out(l: string): void; err(l: string): void };
}
function io(): Io {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l) => out.push(l), err: (l) => err.push(l) } };
}

async function agent(name: string, join: string[] = [], gossipPort = 0, nameConflictRetryMs?: number): Promise<{ sub: GossipSubsystem; server: Server; http: string; gossipPort: number }> {
  const sub = await startGossip({
    name, bindAddr: '127.0.0.1', gossipPort, join, secret: 'cmd-test', dataDir: `${dir}/${name}`, meta: { role: 'worker', version: '0.1.0' }, profile: 'local', nameConflictRetryMs,
  });
  const routes = sub.httpRoutes();
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const r = routes.find((x) => x.method === req.method && x.path === path);
    if (r) r.handler(req, res);
    else {
      res.writeHead(404);
      res.end('{}');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { sub, server, http: `127.0.0.1:${(server.address() as { port: number }).port}`, gossipPort: sub.node.port };
}

async function stop(a: { sub: GossipSubsystem; server: Server }): Promise<void> {
  a.server.closeAllConnections();
  await new Promise((r) => a.server.close(() => r(undefined)));
  await a.sub.stop();
}

t.test('flags: usage errors exit 2 with a clear message, an unreachable agent exits 1', async (t) => {
  let c = io();
  t.equal(await membersCommand(['--bogus'], c.io), 2);
  t.match(c.err.join('\n'), /Unknown option '--bogus'/);
  c = io();
  t.equal(await membersCommand(['--http', 'no-port'], c.io), 2);
  t.match(c.err.join('\n'), /--http must be HOST:PORT/);
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
  const deadPort = (closed.address() as { port: number }).port;
  await new Promise((r) => closed.close(r));
  c = io();
  t.equal(await membersCommand(['--http', `127.0.0.1:${deadPort}`], c.io), 1);
  t.match(c.err.join('\n'), new RegExp(`cannot reach the agent at 127\\.0\\.0\\.1:${deadPort}: ECONNREFUSED`));
  c = io();
  t.equal(await keyringCommand([], c.io), 2);
  t.match(c.err.join('\n'), /missing operation/);
  c = io();
  t.equal(await keyringCommand(['rotate'], c.io), 2);
  t.match(c.err.join('\n'), /unknown operation "rotate"/);
  c = io();
  t.equal(await keyringCommand(['install'], c.io), 2);
  t.match(c.err.join('\n'), /install needs a KEY/);
  c = io();
  t.equal(await keyringCommand(['use', 'short'], c.io), 2);
  t.match(c.err.join('\n'), /base64/);
  c = io();
  t.equal(await keyringCommand(['list', generateKey()], c.io), 2);
  c = io();
  t.equal(await keyringCommand(['generate'], c.io), 0);
  t.match(c.out[0], /^[A-Za-z0-9+/]{43}=$/);
  t.throws(() => parseHostPort('host:99999', 7946), { code: 'GOSSIP_CONFIG_INVALID' });
  t.same(parseHostPort('manager01', 7946), { host: 'manager01', port: 7946 });
  t.same(parseHostPort('[::1]:8000', 7946), { host: '::1', port: 8000 });
});

t.test('members, watch, keyring rotation through the CLI; keyring and incarnation persist', async (t) => {
  const a = await agent('cmd-a');
  const b = await agent('cmd-b', [`127.0.0.1:${a.gossipPort}`]);
  const c = await agent('cmd-c', [`localhost:${a.gossipPort}`]);
  t.teardown(async () => {
    for (const x of [a, b, c]) await stop(x).catch(() => {});
  });
  const end = Date.now() + 10_000;
  while (a.sub.members().filter((m) => m.state === 'alive').length < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 25));

  let o = io();
  t.equal(await membersCommand(['--http', a.http], o.io), 0);
  t.match(o.out[0], /^NAME\s+ADDRESS\s+STATE\s+ROLE\s+INCARNATION\s+TAGS/);
  t.equal(o.out.length, 4, 'a header and three members');
  t.match(o.out[1], /^cmd-a\s+127\.0\.0\.1:\d+\s+alive\s+worker\s+1\s+version=0\.1\.0/);

  // Rotation: install, use, remove — cluster-wide.
  const next = generateKey();
  o = io();
  t.equal(await keyringCommand(['list', '--http', c.http], o.io), 0);
  const oldKey = o.out[1]!.split(/\s+/)[0]!;
  t.match(o.out.join('\n'), /3 of 3 members answered[\s\S]*on 3\/3\s+primary on 3/);
  o = io();
  t.equal(await keyringCommand(['install', next, '--http', c.http], o.io), 0);
  t.same(o.out, ['key installed on 3 of 3 members']);
  o = io();
  t.equal(await keyringCommand(['use', next, '--http', c.http], o.io), 0);
  o = io();
  t.equal(await keyringCommand(['remove', oldKey, '--http', c.http, '--json'], o.io), 0);
  t.match(JSON.parse(o.out.join('\n')), { op: 'remove', members: 3, ok: 3, errors: [] });
  o = io();
  t.equal(await keyringCommand(['remove', next, '--http', c.http], o.io), 1, 'removing the primary fails on every member');
  t.match(o.err.join('\n'), /GOSSIP_KEY_IS_PRIMARY/);
  const saved = JSON.parse(readFileSync(`${dir}/cmd-b/gossip/keyring.json`, 'utf8')) as { primary: string; keys: string[]; version: number };
  // Four changes: install, use, remove, and the refused remove (its version is taken all the same).
  t.same(saved, { primary: next, keys: [next], version: 4 }, 'the rotated keyring is persisted with the version of the last change');

  // A restart reads the persisted keyring and starts above the persisted incarnation.
  const incBefore = (JSON.parse(readFileSync(`${dir}/cmd-b/gossip/incarnation.json`, 'utf8')) as { incarnation: number }).incarnation;
  await stop(b);
  const b2 = await agent('cmd-b', [`127.0.0.1:${a.gossipPort}`], b.gossipPort);
  t.teardown(() => stop(b2).catch(() => {}));
  t.ok(b2.sub.node.incarnation > incBefore, `restarted with incarnation ${b2.sub.node.incarnation} > ${incBefore}`);
  const until2 = Date.now() + 5_000;
  while (a.sub.members().find((m) => m.name === 'cmd-b')!.incarnation < b2.sub.node.incarnation && Date.now() < until2) await new Promise((r) => setTimeout(r, 25));
  t.equal(a.sub.members().find((m) => m.name === 'cmd-b')!.state, 'alive', 'it rejoined with the persisted (rotated) key');

  // One pushed to the top of the incarnation space restarts there, not past what the others decode.
  await stop(b2);
  writeFileSync(`${dir}/cmd-b/gossip/incarnation.json`, JSON.stringify({ incarnation: MAX_INCARNATION }));
  const b3 = await agent('cmd-b', [`127.0.0.1:${a.gossipPort}`], b.gossipPort);
  t.teardown(() => stop(b3).catch(() => {}));
  t.equal(b3.sub.node.incarnation, MAX_INCARNATION, 'restarted at MAX_INCARNATION (2^53 would not decode anywhere)');

  // The same name from another address while the first is alive: refused.
  await t.rejects(agent('cmd-b', [`127.0.0.1:${a.gossipPort}`], 0, 0), { code: 'GOSSIP_NAME_CONFLICT' });

  // --watch prints events as they come, and ends cleanly when the agent stops.
  o = io();
  const watching = membersCommand(['--watch', '--http', c.http], o.io);
  await new Promise((r) => setTimeout(r, 200));
  a.sub.updateMeta({ role: 'manager', version: '0.1.0' });
  const until = Date.now() + 5_000;
  while (o.out.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 25));
  t.match(o.out[0], /update cmd-a 127\.0\.0\.1:\d+ alive role=manager incarnation=2/);
  await c.sub.stop();
  t.equal(await watching, 0, 'watch ends cleanly when the agent stops');
  o = io();
  const watching2 = membersCommand(['--watch', '--http', a.http], o.io);
  await new Promise((r) => setTimeout(r, 200));
  a.server.closeAllConnections();
  t.equal(await watching2, 1, 'a broken stream is an error');
  t.match(o.err.join('\n'), /lost the watch stream/);
});

t.test('after a rotation through the CLI, a member that was away with the old key only is cut off, and the removed key opens nothing', async (t) => {
  const a = await agent('rot-a');
  const b = await agent('rot-b', [`127.0.0.1:${a.gossipPort}`]);
  let d = await agent('rot-d', [`127.0.0.1:${a.gossipPort}`]);
  t.teardown(async () => {
    for (const x of [a, b, d]) await stop(x).catch(() => {});
  });
  const until = (pred: () => boolean, ms = 8_000) => (async () => {
    const end = Date.now() + ms;
    while (!pred() && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    return pred();
  })();
  const stateOf = (x: { sub: GossipSubsystem }, name: string) => x.sub.members().find((m) => m.name === name)?.state;
  t.ok(await until(() => [a, b, d].every((x) => x.sub.members().filter((m) => m.state === 'alive').length === 3)), 'three members');
  const oldKey = (await a.sub.keyring.list()).keys![0]!.key;
  const dPort = d.gossipPort;
  await d.sub.leave();
  await stop(d);
  t.ok(await until(() => stateOf(a, 'rot-d') === 'left' && stateOf(b, 'rot-d') === 'left'), 'd is away (left)');

  const next = generateKey();
  let o = io();
  for (const op of ['install', 'use', 'remove'] as const) {
    o = io();
    t.equal(await keyringCommand([op, op === 'remove' ? oldKey : next, '--http', b.http], o.io), 0, `keyring ${op}: ${o.out.join(' ')} ${o.err.join(' ')}`);
  }
  t.same(o.out, ['key removed on 2 of 2 members']);

  // d comes back with its saved keyring (the old key only): its join is refused, it stays cut off.
  const authBefore = a.sub.metrics().authFailures!;
  d = await agent('rot-d', [`127.0.0.1:${a.gossipPort}`], dPort);
  t.notOk(await until(() => stateOf(a, 'rot-d') === 'alive' || stateOf(d, 'rot-a') !== undefined, 1_500), 'a and d never see each other');
  t.ok(a.sub.metrics().authFailures! > authBefore, `a refused d's traffic as unauthenticated (${a.sub.metrics().authFailures! - authBefore})`);
  t.equal(stateOf(a, 'rot-d'), 'left');

  // A fresh packet sealed with the removed key (not a replay) is not accepted either.
  const removed = new Keyring(parseKey(oldKey));
  const forged = removed.seal(encodePacket([{ t: MsgType.Alive, name: 'ghost', incarnation: 1, host: '127.0.0.1', port: 9, meta: {}, protocol: 1 }]), 'udp');
  const before = a.sub.metrics().authFailures!;
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.send(forged, a.gossipPort, '127.0.0.1', () => r()));
  sock.close();
  t.ok(await until(() => a.sub.metrics().authFailures! > before, 3_000), 'counted as an authentication failure');
  t.equal(stateOf(a, 'ghost'), undefined, 'nothing was injected');

  // The token alone derives the removed key too: a new node needs a member's keyring first.
  const fresh = await agent('rot-e', [`127.0.0.1:${a.gossipPort}`]);
  t.teardown(() => stop(fresh).catch(() => {}));
  t.notOk(await until(() => stateOf(a, 'rot-e') !== undefined, 1_000), 'a new node with only the token cannot join after the rotation');
  mkdirSync(`${dir}/rot-f/gossip`, { recursive: true });
  copyFileSync(`${dir}/rot-b/gossip/keyring.json`, `${dir}/rot-f/gossip/keyring.json`);
  const copied = await agent('rot-f', [`127.0.0.1:${a.gossipPort}`]);
  t.teardown(() => stop(copied).catch(() => {}));
  t.ok(await until(() => stateOf(a, 'rot-f') === 'alive'), 'with a copy of a member\'s gossip/keyring.json it joins');
});

t.test('HTTP routes refuse oversized and malformed bodies', async (t) => {
  const a = await agent('cmd-http');
  t.teardown(() => stop(a));
  const [host, port] = a.http.split(':');
  const send = (path: string, method: string, body: string): Promise<{ status: number; text: string }> =>
    new Promise((resolve, reject) => {
      const req = request({ host, port: Number(port), path, method }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  const big = await send('/v1/agent/tags', 'PUT', JSON.stringify({ set: { x: 'y'.repeat(MAX_HTTP_BODY_BYTES) } })).catch(() => ({ status: 400, text: 'reset' }));
  t.equal(big.status, 400, 'a body over MAX_HTTP_BODY_BYTES is refused');
  const bad = await send('/v1/agent/tags', 'PUT', '{nope');
  t.equal(bad.status, 400);
  t.match(bad.text, /not valid JSON/);
  const huge = await send('/v1/agent/tags', 'PUT', JSON.stringify({ set: { blob: 'z'.repeat(1000) } }));
  t.equal(huge.status, 400);
  t.match(huge.text, /GOSSIP_META_TOO_LARGE/);
  const ok = await send('/v1/agent/tags', 'PUT', JSON.stringify({ set: { color: 'red' } }));
  t.equal(ok.status, 200);
  t.same(a.sub.members()[0]!.meta.tags, { color: 'red' });
  const badKey = await send('/v1/agent/keyring/install', 'POST', JSON.stringify({ key: 'nope' }));
  t.equal(badKey.status, 400);
  t.match(badKey.text, /GOSSIP_KEY_INVALID/);
});

t.test("a data dir whose gossip keys are another cluster's is refused, naming what to remove", async (t) => {
  const start = (secret: string) =>
    startGossip({ name: 'other', bindAddr: '127.0.0.1', gossipPort: 0, join: [], secret, dataDir: `${dir}/other`, meta: { role: 'worker', version: '0.1.0' }, profile: 'local' });
  await (await start('cluster-one')).stop();
  const again = await start('cluster-one');
  t.ok(again.node.port > 0, 'the same cluster starts again on its saved keys');
  await again.stop();
  await t.rejects(start('cluster-two'), { code: 'GOSSIP_OTHER_CLUSTER', message: /holds the gossip keys of another cluster .*remove .*other\/gossip/ }, 'another token: refused (it retried a join it could never make)');
  rmSync(`${dir}/other/gossip`, { recursive: true });
  const fresh = await start('cluster-two');
  t.ok(fresh.node.port > 0, 'with the gossip dir removed it starts with the new cluster key');
  await fresh.stop();
});

t.test('without a secret (a worker restarted without --token) the saved keyring is the key; given a secret, the saved keyring wins and a rotation away from it is logged', async (t) => {
  const warnings: string[] = [];
  const logger = { info: () => undefined, warn: (m: unknown) => void warnings.push(String(m)) };
  const start = (secret: string | undefined) =>
    startGossip({ name: 'keep', bindAddr: '127.0.0.1', gossipPort: 0, join: [], secret, dataDir: `${dir}/keep`, meta: { role: 'worker', version: '0.1.0' }, profile: 'local', logger });
  await t.rejects(start(undefined), { code: 'GOSSIP_KEY_INVALID', message: /no gossip keyring in .*keep\/gossip\/keyring\.json: start with --join HOST\[:PORT\] --token TOKEN/ }, 'nothing saved: the token is needed');
  const first = await start('cluster-one');
  const rotated = generateKey();
  await first.keyring.install(rotated, { local: true });
  await first.keyring.use(rotated, { local: true });
  await first.keyring.remove(Keyring.fromSecret('cluster-one').primaryKey(), { local: true });
  await first.stop();
  const saved = readFileSync(`${dir}/keep/gossip/keyring.json`, 'utf8');
  const keys = async (g: GossipSubsystem) => ((await g.keyring.list({ local: true })).keys ?? []).map((k) => k.key);
  const bare = await start(undefined);
  t.same(await keys(bare), [rotated], 'no secret: the saved (rotated) keyring');
  await bare.stop();
  t.same(warnings, [], 'nothing to warn about without a token');
  const given = await start('cluster-one');
  t.same(await keys(given), [rotated], "this cluster's token: the saved keyring still wins (Consul: the keyring file over -encrypt)");
  await given.stop();
  t.match(warnings, [/does not hold the key of the --token given .*using the saved keyring/], 'and the disagreement is logged');
  t.equal(readFileSync(`${dir}/keep/gossip/keyring.json`, 'utf8'), saved, 'the saved keyring is left as it was');
  await t.rejects(start('cluster-two'), { code: 'GOSSIP_OTHER_CLUSTER' }, "another cluster's token is still refused rather than ignored");
  // A damaged keyring is refused, not replaced with the token's key (the rotated key would be lost).
  writeFileSync(`${dir}/keep/gossip/keyring.json`, saved.slice(0, 20));
  await t.rejects(start('cluster-one'), { code: 'GOSSIP_KEY_INVALID', message: /the gossip keyring .*keep\/gossip\/keyring\.json is damaged .*restore it from a backup, or remove it/ }, 'a damaged keyring, with the token: refused');
  t.equal(readFileSync(`${dir}/keep/gossip/keyring.json`, 'utf8'), saved.slice(0, 20), 'and left as it was');
});

t.test("a worker token's key: joins, tags the dir with the cluster's digest; a dir the cluster token tagged takes it when its saved keyring holds the key; a keyring made from a token that never joined gives way to the next", async (t) => {
  const warnings: string[] = [];
  const logger = { info: () => undefined, warn: (m: unknown) => void warnings.push(String(m)) };
  const clusterToken = generateToken();
  const { digest } = parseToken(clusterToken);
  const authorityKey = clusterKeyringAuthority(clusterToken).publicKey;
  const workerToken = (key: Buffer) => parseJoinToken(formatWorkerToken(digest, key, authorityKey)) as ParsedWorkerToken & { kind: 'worker' };
  const token = workerToken(Buffer.from(Keyring.fromSecret(clusterToken).primaryKey(), 'base64'));
  const start = (name: string, creds: { secret?: string; workerToken?: ParsedWorkerToken }, join: string[] = []) =>
    startGossip({ name, bindAddr: '127.0.0.1', gossipPort: 0, join, secret: creds.secret, workerToken: creds.workerToken, dataDir: `${dir}/${name}`, meta: { role: 'worker', version: '0.1.0' }, profile: 'local', logger });
  const alive = (g: GossipSubsystem, name: string) => until(`${g.name} to see ${name} alive`, () => g.members().some((m) => m.name === name && m.state === 'alive') || undefined, 10_000);

  const m = await start('wt-m', { secret: clusterToken });
  t.teardown(() => m.stop());
  const seed = [`127.0.0.1:${m.node.port}`];
  const w = await start('wt-w', { workerToken: token }, seed);
  t.ok((await alive(m, 'wt-w')) && (await alive(w, 'wt-m')), 'a worker holding only the gossip key joins: each lists the other alive');
  t.equal(readFileSync(`${dir}/wt-w/gossip/cluster`, 'utf8').trim(), digest, "its data dir is tagged with the cluster's digest");
  await w.stop();
  const kept = await start('wt-w', { workerToken: workerToken(Buffer.alloc(32, 9)) }, seed);
  t.same(((await kept.keyring.list({ local: true })).keys ?? []).map((k) => k.key), [token.gossipKey.toString('base64')], 'a dir that joined, told to join with a key it does not hold: its saved keyring is kept, not taken over');
  await kept.stop();
  const otherCluster = parseJoinToken(formatWorkerToken(digest.replace(/^./, (c) => (c === '0' ? '1' : '0')), Buffer.alloc(32, 9), authorityKey)) as ParsedWorkerToken;
  await t.rejects(start('wt-w', { workerToken: otherCluster }, seed), { code: 'GOSSIP_OTHER_CLUSTER' }, "and another cluster's worker token is refused, even told to join");
  const again = await start('wt-w', { secret: clusterToken });
  t.ok(again.node.port > 0, 'that dir restarts on the cluster token too (the digest is its cluster)');
  await again.stop();

  // A dir tagged as before worker tokens (a hash of the cluster token, which a worker token
  // cannot derive): taken on a worker token whose key its saved keyring holds, and only then.
  const tagged = await start('wt-tagged', { secret: clusterToken });
  await tagged.stop();
  const olderTag = createHash('sha256').update('picloud gossip cluster\0').update(clusterToken).digest('hex').slice(0, 16);
  writeFileSync(`${dir}/wt-tagged/gossip/cluster`, olderTag + '\n');
  const strangerKey = Buffer.alloc(32, 9);
  await t.rejects(start('wt-tagged', { workerToken: workerToken(strangerKey) }), { code: 'GOSSIP_OTHER_CLUSTER', message: /with this worker token/ }, 'an older tag and a key its keyring does not hold: refused');
  const onWorker = await start('wt-tagged', { workerToken: token });
  t.ok(onWorker.node.port > 0, 'an older tag and a worker token whose key its keyring holds: taken');
  await onWorker.stop();
  const onCluster = await start('wt-tagged', { secret: clusterToken });
  await onCluster.stop();
  t.equal(readFileSync(`${dir}/wt-tagged/gossip/cluster`, 'utf8').trim(), digest, 'the cluster token turns the older tag into the digest');

  // A stale worker token (a key no longer in the cluster's keyring): the join fails and the dir
  // never joins; given the current token, it takes that one rather than its saved keyring.
  const stale = await start('wt-stale', { workerToken: workerToken(strangerKey) }, seed);
  t.notOk(stale.members().some((x) => x.name === 'wt-m'), 'a stale key does not join');
  await stale.stop();
  const fresh = await start('wt-stale', { workerToken: token }, seed);
  t.teardown(() => fresh.stop());
  t.ok(await alive(fresh, 'wt-m'), 'given the current token, the dir a stale one left joins');
  t.ok(warnings.some((m) => /wt-stale\/gossip\/keyring\.json came from a token whose join never got through: replaced by the worker token's key/.test(m)), 'the replacement is logged');
  t.same(((await fresh.keyring.list({ local: true })).keys ?? []).map((k) => k.key), [token.gossipKey.toString('base64')], 'and its keyring is the token key alone');
});

t.test("the keyring authority a start was given is kept for restarts without a token; a damaged one is named", async (t) => {
  const manager = signingAuthority(Buffer.alloc(32, 1));
  const start = (keyringAuthority?: KeyringAuthority) =>
    startGossip({ name: 'auth', bindAddr: '127.0.0.1', gossipPort: 0, join: [], secret: keyringAuthority === undefined ? undefined : 'auth-test', keyringAuthority, dataDir: `${dir}/auth`, meta: { role: 'worker', version: '0.1.0' }, profile: 'local' });
  const first = await start(checkingAuthority(manager.publicKey));
  await t.rejects(first.keyring.install(generateKey()), { code: 'GOSSIP_KEYRING_UNSIGNED' }, 'given a checking authority: no cluster-wide change from here');
  await first.stop();
  t.equal(readFileSync(`${dir}/auth/gossip/keyring-authority`, 'utf8').trim(), manager.publicKey.toString('hex'), 'its public key saved');
  const again = await start();
  await t.rejects(again.keyring.install(generateKey()), { code: 'GOSSIP_KEYRING_UNSIGNED' }, 'restarted without a token: still checking, from the saved key');
  t.equal((await again.keyring.install(generateKey(), { local: true })).ok, 1, 'a --local change is its own');
  await again.stop();
  writeFileSync(`${dir}/auth/gossip/keyring-authority`, 'zz\n');
  await t.rejects(start(), { code: 'GOSSIP_KEY_INVALID', message: /keyring-authority is damaged/ }, 'a damaged saved key is named, not ignored');
  rmSync(`${dir}/auth/gossip/keyring-authority`);
  mkdirSync(`${dir}/auth/gossip/keyring-authority`);
  await t.rejects(start(), { code: 'GOSSIP_KEY_INVALID', message: /keyring-authority cannot be read/ }, 'one that cannot be read does not turn the checks off');
  rmSync(`${dir}/auth/gossip/keyring-authority`, { recursive: true });
  const repaired = await start(manager);
  t.equal((await repaired.keyring.install(generateKey())).ok, 1, 'a start given the signing authority rewrites it, and may change the keyring');
  await repaired.stop();
});

t.test('members and keyring reach an agent on a port fetch would refuse (6665: browsers block it)', async (t) => {
  const blocked = 6665;
  const server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/v1/agent/members') res.end(JSON.stringify([{ name: 'solo', address: '127.0.0.1', port: 7946, role: 'worker', state: 'alive', incarnation: 1, meta: {} }]));
    else res.end(JSON.stringify({ ok: 1, members: 1, keys: [], errors: [] }));
  });
  const listening = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(blocked, '127.0.0.1', () => resolve(true));
  });
  if (!listening) {
    t.comment(`port ${blocked} is taken on this machine: not checked`);
    return;
  }
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (l: string) => void out.push(l), err: (l: string) => void err.push(l) };
  t.equal(await membersCommand(['--http', `127.0.0.1:${blocked}`], io), 0, `members: exit 0 (${err.join(' ')})`);
  t.match(out.join('\n'), /solo/, 'the member listed');
  t.equal(await keyringCommand(['list', '--http', `127.0.0.1:${blocked}`], io), 0, `keyring list: exit 0 (${err.join(' ')})`);
});
