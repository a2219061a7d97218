// Checksums on stored values (core/storage/value-checksum.ts): the codec, and real damage in a
// LevelDB table file, which LevelDB itself reads back without complaint, refused at open by
// both stores; stores written before checksums still open, and become strict once rewritten.
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { StorageError } from '../../core/storage/errors.js';
import { MvccBackend } from '../../core/storage/mvcc-backend.js';
import { RaftLogStore, entryKey } from '../../core/storage/raft-log-store.js';
import { SEALED_MARKER, SEAL_BYTES, seal, unseal } from '../../core/storage/value-checksum.js';
import { KvStore } from '../../core/kv/store.js';
import { EntryType, type Entry } from '../../core/raft/types.js';

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'picloud-checksum-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const isCorrupt = (e: unknown): boolean => e instanceof StorageError && e.code === 'ERR_CORRUPT';

t.test('seal / unseal', async (t) => {
  const bytes = fc.uint8Array({ maxLength: 300 });
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(bytes, bytes, (key, body) => Buffer.from(unseal(key, seal(key, body), true, 'x')).equals(Buffer.from(body))),
      { numRuns: 300 },
    ),
    'a sealed value reads back as written',
  );
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(bytes, bytes, fc.nat(), fc.integer({ min: 0, max: 7 }), (key, body, at, bit) => {
        const stored = seal(key, body);
        stored[at % stored.length]! ^= 1 << bit;
        try {
          unseal(key, stored, true, 'x');
          return false;
        } catch (e) {
          return isCorrupt(e);
        }
      }),
      { numRuns: 500 },
    ),
    'any one flipped bit is refused (CRC-32 finds every single-bit error)',
  );
  t.throws(() => unseal(Buffer.from('k2'), seal(Buffer.from('k1'), Buffer.from('v')), false, 'x'), { code: 'ERR_CORRUPT' }, 'a value found under another key is refused');
  t.throws(() => unseal(Buffer.from('k'), Buffer.from([SEALED_MARKER, 1, 2]), false, 'x'), { code: 'ERR_CORRUPT' }, 'a value shorter than its checksum is refused');
  const legacy = Buffer.from([0, 1, 2, 3]);
  t.equal(unseal(Buffer.from('k'), legacy, false, 'x'), legacy, 'a value from before checksums reads as stored');
  t.throws(() => unseal(Buffer.from('k'), legacy, true, 'the KV store'), { code: 'ERR_CORRUPT', message: /the KV store is damaged: the value under key 6b has no checksum/ }, 'unless the store is strict');
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(bytes, fc.uint8Array({ maxLength: 64 }), fc.boolean(), (key, stored, strict) => {
        try {
          unseal(key, Buffer.from(stored), strict, 'x');
          return true;
        } catch (e) {
          return isCorrupt(e);
        }
      }),
      { numRuns: 500 },
    ),
    'random bytes: a value or ERR_CORRUPT, nothing else',
  );
});

/**
 * Flips one byte in the middle of `needle` where it lies in the directory's table files (the
 * bytes must have been written uncompressed, as random values are), the damage a failing SD
 * card does; returns the file changed.
 */
async function damageTable(dir: string, needle: Buffer): Promise<string> {
  for (const f of (await readdir(dir)).filter((n) => n.endsWith('.ldb'))) {
    const bytes = await readFile(join(dir, f));
    const at = bytes.indexOf(needle);
    if (at < 0) continue;
    bytes[at + (needle.length >> 1)]! ^= 0x40;
    await writeFile(join(dir, f), bytes);
    return f;
  }
  throw new Error('the value is in no table file');
}

/** What LevelDB itself returns for `key` in the (damaged) store at `dir`, read without our checks. */
async function rawValue(dir: string, key: Buffer): Promise<Buffer | undefined> {
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', createIfMissing: false });
  await db.open();
  try {
    return await db.get(key);
  } finally {
    await db.close();
  }
}

