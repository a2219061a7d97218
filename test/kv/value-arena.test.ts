// The off-heap value arena: what is stored reads back after any mix of releases and
// relocations, and relocation gives space back; and a store using it.
import t from 'tap';
import fc from 'fast-check';
import { KvStore } from '../../core/kv/store.js';
import { SLAB_BYTES, ValueArena, compareStored, compareStoredValues, storedCopy, storedView, type ArenaValue } from '../../core/kv/value-arena.js';
import { Node, b, kvView } from './helpers.js';

const holder = (): ArenaValue => ({ slab: null, offset: 0, length: 0, released: false });

t.test('stored values read back unchanged through releases and relocations; relocated, slabs hold at most 8/3 of the live bytes plus one slab', async (t) => {
  const op = fc.oneof(
    fc.record({ store: fc.uint8Array({ maxLength: 40 }) }),
    fc.record({ release: fc.nat() }),
    fc.constant({ relocate: true as const }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
      const slab = 64;
      const arena = new ValueArena(slab);
      const live: Array<{ h: ArenaValue; bytes: Buffer }> = [];
      for (const o of ops) {
        if ('store' in o) {
          const h = holder();
          const bytes = Buffer.from(o.store);
          arena.store(h, bytes);
          bytes.fill(0xee); // the arena keeps its own copy
          live.push({ h, bytes: Buffer.from(o.store) });
        } else if ('release' in o) {
          if (live.length === 0) continue;
          const [gone] = live.splice(o.release % live.length, 1);
          const before = storedCopy(gone!.h);
          arena.release(gone!.h);
          if (!storedCopy(gone!.h).equals(before)) throw new Error('a released value must stay readable');
        } else {
          arena.relocate();
          const liveBytes = live.reduce((n, v) => n + v.bytes.length, 0);
          if (arena.liveBytes !== liveBytes) throw new Error(`liveBytes ${arena.liveBytes}, want ${liveBytes}`);
          // Each full slab left is at least half live and at least 3/4 used (a value of a quarter slab or more gets its own).
          if (arena.slabBytes > (8 / 3) * liveBytes + slab) throw new Error(`${arena.slabBytes} slab bytes for ${liveBytes} live`);
        }
        for (const { h, bytes } of live) if (!storedView(h).equals(bytes)) throw new Error('a stored value changed');
      }
    }),
    { numRuns: 300 },
  );
});

t.test('relocation moves only values still held, once a slab is under half in use, and frees whole slabs of released ones', async (t) => {
  const arena = new ValueArena(64);
  const hs = Array.from({ length: 8 }, (_, i) => {
    const h = holder();
    arena.store(h, Buffer.alloc(15, i)); // under a quarter of the largest slab: four per 64-byte slab
    return h;
  });
  t.equal(arena.slabBytes, 128, 'two full slabs');
  const firstSlab = hs[0]!.slab;
  for (let i = 0; i < 3; i++) arena.release(hs[i]!); // the first slab keeps one live value
  arena.relocate();
  t.not(hs[3]!.slab, firstSlab, 'the survivor moved out of the sparse slab');
  t.same(storedCopy(hs[3]!), Buffer.alloc(15, 3));
  t.equal(hs[0]!.slab, firstSlab, 'a released value is not moved');
  t.equal(arena.liveBytes, 5 * 15);
  t.equal(arena.slabBytes, 128, 'the first slab went, a new current slab came');
  const secondSlab = hs[4]!.slab;
  arena.release(hs[4]!);
  arena.release(hs[5]!);
  arena.relocate();
  t.ok([6, 7].every((i) => hs[i]!.slab === secondSlab), 'a slab exactly half in use stays');
  arena.release(hs[6]!);
  arena.relocate();
  t.not(hs[7]!.slab, secondSlab, 'under half in use, its survivor moves');
  t.same([storedCopy(hs[3]!), storedCopy(hs[7]!)], [Buffer.alloc(15, 3), Buffer.alloc(15, 7)]);
  t.equal(arena.slabBytes, 64, 'only the current slab is left');
  const big = holder();
  arena.store(big, Buffer.alloc(40, 1)); // at least a quarter of the largest slab: its own
  t.equal(arena.slabBytes, 104);
  arena.release(big);
  arena.relocate();
  t.equal(arena.slabBytes, 64, 'a released value with its own slab gives all of it back');
});

