// Password hashes and auth tokens of the etcd API (core/api/credentials.ts).
import t from 'tap';
import fc from 'fast-check';
import { assertProperty } from '../helpers/property.js';
import { scryptSync } from 'node:crypto';
import { AuthTokens, MAX_WAITING_HASHES, MAX_WAITING_HASHES_PER_CLIENT, clientAddress, hashPassword, verifyPassword } from '../../core/api/credentials.js';

t.test('passwords: scrypt hashes with a salt each, checked in constant time', async (t) => {
  const h1 = await hashPassword('correct horse');
  const h2 = await hashPassword('correct horse');
  t.match(h1.toString(), /^scrypt\$14\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/, 'self-describing form');
  t.not(h1.toString(), h2.toString(), 'a fresh salt each time');
  t.equal(await verifyPassword('correct horse', h1), true, 'the password matches');
  t.equal(await verifyPassword('correct horse', h2), true, 'and matches the other hash too');
  t.equal(await verifyPassword('correct hors', h1), false, 'another password does not');
  t.equal(await verifyPassword('', h1), false, 'nor the empty one');
  const unicode = await hashPassword('pässwörd 🔑');
  t.equal(await verifyPassword('pässwörd 🔑', unicode), true, 'UTF-8 passwords');
  for (const [bad, why] of [
    [Buffer.alloc(0), 'empty (a user without a password)'],
    [Buffer.from('bcrypt$10$abc'), 'another scheme'],
    [Buffer.from('scrypt$40$8$1$AAAA$AAAA'), 'a cost beyond the bound (would exhaust memory)'],
    [Buffer.from(h1.toString().replace(/\$[^$]+$/, '$AAAA')), 'a truncated hash'],
  ] as const) {
    t.equal(await verifyPassword('correct horse', bad), false, `unreadable hash refused: ${why}`);
  }
});

t.test('password checks wait in a bounded queue, of which each client has a share (one runs at a time: not observable here)', async (t) => {
  // A cheap stored hash (2^10), so the burst takes milliseconds.
  const salt = Buffer.alloc(16, 1);
  const cheap = Buffer.from(`scrypt$10$8$1$${salt.toString('base64')}$${scryptSync('pw', salt, 32, { N: 1024, r: 8, p: 1 }).toString('base64')}`);
  const extra = 5;
  const results = await Promise.allSettled(Array.from({ length: MAX_WAITING_HASHES + extra }, (_, i) => verifyPassword('pw', cheap, `10.0.${i >> 8}.${i & 255}`)));
  const refused = results.filter((r) => r.status === 'rejected');
  t.equal(refused.length, extra, `beyond ${MAX_WAITING_HASHES} waiting, checks are refused`);
  t.match(String((refused[0] as PromiseRejectedResult).reason), /etcdserver: too many requests/);
  t.ok(results.slice(0, MAX_WAITING_HASHES).every((r) => r.status === 'fulfilled' && r.value === true), 'the others all complete');
  t.equal(await verifyPassword('pw', cheap), true, 'and the queue is free again');

  // One client's share: it cannot fill the queue for the others.
  const mine = Array.from({ length: MAX_WAITING_HASHES_PER_CLIENT + 3 }, () => verifyPassword('pw', cheap, '10.9.9.9'));
  const theirs = verifyPassword('pw', cheap, '10.1.1.1');
  const [a, b] = await Promise.all([Promise.allSettled(mine), theirs]);
  const refusedMine = a.filter((r) => r.status === 'rejected');
  t.equal(refusedMine.length, 3, `one client gets ${MAX_WAITING_HASHES_PER_CLIENT} checks waiting at once, the rest refused`);
  t.match(String((refusedMine[0] as PromiseRejectedResult).reason), /too many password checks waiting from this client/);
  t.equal(b, true, "another client's check goes through meanwhile");
  t.same(
    ['ipv4:10.0.0.5:51234', 'ipv6:[::1]:5', '10.0.0.5:51234', '::ffff:10.0.0.5:7', 'ipv6:[fe80::1]:80', 'unknown'].map(clientAddress),
    ['10.0.0.5', '::/64', '10.0.0.5', '10.0.0.5', 'fe80::/64', 'unknown'],
    'the address of a gRPC or gateway peer; an IPv6 one by its /64',
  );
  t.same(
    ['ipv6:[2001:db8:1:2::9]:443', '2001:db8:1:2:aaaa:bbbb:cccc:dddd:51000', 'ipv6:[2001:db8:1:3::9]:443'].map(clientAddress),
    ['2001:db8:1:2::/64', '2001:db8:1:2::/64', '2001:db8:1:3::/64'],
    'addresses of one /64 share one share; the next /64 has its own',
  );
});

t.test('tokens: signed, expiring, sliding on use, never accepted when altered', async (t) => {
  let now = 1_000_000_000_000;
  const key = Buffer.alloc(32, 7);
  const tokens = new AuthTokens(key, 300, () => now);
  const other = new AuthTokens(key, 300, () => now); // another manager holding the same cluster key
  const tok = tokens.issue('alice', 42);
  t.same(tokens.verify(tok), { user: 'alice', revision: 42 }, 'good where issued');
  t.same(other.verify(tok), { user: 'alice', revision: 42 }, 'and at another member');
  t.equal(new AuthTokens(Buffer.alloc(32, 8), 300, () => now).verify(tok), undefined, 'not in another cluster');
  const [u, rev, exp, mac] = tok.split('.') as [string, string, string, string];
  t.equal(tokens.verify(`${Buffer.from('root').toString('base64url')}.${rev}.${exp}.${mac}`), undefined, 'another user name breaks the signature');
  t.equal(tokens.verify(`${u}.${Number(rev) + 1}.${exp}.${mac}`), undefined, 'a changed revision breaks it');
  t.equal(tokens.verify(`${u}.${rev}.${Number(exp) + 3600}.${mac}`), undefined, 'a later expiry breaks it');
  t.equal(tokens.verify(`${u}.${rev}.${exp}`), undefined, 'no signature');
  t.equal(tokens.verify(tok + 'x'.repeat(5000)), undefined, 'an overlong token');

  now += 299_000;
  t.ok(tokens.verify(tok), 'used just before it expires');
  now += 200_000; // 499 s after issue, 200 s after its last use here
  t.ok(tokens.verify(tok), 'still good here: each use extends it (as etcd tokens slide)');
  t.equal(other.verify(tok), undefined, 'but expired at a member that has not seen it used');
  now += 301_000;
  t.equal(tokens.verify(tok), undefined, 'unused for longer than the TTL: expired');

  assertProperty(
    t,
    'arbitrary strings are refused (never thrown on)',
    fc.property(fc.string({ maxLength: 200 }), (s) => tokens.verify(s) === undefined),
    { numRuns: 2000, seed: 5 },
  );
  assertProperty(
    t,
    'any one-character change of a good token is refused',
    fc.property(fc.nat(), fc.integer({ min: 32, max: 126 }), (pos, code) => {
      const fresh = tokens.issue('bob', 3);
      const i = pos % fresh.length;
      const changed = fresh.slice(0, i) + String.fromCharCode(code) + fresh.slice(i + 1);
      return changed === fresh || tokens.verify(changed) === undefined;
    }),
    { numRuns: 2000, seed: 6 },
  );
});
