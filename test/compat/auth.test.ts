/**
 * etcd v3 Auth on the client port, against three real picloud-node agents on loopback, with
 * clients nobody here wrote: etcdctl 3.4 (user/role/auth commands, the errors and exit codes it
 * prints), the JSON gateway (the token in the Authorization header, the /v3/auth/* routes) and
 * the npm `etcd3` client.
 *
 * Covered: auth enable needs root; without a token a request gets "user name is empty", with a
 * bad one "invalid auth token", outside the user's permissions "permission denied" (puts, reads,
 * txns, watches: a denied watch is canceled with etcd's reason and etcdctl exits 5); a user reads
 * its own record and the roles it holds, nothing else of the auth state; hashkv, compaction,
 * defrag and snapshot need the root role, member list and endpoint status any caller (as etcd's:
 * clients find endpoints and monitors read status as whichever user they run as); a token issued by one member
 * is good at the others and a forged one is refused; permission changes apply at once to a token
 * already issued; a password change, a user's deletion and re-creation, and auth switched off and
 * on void the tokens issued before; /health stays healthy; users and roles survive a member's
 * restart (its own disk) and a token issued before the restart is good at it after.
 *
 * A change to the auth state is mostly followed by checks at the member it went through; a
 * member that has not applied it yet is auth-lag.test.ts's subject.
 */
import t, { Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd3, EtcdAuthenticationFailedError, EtcdPermissionDeniedError } from 'etcd3';
import { AgentCluster, etcdctl, hasEtcdctl, raftStatus, type AgentProc } from '../helpers/agents.js';
import { until } from '../helpers/wait.js';

const ROOT = 'root:PW';
const ALICE = 'alice:PW2';
const ALICE_NEW = 'alice:PW3';
const DENIED = 'Error: etcdserver: permission denied';
const WATCH_DENIED = 'watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)';

type Ctl = { status: number; stdout: string; stderr: string };
type Gw = { status: number; json: Record<string, any> };

/** etcdctl's last line on stderr (clientv3 logs its retries as JSON lines before it). */
const lastLine = (s: string): string => s.trimEnd().split('\n').pop() ?? '';
const b64 = (s: string): string => Buffer.from(s).toString('base64');