t.test('the KV store: a damaged value in a table file is refused at open', async (t) => {
  const dir = await tempDir(t);
  const values = Array.from({ length: 50 }, () => randomBytes(256));
  let backend = await MvccBackend.open(dir);
  values.forEach((value, i) => backend.store.apply({ put: { key: Buffer.from(`k${i}`), value } }, { index: i + 1, term: 1 }));
  await backend.persist({ sync: true });
  await backend.defragment(); // into table files
  await backend.close();
  backend = await MvccBackend.open(dir);
  t.same(backend.store.range({ key: Buffer.from('k7') }).kvs[0]?.value, values[7], 'whole: opens and reads back');
  await backend.close();
  t.equal((await rawValue(dir, Buffer.from('m/sealed')))?.length, 1, 'a new store is strict');

  const victim = values[7]!;
  await damageTable(dir, victim.subarray(100, 132));
  // LevelDB reads the damaged block back as data (no verify_checksums): the check is ours.
  let rawHit = false;
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', createIfMissing: false });
  await db.open();
  for await (const [, v] of db.iterator()) {
    if (v.length > SEAL_BYTES && v.indexOf(victim.subarray(0, 64)) >= 0 && v.indexOf(victim.subarray(100, 132)) < 0) rawHit = true;
  }
  await db.close();
  t.ok(rawHit, 'LevelDB hands back the damaged record, damaged, without an error');

  await t.rejects(MvccBackend.open(dir), { code: 'ERR_CORRUPT', message: /the KV store is damaged: the value under key [0-9a-f]+ fails its checksum.*remove the data dir and join the cluster again/ });
});

function entry(index: number, data: Buffer): Entry {
  return { index, term: 1, type: EntryType.Normal, data };
}

t.test('the Raft log: a damaged entry in a table file is refused at open', async (t) => {
  const dir = await tempDir(t);
  const data = Array.from({ length: 20 }, () => randomBytes(300));
  let log = await RaftLogStore.open(dir);
  await log.save({ hardState: { term: 1, vote: 1, commit: 20 }, entries: data.map((d, i) => entry(i + 1, d)) });
  await log.defragment();
  await log.close();
  log = await RaftLogStore.open(dir);
  t.same(Buffer.from(log.entries(5, 6)[0]!.data), data[4], 'whole: opens and reads back');
  await log.close();
  t.equal((await rawValue(join(dir, 'log'), Buffer.from('v')))?.length, 1, 'a new log is strict');

  await damageTable(join(dir, 'log'), data[4]!.subarray(100, 132));
  const raw = await rawValue(join(dir, 'log'), Buffer.from([...Buffer.from('e'), 0, 0, 0, 0, 0, 0, 0, 5]));
  t.ok(raw !== undefined && raw.indexOf(data[4]!.subarray(0, 64)) >= 0 && raw.indexOf(data[4]!.subarray(100, 132)) < 0, 'LevelDB hands back the damaged entry without an error');
  await t.rejects(RaftLogStore.open(dir), { code: 'ERR_CORRUPT', message: /the Raft log is damaged: the value under key 650*5 fails its checksum/ });
});

/**
 * Every copy of `dir` with one byte of a key flipped, for each place in its table file where
 * `keyPrefix` starts a whole key (LevelDB stores a block's restart keys, and its index block's
 * separators, whole): `flip` gives the offset within the prefix and the bit.
 */
async function keyDamagedCopies(t: Test, dir: string, storeDir: string, keyPrefix: Buffer, at: number, bit: number): Promise<string[]> {
  const table = (await readdir(storeDir)).find((n) => n.endsWith('.ldb'))!;
  const bytes = await readFile(join(storeDir, table));
  const copies: string[] = [];
  for (let hit = bytes.indexOf(keyPrefix); hit >= 0; hit = bytes.indexOf(keyPrefix, hit + 1)) {
    const copy = await tempDir(t);
    await cp(dir, copy, { recursive: true });
    const damaged = Buffer.from(bytes);
    damaged[hit + at]! ^= bit;
    await writeFile(join(copy, storeDir.slice(dir.length), table), damaged);
    copies.push(copy);
  }
  return copies;
}

