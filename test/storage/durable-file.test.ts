import t from 'tap';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LatestValueFile, writeFileDurably, writeFileDurablySync } from '../../core/storage/durable-file.js';
import { mkdirSync } from 'node:fs';

t.test('writeFileDurablySync replaces a file whole, with the mode asked, leaving no temporary', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'durable-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'identity.json');
  // A temporary left by a crash in an earlier write does not get in the way.
  writeFileSync(`${path}.tmp`, '{"torn');
  writeFileDurablySync(path, '{"id":1}\n', 0o600);
  t.equal(readFileSync(path, 'utf8'), '{"id":1}\n');
  t.equal(statSync(path).mode & 0o777, 0o600);
  writeFileDurablySync(path, Buffer.from('{"id":2}\n'));
  t.equal(readFileSync(path, 'utf8'), '{"id":2}\n');
  t.same(readdirSync(dir), ['identity.json']);
});

t.test('a write that fails keeps the old contents and throws', async (t) => {
  if (process.getuid?.() === 0) {
    // root ignores directory permissions; use a target whose temporary cannot be created.
    const dir = mkdtempSync(join(tmpdir(), 'durable-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    t.throws(() => writeFileDurablySync(join(dir, 'missing-dir', 'token'), 'x'), { code: 'ENOENT' });
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'durable-'));
  t.teardown(() => {
    chmodSync(dir, 0o700);
    rmSync(dir, { recursive: true, force: true });
  });
  const path = join(dir, 'token');
  writeFileDurablySync(path, 'old\n');
  chmodSync(dir, 0o500);
  t.throws(() => writeFileDurablySync(path, 'new\n'), { code: 'EACCES' });
  t.equal(readFileSync(path, 'utf8'), 'old\n');
});

t.test('writeFileDurably (async) replaces a file whole with the mode asked, and keeps the old contents when it fails', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'durable-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'incarnation.json');
  writeFileSync(`${path}.tmp`, '{"torn');
  await writeFileDurably(path, '{"incarnation":1}', 0o600);
  t.equal(readFileSync(path, 'utf8'), '{"incarnation":1}');
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.same(readdirSync(dir), ['incarnation.json']);
  // Its temporary's name taken by a directory: the write fails, the file keeps its contents.
  mkdirSync(`${path}.tmp`);
  await t.rejects(writeFileDurably(path, '{"incarnation":2}'));
  t.equal(readFileSync(path, 'utf8'), '{"incarnation":1}');
});

t.test('LatestValueFile ends at the newest value saved, reports a failed write and recovers from it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'durable-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'incarnation.json');
  const errors: Error[] = [];
  const file = new LatestValueFile(path, 0o600, (e) => errors.push(e));
  for (let i = 1; i <= 100; i++) file.save(String(i));
  await file.flushed();
  t.equal(readFileSync(path, 'utf8'), '100', 'the newest value is on disk');
  t.same(errors, []);
  t.same(readdirSync(dir), ['incarnation.json'], 'no temporary left');
  // A failed write is reported, and the next save still lands.
  mkdirSync(`${path}.tmp`);
  file.save('101');
  await file.flushed();
  t.equal(errors.length, 1, `the failure was reported (${errors[0]?.message})`);
  t.equal(readFileSync(path, 'utf8'), '100', 'the old value stays');
  rmSync(`${path}.tmp`, { recursive: true });
  file.save('102');
  await file.flushed();
  t.equal(readFileSync(path, 'utf8'), '102');
});
