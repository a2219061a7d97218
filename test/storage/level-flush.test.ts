/**
 * A synced write of the applied state covers the unsynced ones before it (mvcc-backend.ts,
 * flushEarlierWrites): LevelDB 1.20 closes a full log file without an fsync, and a later synced
 * write fsyncs only the newer file (google/leveldb#193). What is checked here is where the
 * earlier writes are once the synced one returns: in LevelDB's table files (fsynced when
 * written), not left in a log file the synced write did not fsync.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MVCC_FLUSH_EVERY_BYTES, MvccBackend } from '../../core/storage/mvcc-backend.js';

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'picloud-flush-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Bytes in LevelDB's log files and in its table files, anywhere under `dir`. */
async function levelFiles(dir: string): Promise<{ logBytes: number; tableBytes: number }> {
  let logBytes = 0;
  let tableBytes = 0;
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const size = (await stat(join(e.parentPath, e.name))).size;
    if (e.name.endsWith('.log') && e.name !== 'LOG') logBytes += size;
    if (e.name.endsWith('.ldb') || e.name.endsWith('.sst')) tableBytes += size;
  }
  return { logBytes, tableBytes };
}

t.test('a synced persist leaves the unsynced batches before it in table files, not in an unsynced log', async (t) => {
  const dir = await tempDir(t);
  const backend = await MvccBackend.open(dir);
  t.teardown(() => backend.close());
  let index = 0;
  for (let batch = 0; batch < 20; batch++) {
    for (let i = 0; i < 10; i++) backend.store.apply({ put: { key: Buffer.from(`k${batch}/${i}`), value: randomBytes(1024) } }, { index: ++index, term: 1 });
    await backend.persist({ sync: false });
  }
  const before = await levelFiles(dir);
  t.ok(before.logBytes > 200 * 1024, `${before.logBytes} bytes of unsynced batches in the log`);
  backend.store.apply({ put: { key: Buffer.from('last'), value: Buffer.from('v') } }, { index: ++index, term: 1 });
  await backend.persist({ sync: true });
  const after = await levelFiles(dir);
  t.ok(after.tableBytes > 200 * 1024, `in table files once the synced persist returns (${after.tableBytes} bytes)`);
  t.ok(after.logBytes < 16 * 1024, `the log holds only what the synced write fsynced (${after.logBytes} bytes)`);
  t.equal(backend.durableAppliedIndex, index);
});

t.test('unsynced persists flush the memtable themselves before LevelDB would start a new log file between them', async (t) => {
  const dir = await tempDir(t);
  const backend = await MvccBackend.open(dir);
  t.teardown(() => backend.close());
  let index = 0;
  let most = 0;
  // ~3.6 MB in batches of ~100 KB: under LevelDB's 4 MiB write buffer, so it would not flush
  // by itself (all in one log), past MVCC_FLUSH_EVERY_BYTES.
  for (let batch = 0; batch < 36; batch++) {
    for (let i = 0; i < 100; i++) backend.store.apply({ put: { key: Buffer.from(`k${batch}/${i}`), value: randomBytes(1000) } }, { index: ++index, term: 1 });
    await backend.persist({ sync: false });
    most = Math.max(most, (await levelFiles(dir)).logBytes);
  }
  const { tableBytes } = await levelFiles(dir);
  t.ok(most <= MVCC_FLUSH_EVERY_BYTES + 200 * 1024, `the log never held more than ${MVCC_FLUSH_EVERY_BYTES} bytes and a batch (${most})`);
  t.ok(tableBytes > 1024 * 1024, `the rest is in table files (${tableBytes} bytes)`);
});