t.test('a damaged key is refused, wherever it now sorts: no record or entry drops out unseen', async (t) => {
  const kvDir = await tempDir(t);
  let backend = await MvccBackend.open(kvDir);
  for (let i = 0; i < 50; i++) backend.store.apply({ put: { key: Buffer.from(`k${i}`), value: randomBytes(256) } }, { index: i + 1, term: 1 });
  await backend.persist({ sync: true });
  await backend.defragment();
  const digest = backend.store.digest();
  await backend.close();
  // 'r' (records) becomes 's' in a whole record key: it and the keys after it in its block move
  // out of the records' range (before, they were not read, and the store opened without them);
  // or 'p', which sorts them before the keys already read, and LevelDB's iterator passes over them.
  let refused = 0;
  const kvCopies = [
    ...(await keyDamagedCopies(t, kvDir, kvDir, Buffer.from([0x64, 0, 0, 0, 0, 0x72]), 5, 0x01)),
    ...(await keyDamagedCopies(t, kvDir, kvDir, Buffer.from([0x64, 0, 0, 0, 0, 0x72]), 5, 0x02)),
  ];
  for (const copy of kvCopies) {
    try {
      const b = await MvccBackend.open(copy);
      t.equal(b.store.digest(), digest, 'a damaged index separator only: opens whole');
      await b.close();
    } catch (e) {
      t.ok(isCorrupt(e), `refused: ${(e as Error).message.slice(0, 100)}`);
      refused++;
    }
  }
  t.ok(refused >= kvCopies.length - 2, 'damage to a record key is refused (each damaged copy but the index separator\'s two)');

  const logDir = await tempDir(t);
  let log = await RaftLogStore.open(logDir);
  await log.save({ hardState: { term: 1, vote: 1, commit: 50 }, entries: Array.from({ length: 50 }, (_, i) => entry(i + 1, randomBytes(300))) });
  await log.defragment();
  await log.close();
  refused = 0;
  // 'e' (entries) becomes 'd' or 'a': the entries from that key on sort before the log's.
  const logCopies = [
    ...(await keyDamagedCopies(t, logDir, join(logDir, 'log'), Buffer.from([0x65, 0, 0, 0, 0, 0, 0]), 0, 0x01)),
    ...(await keyDamagedCopies(t, logDir, join(logDir, 'log'), Buffer.from([0x65, 0, 0, 0, 0, 0, 0]), 0, 0x04)),
  ];
  for (const copy of logCopies) {
    try {
      const l = await RaftLogStore.open(copy);
      t.equal(l.lastIndex(), 50, 'a damaged index separator only: opens whole');
      await l.close();
    } catch (e) {
      t.ok(isCorrupt(e), `refused: ${(e as Error).message.slice(0, 100)}`);
      refused++;
    }
  }
  t.ok(refused >= logCopies.length - 2, 'damage to an entry key is refused (each damaged copy but, at most, an index separator\'s two)');
});