if (!hasEtcdctl()) {
  t.test('etcd auth', { skip: 'etcdctl not installed (apt-get install etcd-client)' }, async () => undefined);
} else {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  t.before(async () => {
    await cluster.startCluster(['u1', 'u2', 'u3']);
  });
  const member = (i: number): AgentProc => cluster.agents[i]!;

  /** etcdctl as `user` (undefined: no --user) at the given members (default: the first only). */
  const ctl = (user: string | undefined, args: string[], opts: { at?: AgentProc[]; input?: string } = {}): Ctl =>
    etcdctl(cluster.endpoints(opts.at ?? [member(0)]), [...(user === undefined ? [] : ['--user', user]), ...args], opts.input);
  const ok = (t: Test, user: string | undefined, args: string[], opts?: { at?: AgentProc[]; input?: string }): string => {
    const r = ctl(user, args, opts);
    t.equal(r.status, 0, `etcdctl ${user === undefined ? '' : `--user ${user.split(':')[0]} `}${args.join(' ')} ${r.stderr.trim()}`);
    return r.stdout;
  };
  /** etcdctl refused the command with exit code 1 and etcd's error as its last word. */
  const refused = (t: Test, user: string | undefined, args: string[], error: string, opts?: { at?: AgentProc[] }): void => {
    const r = ctl(user, args, opts);
    t.same([r.status, r.stdout, lastLine(r.stderr)], [1, '', error], `etcdctl ${user === undefined ? '' : `--user ${user.split(':')[0]} `}${args.join(' ')}: ${error}`);
  };

  /**
   * etcdctl watch as `user`, killed after `ms` or once `done` holds for its output; resolves
   * with the exit code (null when it was killed) and the output.
   */
  const watch = (user: string, args: string[], ms: number, done: (out: string) => boolean = () => false): Promise<{ status: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const p = spawn('etcdctl', ['--endpoints', cluster.endpoints([member(0)]), '--user', user, 'watch', ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (done(stdout)) p.kill();
      });
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const guard = setTimeout(() => p.kill(), ms);
      p.on('close', (code) => {
        clearTimeout(guard);
        resolve({ status: code, stdout, stderr });
      });
    });

  /** A POST to the JSON gateway on `a`'s client port, with `token` in the Authorization header. */
  const gateway = async (a: AgentProc, path: string, body: object, token?: string): Promise<Gw> => {
    const r = await fetch(`http://${a.host}:${a.ports.client}${path}`, {
      method: 'POST',
      headers: token === undefined ? {} : { Authorization: token },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    return { status: r.status, json: (await r.json()) as Record<string, any> };
  };
  const login = async (t: Test, a: AgentProc, name: string, password: string): Promise<string> => {
    const r = await gateway(a, '/v3/auth/authenticate', { name, password });
    t.equal(r.status, 200, `${name} authenticates at ${a.name}: ${JSON.stringify(r.json)}`);
    t.match(r.json.token, /^[A-Za-z0-9_-]+\.\d+\.\d+\.[A-Za-z0-9_-]+$/, 'a signed token');
    return r.json.token as string;
  };
  const rangeApp = (a: AgentProc, token: string): Promise<Gw> => gateway(a, '/v3/kv/range', { key: b64('app/'), range_end: b64('app0') }, token);
  const keysOf = (r: Gw): string[] => ((r.json.kvs ?? []) as Array<{ key: string }>).map((kv) => Buffer.from(kv.key, 'base64').toString());
  const refusal = (r: Gw): [number, string, number] => [r.status, r.json.error, r.json.code];
  const PERMISSION_DENIED: [number, string, number] = [403, 'etcdserver: permission denied', 7];
  const INVALID_TOKEN: [number, string, number] = [401, 'etcdserver: invalid auth token', 16];

  /** Tokens kept from one subtest to the next (issued before a change that must void them). */
  let aliceToken = '';

  t.test('etcdctl: auth enable, users, roles and key permissions', async (t) => {
    t.equal(ok(t, undefined, ['user', 'add', ROOT]), 'User root created\n');
    t.equal(ok(t, undefined, ['auth', 'enable']), 'Authentication Enabled\n');
    refused(t, undefined, ['get', 'k'], 'Error: etcdserver: user name is empty');
    refused(t, undefined, ['put', 'k', 'v'], 'Error: etcdserver: user name is empty');
    t.equal(ok(t, ROOT, ['put', 'k', 'v']), 'OK\n', 'root may write');
    t.equal(ok(t, ROOT, ['get', 'k']), 'k\nv\n', 'and read');
    t.equal(ok(t, ROOT, ['role', 'add', 'r']), 'Role r created\n');
    t.equal(ok(t, ROOT, ['role', 'grant-permission', 'r', 'readwrite', 'app/', '--prefix']), 'Role r updated\n');
    t.equal(ok(t, ROOT, ['user', 'add', ALICE]), 'User alice created\n');
    t.equal(ok(t, ROOT, ['user', 'grant-role', 'alice', 'r']), 'Role r is granted to user alice\n');
    t.equal(ok(t, ROOT, ['user', 'list']), 'alice\nroot\n');
    t.equal(ok(t, ROOT, ['role', 'list']), 'r\nroot\n', 'etcdctl added the root role at auth enable');

    const put = JSON.parse(ok(t, ALICE, ['put', 'app/x', '1', '-w', 'json'])) as { header: { revision: number } };
    t.ok(put.header.revision > 0, 'alice may write app/x');
    refused(t, ALICE, ['put', 'other', '1'], DENIED);
    refused(t, ALICE, ['get', '', '--from-key'], DENIED);
    refused(t, ALICE, ['get', 'k'], DENIED);
    refused(t, ALICE, ['del', 'k'], DENIED);
    t.equal(ok(t, ALICE, ['get', 'app/', '--prefix']), 'app/x\n1\n');
    // A txn reads the keys it compares: a put in app/ behind a compare on `other` is refused.
    const txn = ctl(ALICE, ['txn'], { input: 'value("other") = "1"\n\nput app/t yes\n\n\n' });
    t.same([txn.status, lastLine(txn.stderr)], [1, DENIED], 'txn comparing a key alice may not read');
    t.equal(ok(t, ROOT, ['get', 'app/t']), '', 'and nothing of it was applied');
    t.match(ok(t, ALICE, ['txn'], { input: 'value("app/x") = "1"\n\nput app/t yes\n\n\n' }), /^SUCCESS\n/, 'a txn within app/ is allowed');

    // A denied watch: created, then canceled with etcd's reason; etcdctl exits 5.
    const denied = await watch(ALICE, ['other'], 10_000);
    t.equal(denied.status, 5, `etcdctl watch other exits 5 ${denied.stderr}`);
    t.equal(denied.stderr.split('\n')[0], WATCH_DENIED);
    t.equal(denied.stdout, '');
    // An allowed watch from alice's put: its event comes (the watch then runs until killed).
    const allowed = await watch(ALICE, ['app/x', `--rev=${put.header.revision}`], 10_000, (out) => out.includes('PUT\napp/x\n1\n'));
    t.equal(allowed.stdout, 'PUT\napp/x\n1\n', `alice watches app/x ${allowed.stderr}`);

    t.equal(ok(t, ALICE, ['user', 'get', 'alice']), 'User: alice\nRoles: r\n', 'alice reads her own record');
    refused(t, ALICE, ['user', 'get', 'root'], DENIED);
    refused(t, ALICE, ['user', 'list'], DENIED);
    const roleR = 'Role r\nKV Read:\n\t[app/, app0) (prefix app/)\nKV Write:\n\t[app/, app0) (prefix app/)\n';
    t.equal(ok(t, ALICE, ['role', 'get', 'r']), roleR, 'alice reads the role she holds');
    t.equal(ok(t, ROOT, ['role', 'get', 'r']), roleR, 'root reads it alike');
    refused(t, ALICE, ['role', 'get', 'root'], DENIED);
    refused(t, ALICE, ['role', 'list'], DENIED);
    refused(t, ALICE, ['user', 'add', 'mallory:x'], DENIED);
    refused(t, ALICE, ['role', 'grant-permission', 'r', 'readwrite', '', '--from-key'], DENIED);
    refused(t, ALICE, ['auth', 'disable'], DENIED);

    // Member list and endpoint status are any caller's, as etcd's; administration needs root.
    const all = cluster.agents;
    for (const [who, as] of [['alice', ALICE], ['root', ROOT], ['no user', undefined]] as const) {
      const status = ok(t, as, ['endpoint', 'status'], { at: all });
      t.equal(status.trim().split('\n').length, 3, `${who}: endpoint status of every member ${status}`);
      t.equal((status.match(/, true, false,/g) ?? []).length, 1, `${who}: exactly one leader`);
      t.equal(ok(t, as, ['member', 'list']).trim().split('\n').length, 3, `${who} lists the members`);
    }
    refused(t, ALICE, ['compaction', String(put.header.revision)], DENIED);
    const hashkv = ctl(ALICE, ['endpoint', 'hashkv']);
    t.same([hashkv.status, hashkv.stdout], [1, ''], 'alice: endpoint hashkv fails');
    t.match(hashkv.stderr, /etcdserver: permission denied/);
    const defrag = ctl(ALICE, ['defrag']);
    t.same([defrag.status, defrag.stdout], [1, ''], 'alice: defrag fails');
    t.match(defrag.stderr, /^Failed to defragment etcd member\[.*\] \(etcdserver: permission denied\)$/m);
    const snapFile = join(cluster.root, 'alice.db');
    const snap = ctl(ALICE, ['snapshot', 'save', snapFile]);
    // etcdctl exits 5 (ExitInterrupted) for any failed snapshot save.
    t.same([snap.status, lastLine(snap.stderr)], [5, DENIED], 'alice: snapshot save fails');
    t.notOk(existsSync(snapFile), 'and writes no file');

    const wrong = ctl('alice:wrong', ['get', 'app/x']);
    t.same([wrong.status, wrong.stdout, lastLine(wrong.stderr)], [2, '', 'Error: etcdserver: authentication failed, invalid user ID or password'], 'a wrong password');
    const nobody = ctl('nobody:PW2', ['get', 'app/x']);
    t.equal(lastLine(nobody.stderr), 'Error: etcdserver: authentication failed, invalid user ID or password', 'an unknown user: the same answer');

    for (const a of all) {
      const r = await fetch(`http://${a.host}:${a.ports.client}/health`, { signal: AbortSignal.timeout(10_000) });
      t.same([r.status, await r.json()], [200, { health: 'true' }], `/health on ${a.name} with auth enabled`);
    }
  });

  t.test('a token issued by one member is good at the others (the gateway\'s Authorization header)', async (t) => {
    const [a, b, c] = [member(0), member(1), member(2)];
    aliceToken = await login(t, a, 'alice', 'PW2');
    const put = await gateway(b, '/v3/kv/put', { key: b64('app/y'), value: b64('from b') }, aliceToken);
    t.equal(put.status, 200, `put app/y at ${b.name} with ${a.name}'s token: ${JSON.stringify(put.json)}`);
    t.equal(ok(t, ROOT, ['get', 'app/y', '--print-value-only']), 'from b\n');
    const denied = await gateway(c, '/v3/kv/put', { key: 'eA==', value: b64('1') }, aliceToken);
    t.same(refusal(denied), PERMISSION_DENIED, `put x at ${c.name}: denied`);
    const range = await rangeApp(c, aliceToken);
    t.same([range.status, keysOf(range)], [200, ['app/t', 'app/x', 'app/y']], `range app/ at ${c.name}`);
    t.same(refusal(await gateway(c, '/v3/kv/put', { key: b64('app/y'), value: b64('1') })), [400, 'etcdserver: user name is empty', 3], 'no Authorization header');
    // The same signature over another user name: refused.
    const [, ...rest] = aliceToken.split('.');
    const forged = [Buffer.from('root').toString('base64url'), ...rest].join('.');
    t.same(refusal(await gateway(c, '/v3/kv/put', { key: 'eA==', value: b64('1') }, forged)), INVALID_TOKEN, 'a forged token');
    t.same(refusal(await gateway(c, '/v3/kv/range', { key: 'eA==' }, 'garbage')), INVALID_TOKEN, 'a malformed token');
    const bad = await gateway(b, '/v3/auth/authenticate', { name: 'alice', password: 'nope' });
    t.same(refusal(bad), [400, 'etcdserver: authentication failed, invalid user ID or password', 3], 'authenticate with a wrong password');
    // The auth routes with a token: alice may not manage users.
    t.same(refusal(await gateway(b, '/v3/auth/user/add', { name: 'mallory', password: 'x' }, aliceToken)), PERMISSION_DENIED, 'alice: /v3/auth/user/add');
    const userGet = await gateway(b, '/v3/auth/user/get', { name: 'alice' }, aliceToken);
    t.same([userGet.status, userGet.json.roles], [200, ['r']], 'alice: /v3/auth/user/get of herself');
  });

  t.test('permission changes apply at once to a token already issued', async (t) => {
    const a = member(0);
    t.equal(ok(t, ROOT, ['role', 'revoke-permission', 'r', 'app/', '--prefix']), 'Permission of range [app/, app0) is revoked from role r\n');
    refused(t, ALICE, ['put', 'app/z', '1'], DENIED);
    t.same(refusal(await rangeApp(a, aliceToken)), PERMISSION_DENIED, 'the token is still good (not "invalid auth token"), the range is denied');
    t.same(refusal(await gateway(a, '/v3/kv/put', { key: b64('app/z'), value: b64('1') }, aliceToken)), PERMISSION_DENIED, 'and so is a put');
    t.equal(ok(t, ROOT, ['role', 'get', 'r']), 'Role r\nKV Read:\nKV Write:\n');

    t.equal(ok(t, ROOT, ['role', 'grant-permission', 'r', 'read', 'app/', '--prefix']), 'Role r updated\n');
    const range = await rangeApp(a, aliceToken);
    t.same([range.status, keysOf(range)], [200, ['app/t', 'app/x', 'app/y']], 'read granted: the same token reads app/ again');
    t.same(refusal(await gateway(a, '/v3/kv/put', { key: b64('app/z'), value: b64('1') }, aliceToken)), PERMISSION_DENIED, 'but may not write');
    refused(t, ALICE, ['put', 'app/z', '1'], DENIED);
    t.equal(ok(t, ROOT, ['role', 'get', 'r']), 'Role r\nKV Read:\n\t[app/, app0) (prefix app/)\nKV Write:\n');

    // Roles: revoking the role takes every permission at once too.
    t.equal(ok(t, ROOT, ['user', 'revoke-role', 'alice', 'r']), 'Role r is revoked from user alice\n');
    t.same(refusal(await rangeApp(a, aliceToken)), PERMISSION_DENIED, 'role revoked: denied');
    t.equal(ok(t, ROOT, ['user', 'grant-role', 'alice', 'r']), 'Role r is granted to user alice\n');
    t.equal((await rangeApp(a, aliceToken)).status, 200, 'role granted again: allowed');
  });

  t.test('a password change, a user\'s re-creation, and auth switched off and on void the tokens issued before', async (t) => {
    const [a, b, c] = [member(0), member(1), member(2)];
    t.equal(ok(t, ROOT, ['user', 'passwd', 'alice', '--interactive=false'], { input: 'PW3\n' }), 'Password updated\n');
    t.same(refusal(await rangeApp(a, aliceToken)), INVALID_TOKEN, `alice's old token at ${a.name}`);
    for (const m of [b, c]) {
      // They apply the change a moment after the member it went through.
      const r = await until(`the old token refused at ${m.name}`, async () => {
        const r = await rangeApp(m, aliceToken);
        return r.status !== 200 && r;
      }, 5_000);
      t.same(refusal(r), INVALID_TOKEN, `alice's old token at ${m.name}`);
    }
    const wrong = ctl(ALICE, ['get', 'app/x']);
    t.same([wrong.status, lastLine(wrong.stderr)], [2, 'Error: etcdserver: authentication failed, invalid user ID or password'], 'the old password is refused');
    t.equal(ok(t, ALICE_NEW, ['get', 'app/x', '--print-value-only']), '1\n', 'the new one works');
    aliceToken = await login(t, b, 'alice', 'PW3');
    t.equal((await rangeApp(a, aliceToken)).status, 200, 'a token issued with the new password');

    // The /v3/auth routes, driven with root's token: a user deleted and added again under the
    // same name does not inherit the tokens of the first.
    const rootToken = await login(t, a, 'root', 'PW');
    const auth = async (path: string, body: object, token = rootToken): Promise<void> => {
      const r = await gateway(a, `/v3/auth/${path}`, body, token);
      t.equal(r.status, 200, `/v3/auth/${path} ${JSON.stringify(body)}: ${JSON.stringify(r.json)}`);
    };
    await auth('user/add', { name: 'bob', password: 'B1' });
    await auth('user/grant', { user: 'bob', role: 'r' });
    const bobToken = await login(t, a, 'bob', 'B1');
    t.equal((await rangeApp(a, bobToken)).status, 200, 'bob reads app/');
    await auth('user/delete', { name: 'bob' });
    t.same(refusal(await rangeApp(a, bobToken)), INVALID_TOKEN, 'bob deleted: his token is void');
    await auth('user/add', { name: 'bob', password: 'B1' });
    await auth('user/grant', { user: 'bob', role: 'r' });
    t.same(refusal(await rangeApp(a, bobToken)), INVALID_TOKEN, 'bob added again: the first bob\'s token stays void');
    t.equal((await rangeApp(a, await login(t, a, 'bob', 'B1'))).status, 200, 'a new login works');
    const status = await gateway(a, '/v3/auth/status', {}, rootToken);
    t.equal(status.json.enabled, true, '/v3/auth/status');

    t.equal(ok(t, ROOT, ['auth', 'disable']), 'Authentication Disabled\n');
    t.equal(ok(t, undefined, ['get', 'app/x', '--print-value-only']), '1\n', 'auth disabled: a request without a user works again');
    t.equal(ok(t, undefined, ['put', 'other', 'free']), 'OK\n', 'and may write anywhere');
    t.equal((await gateway(a, '/v3/kv/range', { key: b64('other') })).status, 200, 'the gateway without a token too');
    t.same(refusal(await gateway(a, '/v3/auth/authenticate', { name: 'root', password: 'PW' })), [412, 'etcdserver: authentication is not enabled', 9], 'no logins while disabled');
    t.equal(ok(t, ROOT, ['auth', 'enable']), 'Authentication Enabled\n');
    refused(t, undefined, ['get', 'app/x'], 'Error: etcdserver: user name is empty');
    t.same(refusal(await gateway(a, '/v3/kv/range', { key: b64('other') }, rootToken)), INVALID_TOKEN, 'root\'s token from before the disable is void');
    t.same(refusal(await rangeApp(a, aliceToken)), INVALID_TOKEN, 'and so is alice\'s');
    const fresh = await login(t, a, 'root', 'PW');
    t.equal((await gateway(a, '/v3/kv/range', { key: b64('other') }, fresh)).status, 200, 'a new root login works');
    aliceToken = await login(t, a, 'alice', 'PW3');
  });

  t.test('users and roles survive a member\'s restart; a token issued before it is good after', async (t) => {
    const [a, c] = [member(0), member(2)];
    t.equal(ok(t, ROOT, ['role', 'grant-permission', 'r', 'readwrite', 'app/', '--prefix']), 'Role r updated\n');
    // c stops with everything applied, so what it knows after the restart comes from its disk.
    const applied = (await raftStatus(a))?.applied ?? Infinity;
    await until(`${c.name} applied the grant`, async () => ((await raftStatus(c))?.applied ?? 0) >= applied, 5_000);
    cluster.kill(c, 'SIGTERM');
    t.equal(await cluster.exited(c), 0, `${c.name} stopped cleanly`);
    cluster.start(c, false);
    await cluster.ready(c);

    const attempts: string[] = [];
    const put = await until(`alice puts through ${c.name}`, () => {
      const r = ctl(ALICE_NEW, ['put', 'app/after-restart', 'v'], { at: [c] });
      if (r.status === 0 || /permission denied|authentication failed|user name is empty|invalid auth token/.test(r.stderr)) return r;
      attempts.push(lastLine(r.stderr));
      return undefined;
    }, 15_000);
    t.same([put.status, put.stdout], [0, 'OK\n'], `alice puts app/ through ${c.name} alone ${put.stderr} (${attempts.length} earlier attempts: ${attempts.join('; ')})`);
    refused(t, ALICE_NEW, ['put', 'other', 'x'], DENIED, { at: [c] });
    t.equal(ok(t, ROOT, ['user', 'list'], { at: [c] }), 'alice\nbob\nroot\n', `users at ${c.name}`);
    t.equal(ok(t, ALICE_NEW, ['role', 'get', 'r'], { at: [c] }), 'Role r\nKV Read:\n\t[app/, app0) (prefix app/)\nKV Write:\n\t[app/, app0) (prefix app/)\n', `role r at ${c.name}`);
    refused(t, undefined, ['get', 'app/x'], 'Error: etcdserver: user name is empty', { at: [c] });
    const range = await rangeApp(c, aliceToken);
    t.same([range.status, keysOf(range)], [200, ['app/after-restart', 'app/t', 'app/x', 'app/y']], `a token from ${a.name}, issued before the restart, at ${c.name}`);
  });

  t.test('the npm etcd3 client with a user and password', async (t) => {
    const hosts = cluster.agents.map((a) => `http://${a.host}:${a.ports.client}`);
    const client = new Etcd3({ hosts, auth: { username: 'alice', password: 'PW3' } });
    t.teardown(() => client.close());
    await client.put('app/js').value('from etcd3');
    t.equal(await client.get('app/js').string(), 'from etcd3');
    t.same(await client.getAll().prefix('app/').keys(), ['app/after-restart', 'app/js', 'app/t', 'app/x', 'app/y']);
    const denied = await client.put('other').value('x').then(
      () => undefined,
      (e: unknown) => e,
    );
    t.type(denied, EtcdPermissionDeniedError, 'a put to `other` is denied');
    t.match((denied as Error | undefined)?.message, /etcdserver: permission denied/);
    t.equal(await client.get('other').string().catch((e: unknown) => (e instanceof EtcdPermissionDeniedError ? 'denied' : `${e}`)), 'denied', 'and so is a read of it');
    t.equal(ok(t, ROOT, ['get', 'other', '--print-value-only']), 'free\n', 'other is unchanged');

    const wrong = new Etcd3({ hosts, auth: { username: 'alice', password: 'PW2' } });
    t.teardown(() => wrong.close());
    const failed = await wrong.get('app/js').string().then(
      () => undefined,
      (e: unknown) => e,
    );
    t.type(failed, EtcdAuthenticationFailedError, 'the old password: authentication failed');
  });
}
