// etcd's auth state as a replicated state machine: the rules of users, roles and root, the
// permission check over key ranges, the check again at apply, and the image that snapshots and
// the applied-state store carry (fuzzed: a bad image is refused, never half-loaded).
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { assertProperty } from '../helpers/property.js';
import { AuthState, PermType, type AuthRequest } from '../../core/kv/auth.js';
import { KvError } from '../../core/kv/errors.js';
import { decodeKvRequest, encodeKvRequest } from '../../core/kv/codec.js';
import { checkRequestPermission, clientRequest } from '../../core/kv/permissions.js';
import { readSnapshot } from '../../core/kv/snapshot.js';
import { KvStore } from '../../core/kv/store.js';
import { MvccBackend } from '../../core/storage/mvcc-backend.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { b } from './helpers.js';

const PW = b('scrypt$14$8$1$c2FsdA==$aGFzaA==');

function refusedWith(t: Test, fn: () => unknown, code: string, what: string): void {
  t.throws(fn, { name: 'KvError', code }, `${what}: ${code}`);
}

/** A state with root (root role), role r and user alice holding r. */
function withUsers(): AuthState {
  const a = new AuthState();
  const ops: AuthRequest[] = [
    { userAdd: { name: 'root', password: PW } },
    { userGrantRole: { name: 'root', role: 'root' } },
    { roleAdd: { name: 'r' } },
    { userAdd: { name: 'alice', password: PW } },
    { userGrantRole: { name: 'alice', role: 'r' } },
  ];
  for (const op of ops) a.apply(op);
  return a;
}

/** Root with the root role, role r granted one permission, `user` holding r, then auth on. */
function enabledWith(permType: number, key: string, rangeEnd: string, user: { name: string; password?: Uint8Array; noPassword?: boolean }): AuthRequest[] {
  return [
    { userAdd: { name: 'root', password: PW } },
    { userGrantRole: { name: 'root', role: 'root' } },
    { roleAdd: { name: 'r' } },
    { roleGrantPermission: { name: 'r', permType, key: b(key), rangeEnd: b(rangeEnd) } },
    { userAdd: user },
    { userGrantRole: { name: user.name, role: 'r' } },
    { authEnable: {} },
  ];
}

/** Applies requests to `store` as consecutive Raft entries. */
function storeApplier(store: KvStore): (req: Parameters<KvStore['apply']>[0]) => ReturnType<KvStore['apply']> {
  let index = 0;
  return (req) => store.apply(req, { index: ++index, term: 1 });
}

const grant = (a: AuthState, permType: number, key: string, rangeEnd = ''): void => {
  a.apply({ roleGrantPermission: { name: 'r', permType, key: b(key), rangeEnd: b(rangeEnd) } });
};

t.test('enable needs root with the root role; root is protected while enabled', async (t) => {
  const a = new AuthState();
  refusedWith(t, () => a.apply({ authEnable: {} }), 'ROOT_USER_NOT_EXIST', 'no root user');
  a.apply({ userAdd: { name: 'root', password: PW } });
  refusedWith(t, () => a.apply({ authEnable: {} }), 'ROOT_ROLE_NOT_EXIST', 'root without the root role');
  t.equal(a.enabled, false, 'still off after the refusals');
  const before = a.revision;
  a.apply({ userGrantRole: { name: 'root', role: 'root' } }); // the root role needs no role object
  a.apply({ authEnable: {} });
  t.equal(a.enabled, true);
  t.equal(a.enabledRevision, a.revision, 'tokens from before the enable are void');
  t.ok(a.revision > before, 'each change moves the auth revision');
  refusedWith(t, () => a.apply({ userDelete: { name: 'root' } }), 'INVALID_AUTH_MGMT', 'deleting root while enabled');
  refusedWith(t, () => a.apply({ userRevokeRole: { name: 'root', role: 'root' } }), 'INVALID_AUTH_MGMT', 'revoking root from root');
  a.apply({ roleAdd: { name: 'root' } });
  refusedWith(t, () => a.apply({ roleDelete: { name: 'root' } }), 'INVALID_AUTH_MGMT', 'deleting the root role');
  const rev = a.revision;
  a.apply({ authEnable: {} });
  t.equal(a.revision, rev, 'enabling again changes nothing');
  a.apply({ authDisable: {} });
  a.apply({ userRevokeRole: { name: 'root', role: 'root' } });
  t.same(a.user('root')!.roles, [], 'while disabled, root may lose the root role');
});