t.test('a slab still well in use does not keep released values reachable', async (t) => {
  // A released value is a compacted record, which holds its key's history: a slab that stays
  // over half in use is never relocated, so its list of holders must let them go.
  const arena = new ValueArena(SLAB_BYTES);
  const hs = Array.from({ length: 4_000 }, () => {
    const h = holder();
    arena.store(h, Buffer.alloc(8));
    return h;
  });
  for (let i = 0; i < hs.length; i += 3) arena.release(hs[i]!); // a third released: no slab goes under half
  arena.relocate();
  const slabs = new Set(hs.map((h) => h.slab!));
  const listed = [...slabs].flatMap((s) => s.holders);
  const released = listed.filter((h) => h.released).length;
  t.ok(released * 8 <= listed.length + slabs.size * 8, `${released} released of ${listed.length} still listed by ${slabs.size} slabs`);
  t.ok(hs.filter((h) => !h.released).every((h) => h.slab!.holders.includes(h)), 'every value still held is listed by its slab');
});

t.test('slabs start small and grow with the bytes in use', async (t) => {
  const arena = new ValueArena(SLAB_BYTES);
  const h = holder();
  arena.store(h, Buffer.alloc(10));
  t.equal(arena.slabBytes, SLAB_BYTES / 16, 'a small store takes a small slab');
  const value = Buffer.alloc(1000);
  for (let i = 0; i < 2_000; i++) arena.store(holder(), value);
  t.ok(arena.slabBytes < 2 * arena.liveBytes + SLAB_BYTES, `${arena.slabBytes} slab bytes for ${arena.liveBytes} in use`);
  const fresh = new ValueArena(SLAB_BYTES);
  fresh.store(holder(), Buffer.alloc(SLAB_BYTES / 8)); // more than a sixteenth: a slab that holds it four times
  t.equal(fresh.slabBytes, SLAB_BYTES / 2, 'a value never takes more than a quarter of its slab');
});

t.test('empty values, byte-order comparison', async (t) => {
  const arena = new ValueArena(64);
  const e = holder();
  arena.store(e, Buffer.alloc(0));
  t.equal(arena.slabBytes, 0, 'an empty value takes no slab');
  t.same(storedCopy(e), Buffer.alloc(0));
  const a = holder();
  const b = holder();
  arena.store(a, Buffer.from([1, 2, 0xff]));
  arena.store(b, Buffer.from([1, 3]));
  t.equal(compareStored(a, Buffer.from([1, 2, 0xff])), 0);
  t.equal(compareStored(a, Buffer.from([1, 2])), 1);
  t.equal(compareStored(a, Buffer.from([1, 3])), -1);
  t.equal(compareStored(e, Buffer.from([0])), -1);
  t.equal(compareStoredValues(a, b), -1);
  t.equal(compareStoredValues(b, a), 1);
  t.equal(compareStoredValues(e, e), 0);
});

t.test('a store under churn: compaction gives the arena space back, values read back, snapshot and restore keep them', async (t) => {
  const n = Node.create();
  const value = (i: number): string => `${i}:`.padEnd(200 + (i % 50), String.fromCharCode(97 + (i % 26)));
  // 20 rounds of 1,000 puts over 100 keys (~4.5 MB of values), compacted after each.
  for (let round = 0; round < 20; round++) {
    for (let i = round * 1_000; i < (round + 1) * 1_000; i++) n.put(`k/${i % 100}`, value(i));
    n.apply({ compaction: { revision: n.store.revision } });
  }
  const kvs = n.range('k/', 'k0').kvs.map(kvView);
  t.equal(kvs.length, 100);
  t.same(kvs.map((kv) => kv.value), kvs.map((kv) => value(19_900 + Number(kv.key.slice(2)))), 'the newest value of every key');
  const inUse = n.store.retainedBytes;
  t.ok(n.store.allocatedBytes >= inUse, 'allocated (db size) is at least what is in use');
  // What is left: the 100 live values (~22 KB) in at most a few 256 KiB slabs, not the 4.5 MB written.
  t.ok(n.store.allocatedBytes - inUse < 3 * SLAB_BYTES, `slack ${n.store.allocatedBytes - inUse} bytes after compaction`);
  const copy = new KvStore();
  await copy.restore(n.store.snapshot());
  t.same(copy.range({ key: b('k/'), rangeEnd: b('k0') }).kvs.map(kvView), n.range('k/', 'k0').kvs.map(kvView), 'a restored store reads the same');
});
