import t from 'tap';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileDurablySync } from '../../core/storage/durable-file.js';

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