t.test('users and roles: etcd errors, sorted roles, deletion strips a role from its users', async (t) => {
  const a = withUsers();
  refusedWith(t, () => a.apply({ userAdd: { name: '', password: PW } }), 'USER_EMPTY', 'empty user name');
  refusedWith(t, () => a.apply({ userAdd: { name: 'alice', password: PW } }), 'USER_ALREADY_EXIST', 'existing user');
  refusedWith(t, () => a.apply({ userAdd: { name: 'bob' } }), 'PASSWORD_EMPTY', 'no password and not --no-password');
  a.apply({ userAdd: { name: 'svc', noPassword: true } });
  t.equal(a.user('svc')!.noPassword, true);
  refusedWith(t, () => a.apply({ roleAdd: { name: '' } }), 'ROLE_EMPTY', 'empty role name');
  refusedWith(t, () => a.apply({ roleAdd: { name: 'r' } }), 'ROLE_ALREADY_EXIST', 'existing role');
  refusedWith(t, () => a.apply({ userGrantRole: { name: 'nobody', role: 'r' } }), 'USER_NOT_FOUND', 'grant to an unknown user');
  refusedWith(t, () => a.apply({ userGrantRole: { name: 'alice', role: 'nope' } }), 'ROLE_NOT_FOUND', 'grant of an unknown role');
  refusedWith(t, () => a.apply({ userRevokeRole: { name: 'alice', role: 'root' } }), 'ROLE_NOT_GRANTED', 'revoke of a role not held');
  a.apply({ roleAdd: { name: 'a-first' } });
  a.apply({ userGrantRole: { name: 'alice', role: 'a-first' } });
  const rev = a.revision;
  a.apply({ userGrantRole: { name: 'alice', role: 'a-first' } });
  t.equal(a.revision, rev, 'granting a held role is a no-op, as in etcd');
  t.same(a.user('alice')!.roles, ['a-first', 'r'], 'roles kept sorted');
  a.apply({ roleDelete: { name: 'r' } });
  t.same(a.user('alice')!.roles, ['a-first'], 'a deleted role is taken from its users');
  t.same(a.userNames(), ['alice', 'root', 'svc']);
  const cred = a.user('alice')!.credentialRevision;
  a.apply({ userChangePassword: { name: 'alice', password: b('other') } });
  t.ok(a.user('alice')!.credentialRevision > cred, 'a password change voids older tokens');
  t.same(a.user('alice')!.roles, ['a-first'], 'and keeps the roles');
});

t.test('empty names through the Raft log (whose canonical form leaves empty strings out) are refused as etcd refuses them', async (t) => {
  const a = withUsers();
  const viaLog = (req: AuthRequest): AuthRequest => (decodeKvRequest(encodeKvRequest({ auth: req })) as { auth: AuthRequest }).auth;
  refusedWith(t, () => a.apply(viaLog({ roleAdd: { name: '' } })), 'ROLE_EMPTY', 'role add ""');
  refusedWith(t, () => a.apply(viaLog({ userAdd: { name: '', password: PW } })), 'USER_EMPTY', 'user add ""');
  refusedWith(t, () => a.apply(viaLog({ userGrantRole: { name: 'alice', role: '' } })), 'ROLE_NOT_FOUND', 'user grant-role alice ""');
  refusedWith(t, () => a.apply(viaLog({ userRevokeRole: { name: 'alice', role: '' } })), 'ROLE_NOT_GRANTED', 'user revoke-role alice ""');
  refusedWith(t, () => a.apply(viaLog({ roleDelete: { name: '' } })), 'ROLE_NOT_FOUND', 'role delete ""');
  refusedWith(t, () => a.apply(viaLog({ roleGrantPermission: { name: '', permType: PermType.READ, key: b('k'), rangeEnd: new Uint8Array() } })), 'ROLE_NOT_FOUND', 'role grant-permission "" read k');
  refusedWith(t, () => a.apply(viaLog({ roleRevokePermission: { name: '', key: b('k'), rangeEnd: new Uint8Array() } })), 'ROLE_NOT_FOUND', 'role revoke-permission "" k');
  t.notOk(a.roleNames().includes('undefined'), 'no role named "undefined"');
});