t.test('a lost tail of the log is refused: by the last index it records, or by the hard state\'s commit', async (t) => {
  const dir = await tempDir(t);
  const log = await RaftLogStore.open(dir);
  await log.save({ hardState: { term: 1, vote: 1, commit: 10 }, entries: Array.from({ length: 10 }, (_, i) => entry(i + 1, Buffer.from(`e${i + 1}`))) });
  await log.close();
  const edit = async (f: (db: ClassicLevel<Buffer, Buffer>) => Promise<void>): Promise<void> => {
    const db = new ClassicLevel<Buffer, Buffer>(join(dir, 'log'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    await f(db);
    await db.close();
  };
  await edit((db) => db.clear({ gte: entryKey(8), lte: entryKey(10) })); // the tail lost
  await t.rejects(RaftLogStore.open(dir), { code: 'ERR_CORRUPT', message: /the Raft log is damaged: it was written up to entry 10, but holds entries up to 7/ });
  await edit((db) => db.del(Buffer.from('l'))); // as a log written before the last index was
  await t.rejects(RaftLogStore.open(dir), { code: 'ERR_CORRUPT', message: /the Raft log is damaged: its hard state says entry 10 is committed, but the log ends at 7/ });
});

t.test('the KV store: fewer records than its state counts is refused', async (t) => {
  const dir = await tempDir(t);
  const backend = await MvccBackend.open(dir);
  for (let i = 0; i < 5; i++) backend.store.apply({ put: { key: Buffer.from(`k${i}`), value: Buffer.from('v') } }, { index: i + 1, term: 1 });
  await backend.persist({ sync: true });
  await backend.close();
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  const keys: Buffer[] = [];
  for await (const k of db.keys({ gte: Buffer.from([0x64]), lt: Buffer.from([0x65]) })) keys.push(k);
  await db.del(keys[keys.length - 1]!); // a record gone, as a key LevelDB passes over would be
  await db.close();
  await t.rejects(MvccBackend.open(dir), { code: 'ERR_CORRUPT', message: /the KV store is damaged: its state says it holds 5 records, but 4 were read/ });
});

t.test('a value that passes its checksum but does not decode is refused too', async (t) => {
  // Written sealed, as by a bug or by hand: the checksum holds, the decoders must still refuse it.
  const garbage = Buffer.from([0xff, 0xff, 0xff]);
  const logDir = await tempDir(t);
  const log = await RaftLogStore.open(logDir);
  await log.save({ hardState: { term: 1, vote: 1, commit: 1 }, entries: [entry(1, Buffer.from('x'))] });
  await log.close();
  const kvDir = await tempDir(t);
  const backend = await MvccBackend.open(kvDir);
  backend.store.apply({ put: { key: Buffer.from('a'), value: Buffer.from('1') } }, { index: 1, term: 1 });
  await backend.persist({ sync: true });
  await backend.close();
  for (const [dir, key] of [[join(logDir, 'log'), Buffer.from('h')], [kvDir, Buffer.from('m/state')]] as const) {
    const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    await db.put(key, seal(key, garbage));
    await db.close();
  }
  await t.rejects(RaftLogStore.open(logDir), { code: 'ERR_CORRUPT', message: /bad record in the log database/ });
  await t.rejects(MvccBackend.open(kvDir), { code: 'SNAPSHOT_CORRUPT', detail: 'mvcc backend: undecodable metadata' });
});

/** Rewrites every value of the store at `dir` as a version before checksums wrote it, and drops the strict mark. */
async function unsealAll(dir: string, strictKey: Buffer): Promise<number> {
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', createIfMissing: false });
  await db.open();
  let n = 0;
  try {
    const ops: ({ type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer })[] = [];
    for await (const [k, v] of db.iterator()) {
      if (k.equals(strictKey)) continue;
      ops.push({ type: 'put', key: k, value: unseal(k, v, true, 'test') });
      n++;
    }
    ops.push({ type: 'del', key: strictKey });
    await db.batch(ops);
  } finally {
    await db.close();
  }
  return n;
}

t.test('stores written before checksums still open; the KV store turns strict once rewritten', async (t) => {
  const dir = await tempDir(t);
  let backend = await MvccBackend.open(dir);
  backend.store.apply({ leaseGrant: { TTL: 60, ID: 9 } }, { index: 1, term: 1 });
  backend.store.apply({ put: { key: Buffer.from('a'), value: Buffer.from('1'), lease: 9 } }, { index: 2, term: 1 });
  await backend.persist({ sync: true, confState: Buffer.from([8, 1]) });
  await backend.close();
  t.ok((await unsealAll(dir, Buffer.from('m/sealed'))) >= 4, 'records, lease and metadata rewritten unsealed');

  backend = await MvccBackend.open(dir);
  t.same(backend.store.range({ key: Buffer.from('a') }).kvs[0]?.value, Buffer.from('1'), 'an older store opens as before');
  t.same(Buffer.from(backend.confState!), Buffer.from([8, 1]));
  // A restore rewrites the whole state under a new generation, sealed, and marks the store strict.
  const source = new KvStore();
  source.apply({ put: { key: Buffer.from('b'), value: Buffer.from('2') } }, { index: 5, term: 2 });
  const chunks: Uint8Array[] = [];
  for await (const c of source.snapshot()) chunks.push(c);
  await backend.store.restore(chunks);
  await backend.persist({ sync: true });
  await backend.close();
  t.equal((await rawValue(dir, Buffer.from('m/sealed')))?.length, 1, 'strict after the rewrite');
  backend = await MvccBackend.open(dir);
  t.same(backend.store.range({ key: Buffer.from('b') }).kvs[0]?.value, Buffer.from('2'), 'and opens, every value sealed');
  t.same(Buffer.from(backend.confState!), Buffer.from([8, 1]), 'the unchanged ConfState was written again, sealed');
  await backend.close();

  const logDir = await tempDir(t);
  let log = await RaftLogStore.open(logDir);
  await log.save({ hardState: { term: 1, vote: 1, commit: 1 }, entries: [entry(1, Buffer.from('x'))] });
  await log.close();
  t.equal(await unsealAll(join(logDir, 'log'), Buffer.from('v')), 3, 'the log\'s hard state, last index and entry rewritten unsealed');
  log = await RaftLogStore.open(logDir);
  t.same(Buffer.from(log.entries(1, 2)[0]!.data), Buffer.from('x'), 'an older log opens as before');
  await log.close();
});
