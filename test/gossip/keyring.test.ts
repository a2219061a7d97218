/**
 * The keyring: HKDF derivation from the cluster secret, AES-256-GCM sealing, rotation
 * (install / use / remove) and its refusals, persistence format, and the replay cache.
 */
import { assertProperty } from '../helpers/property.js';
import t from 'tap';
import fc from 'fast-check';
import { Keyring, ReplayCache, deriveGossipKey, generateKey, keyFingerprint, parseKey } from '../../core/gossip/keyring/index.js';
import { KEY_BYTES, MAX_KEYS, SEAL_OVERHEAD_BYTES } from '../../core/gossip/limits.js';

t.test('the key derives deterministically from the secret', async (t) => {
  t.same(deriveGossipKey('s'), deriveGossipKey('s'));
  t.notSame(deriveGossipKey('s'), deriveGossipKey('t'));
  t.equal(deriveGossipKey('s').length, KEY_BYTES);
  t.throws(() => deriveGossipKey(''), { code: 'GOSSIP_KEY_INVALID' });
  t.match(keyFingerprint(deriveGossipKey('s')), /^[0-9a-f]{8}$/);
});

t.test('seal/open round-trips and adds exactly SEAL_OVERHEAD_BYTES', async (t) => {
  const ring = Keyring.fromSecret('cluster');
  assertProperty(t, 'open(seal(p)) == p and the size grows by exactly SEAL_OVERHEAD_BYTES', 
    fc.property(fc.uint8Array({ maxLength: 1500 }), fc.constantFrom('udp' as const, 'tcp' as const), (p, kind) => {
      const sealed = ring.seal(p, kind);
      return sealed.length === p.length + SEAL_OVERHEAD_BYTES && Buffer.from(p).equals(ring.open(sealed, kind)!);
    }),
    { numRuns: 200 },
  );
});

t.test('wrong key, tampering, truncation and the wrong kind all fail to open', async (t) => {
  const a = Keyring.fromSecret('a');
  const b = Keyring.fromSecret('b');
  const sealed = a.seal(Buffer.from('hello gossip'), 'udp');
  t.equal(b.open(sealed, 'udp'), null, 'wrong key');
  t.equal(a.open(sealed, 'tcp'), null, 'a UDP packet is not a stream frame');
  t.equal(a.open(sealed.subarray(0, sealed.length - 1), 'udp'), null, 'truncated');
  t.equal(a.open(sealed.subarray(0, 5), 'udp'), null, 'shorter than the overhead');
  fc.assert(
    fc.property(fc.nat(), fc.integer({ min: 1, max: 255 }), (at, xor) => {
      const x = Buffer.from(sealed);
      x[at % x.length]! ^= xor;
      return a.open(x, 'udp') === null;
    }),
    { numRuns: 300 },
  );
});

t.test('rotation: install, use, remove — without losing what is in flight', async (t) => {
  const old = Keyring.fromSecret('old');
  const peer = Keyring.fromSecret('old');
  const next = generateKey();
  old.install(next);
  peer.install(next);
  const sealedWithOld = old.seal(Buffer.from('x'), 'udp');
  old.use(next);
  t.equal(old.primaryKey(), next);
  t.ok(peer.open(old.seal(Buffer.from('y'), 'udp'), 'udp'), 'a peer that installed the key opens the new primary');
  t.ok(old.open(sealedWithOld, 'udp'), 'the old key is still accepted until removed');
  const oldKey = old.list()[1]!;
  old.remove(oldKey);
  t.equal(old.open(sealedWithOld, 'udp'), null, 'after remove the old key is refused');
  t.throws(() => old.remove(next), { code: 'GOSSIP_KEY_IS_PRIMARY' });
  t.throws(() => old.use(generateKey()), { code: 'GOSSIP_KEY_NOT_FOUND' });
  t.throws(() => old.remove(generateKey()), { code: 'GOSSIP_KEY_NOT_FOUND' });
  old.install(next);
  t.equal(old.list().length, 1, 'install is idempotent');
});

t.test('parseKey refuses anything but base64 of 32 bytes', async (t) => {
  t.throws(() => parseKey('abc'), { code: 'GOSSIP_KEY_INVALID' });
  t.throws(() => parseKey(Buffer.alloc(31).toString('base64')), { code: 'GOSSIP_KEY_INVALID' });
  t.throws(() => parseKey(Buffer.alloc(33).toString('base64')), { code: 'GOSSIP_KEY_INVALID' });
  t.throws(() => parseKey('not base64 at all!'), { code: 'GOSSIP_KEY_INVALID' });
  t.equal(parseKey(Buffer.alloc(32, 7).toString('base64')).length, 32);
});

t.test('at most MAX_KEYS keys', async (t) => {
  const ring = Keyring.fromSecret('x');
  for (let i = 1; i < MAX_KEYS; i++) ring.install(generateKey());
  t.equal(ring.list().length, MAX_KEYS);
  t.throws(() => ring.install(generateKey()), { code: 'GOSSIP_KEYRING_FULL' });
});

t.test('toJSON/fromJSON keeps keys and the primary', async (t) => {
  const ring = Keyring.fromSecret('x');
  const k = generateKey();
  ring.install(k);
  ring.use(k);
  ring.version = 12;
  const back = Keyring.fromJSON(JSON.parse(JSON.stringify(ring.toJSON())));
  t.same(back.list(), ring.list());
  t.equal(back.version, 12, 'the version of the last change is kept (replays of older changes stay refused after a restart)');
  t.equal(Keyring.fromJSON({ primary: k, keys: [k] }).version, 0, 'a file saved before versions: 0');
  t.throws(() => Keyring.fromJSON({ primary: k, keys: [k], version: -1 }), { code: 'GOSSIP_KEY_INVALID' });
  t.throws(() => Keyring.fromJSON({ primary: k, keys: [k], version: '3' }), { code: 'GOSSIP_KEY_INVALID' });
  t.throws(() => Keyring.fromJSON({ primary: 5 }), { code: 'GOSSIP_KEY_INVALID' });
});

t.test('ReplayCache: remembers up to its capacity, forgets the oldest', async (t) => {
  const c = new ReplayCache(3);
  const n = (i: number): Buffer => Buffer.from([i]);
  t.ok(c.admit(n(1)));
  t.notOk(c.admit(n(1)), 'a replay is refused');
  t.ok(c.admit(n(2)));
  t.ok(c.admit(n(3)));
  t.ok(c.admit(n(4)), 'evicts 1');
  t.equal(c.size, 3);
  t.ok(c.admit(n(1)), '1 was forgotten');
  t.notOk(c.admit(n(4)));
});