t.test('grants as etcd makes them: compared with the first permission of their key, ordered by key as granted', async (t) => {
  const a = withUsers();
  const held = (): string[] => a.role('r')!.permissions.map((p) => `${p.permType}:${Buffer.from(p.key)}:${JSON.stringify(Buffer.from(p.rangeEnd).toString())}`);
  grant(a, PermType.READ, 'k');
  grant(a, PermType.READ, 'k', '\0');
  grant(a, PermType.READ, 'b', 'c');
  t.same(held(), ['0:b:"c"', '0:k:""', '0:k:"\\u0000"'], 'by key; those of one key in the order granted');
  grant(a, PermType.WRITE, 'k', '\0');
  t.same(held(), ['0:b:"c"', '0:k:""', '0:k:"\\u0000"', '1:k:"\\u0000"'], 'a range of k behind k itself is not found: held twice, as in etcd');
  grant(a, PermType.READWRITE, 'k');
  t.same(held(), ['0:b:"c"', '2:k:""', '0:k:"\\u0000"', '1:k:"\\u0000"'], 'the first permission of k, same end: its type replaced in place');
  const copy = new AuthState();
  copy.load(a.image());
  t.same(copy.role('r')!.permissions, a.role('r')!.permissions, 'the image keeps the order and both copies');
  a.apply({ roleRevokePermission: { name: 'r', key: b('k'), rangeEnd: b('\0') } });
  t.same(held(), ['0:b:"c"', '2:k:""'], 'a revoke removes every copy');
  refusedWith(t, () => a.apply({ roleRevokePermission: { name: 'r', key: b('k'), rangeEnd: b('\0') } }), 'PERMISSION_NOT_GRANTED', 'then none is left');
});

t.test('permissions: the union of a user\'s grants must cover the whole range', async (t) => {
  const a = withUsers();
  a.apply({ authEnable: {} });
  const may = (write: boolean, key: string, rangeEnd?: string): boolean => {
    try {
      a.checkKeys('alice', write, b(key), rangeEnd === undefined ? undefined : b(rangeEnd));
      return true;
    } catch (e) {
      if (e instanceof KvError && e.code === 'PERMISSION_DENIED') return false;
      throw e;
    }
  };
  t.notOk(may(false, 'app/x'), 'nothing granted: denied');
  grant(a, PermType.READWRITE, 'app/', 'app0'); // --prefix app/
  t.ok(may(true, 'app/x') && may(false, 'app/x'), 'a key under the prefix');
  t.ok(may(false, 'app/', 'app0'), 'the prefix itself');
  t.notOk(may(false, 'app/', 'app1'), 'a range reaching past the grant');
  t.notOk(may(false, 'app', 'app0'), 'a range starting before it');
  t.notOk(may(false, '', '\0'), 'every key');
  t.notOk(may(false, 'app/', '\0'), 'from-key beyond the grant');
  t.notOk(may(false, 'app0'), 'the first key after the prefix');
  t.notOk(may(false, 'app/z', 'app/a'), 'an inverted range names no key to allow');
  grant(a, PermType.READ, 'app0', 'app5');
  t.ok(may(false, 'app/', 'app5'), 'adjacent grants join');
  t.notOk(may(true, 'app/', 'app5'), 'but not for writes (the second is read-only)');
  grant(a, PermType.WRITE, 'single');
  t.ok(may(true, 'single') && !may(false, 'single'), 'a write-only single key');
  t.notOk(may(true, 'single0') || may(true, 'singl'), 'a single key grants nothing around it');
  grant(a, PermType.READ, 'single');
  t.ok(may(false, 'single') && !may(true, 'single'), 'granting the same key and end again replaces the type');
  grant(a, PermType.READ, 'z', '\0');
  t.ok(may(false, 'zzz', '\0') && may(false, '\xff\xff'), 'from-key grants reach the end');
  a.apply({ roleRevokePermission: { name: 'r', key: b('z'), rangeEnd: b('\0') } });
  t.notOk(may(false, 'zzz'), 'revoked');
  refusedWith(t, () => a.apply({ roleRevokePermission: { name: 'r', key: b('app/') } }), 'PERMISSION_NOT_GRANTED', 'revoke needs the exact key and end');
  refusedWith(t, () => grant(a, PermType.READ, ''), 'INVALID_AUTH_MGMT', 'a grant with no key');
  refusedWith(t, () => grant(a, PermType.READ, 'b', 'a'), 'INVALID_AUTH_MGMT', 'a grant of an empty range');
  refusedWith(t, () => grant(a, 7, 'k'), 'MALFORMED_REQUEST', 'an unknown permission type');
  refusedWith(t, () => a.checkKeys(undefined, false, b('app/x')), 'USER_EMPTY', 'no user');
  refusedWith(t, () => a.checkKeys('ghost', false, b('app/x')), 'PERMISSION_DENIED', 'an unknown user');
  t.doesNotThrow(() => a.checkKeys('root', true, b('a'), b('\0')), 'root may write every key');
  refusedWith(t, () => a.checkAdmin('alice'), 'PERMISSION_DENIED', 'alice is not admin');
  a.apply({ authDisable: {} });
  t.ok(may(true, 'anything'), 'auth off: everything allowed');
});

t.test('what each request needs (permissions.ts)', async (t) => {
  const a = withUsers();
  a.apply({ authEnable: {} });
  grant(a, PermType.READWRITE, 'rw/', 'rw0');
  grant(a, PermType.WRITE, 'wo/', 'wo0');
  const leases = new Map<number, Uint8Array[]>([[7, [b('rw/a')]], [8, [b('other')]]]);
  const allowed = (req: Parameters<typeof checkRequestPermission>[2]): boolean | string => {
    try {
      checkRequestPermission(a, 'alice', req, (id) => leases.get(id) ?? []);
      return true;
    } catch (e) {
      return e instanceof KvError ? e.code : String(e);
    }
  };
  t.equal(allowed({ put: { key: b('wo/x') } }), true, 'a put needs write only');
  t.equal(allowed({ put: { key: b('wo/x'), prevKv: true } }), 'PERMISSION_DENIED', 'prev_kv also reads');
  t.equal(allowed({ put: { key: b('rw/x'), lease: 7 } }), true, 'joining a lease whose keys we may write');
  t.equal(allowed({ put: { key: b('rw/x'), lease: 8 } }), 'PERMISSION_DENIED', 'joining a lease holding a key we may not write');
  t.equal(allowed({ deleteRange: { key: b('wo/'), rangeEnd: b('wo0') } }), true);
  t.equal(allowed({ deleteRange: { key: b('wo/'), rangeEnd: b('wo0'), prevKv: true } }), 'PERMISSION_DENIED');
  t.equal(allowed({ range: { key: b('wo/x') } }), 'PERMISSION_DENIED', 'write-only is not readable');
  const nested = (op: object) => ({ txn: { success: [{ requestTxn: { failure: [op] } }] } });
  t.equal(allowed(nested({ requestRange: { key: b('rw/x') } })), true);
  t.equal(allowed(nested({ requestRange: { key: b('secret') } })), 'PERMISSION_DENIED', 'a nested txn is checked (etcd 3.4.23 was not)');
  t.equal(allowed({ txn: { compare: [{ key: b('wo/x') }], success: [] } }), 'PERMISSION_DENIED', 'compares read');
  t.equal(allowed({ txn: { failure: [{ requestPut: { key: b('secret') } }] } }), 'PERMISSION_DENIED', 'both branches are checked');
  t.equal(allowed({ leaseRevoke: { ID: 7 } }), true, 'revoking a lease whose keys we may write');
  t.equal(allowed({ leaseRevoke: { ID: 8 } }), 'PERMISSION_DENIED', 'but not one holding another key');
  t.equal(allowed({ leaseGrant: { TTL: 5 } }), true, 'granting a lease needs a user only');
  t.equal(allowed({ compaction: { revision: 1 } }), 'PERMISSION_DENIED', 'compaction is admin-only');
  t.equal(allowed({ auth: { roleAdd: { name: 'x' } } }), 'PERMISSION_DENIED', 'auth changes are admin-only');
});

t.test('the store checks a client request again when it is applied', async (t) => {
  const store = new KvStore();
  const apply = storeApplier(store);
  const ops = enabledWith(PermType.READWRITE, 'app/', 'app0', { name: 'alice', password: PW });
  for (const op of ops) t.ok('auth' in apply({ auth: op }), `applied ${Object.keys(op)[0]}`);
  const asClient = (req: Parameters<KvStore['apply']>[0], user?: string) => apply(clientRequest(req, user));
  t.ok('put' in asClient({ put: { key: b('app/1'), value: b('v') } }, 'alice'), 'allowed at apply');
  const revision = store.revision;
  // Permission revoked by an entry ordered before alice's next put: the put must fail, unapplied.
  asClient({ auth: { roleRevokePermission: { name: 'r', key: b('app/'), rangeEnd: b('app0') } } }, 'root');
  const denied = asClient({ put: { key: b('app/2'), value: b('v') } }, 'alice');
  t.equal('error' in denied && denied.error.code, 'PERMISSION_DENIED', 'denied at apply');
  t.equal(store.revision, revision, 'and nothing written');
  const notAdmin = asClient({ auth: { roleAdd: { name: 'x' } } }, 'alice');
  t.equal('error' in notAdmin && notAdmin.error.code, 'PERMISSION_DENIED', 'auth change by a non-admin refused at apply');
  // Checked where it entered with auth off there (a member that had not applied the enable yet):
  // no user, refused at apply, whatever it is.
  for (const req of [
    { put: { key: b('app/4'), value: b('v') } },
    { auth: { userGrantRole: { name: 'alice', role: 'root' } } },
    { leaseGrant: { TTL: 60 } },
    { compaction: { revision: 1 } },
  ]) {
    const r = asClient(req);
    t.equal('error' in r && r.error.code, 'USER_EMPTY', `a client's ${Object.keys(req)[0]} without a user is refused at apply`);
  }
  t.same(store.auth.user('alice')!.roles, ['r'], 'alice did not get the root role');
  t.equal(store.revision, revision, 'and nothing was written');
  t.ok('put' in apply({ put: { key: b('app/3'), value: b('v') } }), "the members' own requests (not a client's) are not checked");
  const refused = asClient({ auth: { userDelete: { name: 'nobody' } } }, 'root');
  t.equal('error' in refused && refused.error.code, 'USER_NOT_FOUND', 'a refused change is an error outcome, not a throw');
});

t.test('the image: round trip through snapshots and the applied-state store; bad images refused', async (t) => {
  const store = new KvStore();
  const apply = storeApplier(store);
  for (const op of enabledWith(PermType.READ, 'a', '\0', { name: 'svc', noPassword: true })) apply({ auth: op });
  apply({ put: { key: b('k'), value: b('v') } });
  const want = store.auth.describe();

  const chunks: Uint8Array[] = [];
  for await (const c of store.snapshot()) chunks.push(c);
  const copy = new KvStore();
  await copy.restore(chunks);
  t.equal(copy.auth.describe(), want, 'a snapshot carries users, roles, grants and the switch');
  t.equal(copy.digest(), store.digest(), 'and the digests agree');

  const dir = await mkdtemp(join(tmpdir(), 'picloud-auth-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const backend = await MvccBackend.open(dir);
  backend.store.apply({ auth: { userAdd: { name: 'root', password: PW } } }, { index: 1, term: 1 });
  await backend.persist({ sync: true });
  backend.store.apply({ auth: { userGrantRole: { name: 'root', role: 'root' } } }, { index: 2, term: 1 });
  backend.store.apply({ auth: { authEnable: {} } }, { index: 3, term: 1 });
  await backend.persist({ sync: true });
  const persisted = backend.store.auth.describe();
  await backend.close();
  const reopened = await MvccBackend.open(dir);
  t.equal(reopened.store.auth.describe(), persisted, 'the applied-state store keeps the auth state across a restart');
  t.equal(reopened.store.auth.enabled, true);
  await reopened.store.restore(chunks); // a snapshot install then rewrites everything
  await reopened.persist({ sync: true });
  await reopened.close();
  const again = await MvccBackend.open(dir);
  t.equal(again.store.auth.describe(), want, 'a full rewrite writes the installed auth state');
  await again.close();

  const good = store.auth.image();
  const bad: Array<[unknown, string]> = [
    [{ ...good, enabled: 'yes' }, 'enabled not a boolean'],
    [{ ...good, revision: -1 }, 'negative revision'],
    [{ ...good, users: [['', PW, false, 1, []]] }, 'empty user name'],
    [{ ...good, users: [...good.users, good.users[0]] }, 'a user twice'],
    [{ ...good, users: [['u', 'pw', false, 1, []]] }, 'password not bytes'],
    [{ ...good, roles: [['r', [[3, b('a'), b('')]]]] }, 'unknown permission type'],
    [{ ...good, roles: [['r', [[0, 'a', b('')]]]] }, 'key not bytes'],
    [[], 'not a map'],
  ];
  for (const [img, why] of bad) {
    const s = new AuthState();
    s.apply({ roleAdd: { name: 'keep' } });
    refusedWith(t, () => s.load(img), 'SNAPSHOT_CORRUPT', why);
    t.same(s.roleNames(), ['keep'], `${why}: the state is left as it was`);
  }
  assertProperty(
    t,
    'any value loads or is refused with SNAPSHOT_CORRUPT, never anything else',
    fc.property(fc.anything({ withTypedArray: true }), fc.nat(), (junk, which) => {
      const candidates = [junk, { ...good, users: junk }, { ...good, roles: junk }, { ...good, users: [junk] }, { ...good, roles: [[`r`, [junk]]] }];
      try {
        new AuthState().load(candidates[which % candidates.length]);
      } catch (e) {
        if (!(e instanceof KvError && e.code === 'SNAPSHOT_CORRUPT')) throw e;
      }
    }),
    { numRuns: 2000, seed: 11 },
  );
  // readSnapshot refuses a snapshot whose auth frame is bad (before anything is installed).
  const target = new KvStore();
  const tampered = await tamperAuthFrame(chunks);
  await t.rejects(readSnapshot([tampered]), { code: 'SNAPSHOT_CORRUPT' }, 'a snapshot with a bad auth frame is refused');
  t.equal(target.auth.userNames().length, 0);
});

/** The snapshot with its auth frame's `enabled` turned into a string and its checksum made right. */
async function tamperAuthFrame(chunks: Uint8Array[]): Promise<Buffer> {
  const { Decoder, Encoder } = await import('cbor-x');
  const { createHash } = await import('node:crypto');
  const dec = new Decoder({ useRecords: false, mapsAsObjects: true });
  const enc = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
  const all = Buffer.concat(chunks);
  const frames: Buffer[] = [];
  for (let o = 0; o < all.length; ) {
    const len = all.readUInt32BE(o);
    frames.push(all.subarray(o + 4, o + 4 + len));
    o += 4 + len;
  }
  const out: Buffer[] = [];
  const hash = createHash('sha256');
  for (const f of frames) {
    let v = dec.decode(f) as Record<string, unknown>;
    if (v.t === 'a') v = { ...v, a: { ...(v.a as object), enabled: 'yes' } };
    if (v.t === 'e') v = { ...v, sha256: hash.copy().digest() };
    const body = enc.encode(v);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    if (v.t !== 'e') {
      hash.update(len);
      hash.update(body);
    }
    out.push(len, body);
  }
  return Buffer.concat(out);
}
