// A data dir is made private (0700) at start, but a shared directory (sticky, like /tmp) given as
// the data dir is refused, not taken away from its other users.
import t from 'tap';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensurePrivateDir } from '../../core/storage/private-dir.js';

const modeOf = (dir: string): number => statSync(dir).mode & 0o7777;

t.test('a data dir is made private; a shared one is refused and left as it was', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'picloud-private-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const fresh = join(root, 'fresh');
  t.equal(ensurePrivateDir(fresh), undefined, 'a new dir is created private');
  t.equal(modeOf(fresh), 0o700);
  const wide = join(root, 'wide');
  mkdirSync(wide);
  chmodSync(wide, 0o755);
  t.equal(ensurePrivateDir(wide), 0o755, 'an own dir others can read: made private, the old mode returned');
  t.equal(modeOf(wide), 0o700);
  const shared = join(root, 'shared');
  mkdirSync(shared);
  chmodSync(shared, 0o1777);
  t.throws(() => ensurePrivateDir(shared), { code: 'ERR_INVALID_ARGUMENT', message: /shared\/? is a shared directory \(mode 1777.*give picloud-node a directory of its own, e\.g\. .*shared\/picloud/ });
  t.equal(modeOf(shared), 0o1777, 'the shared dir keeps its mode');
});

t.test('parents are created; a dir that cannot be made is refused with the reason, not retried for ever', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'picloud-private-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const deep = join(root, 'a', 'b', 'c');
  t.equal(ensurePrivateDir(deep), undefined, 'three levels created');
  t.equal(modeOf(deep), 0o700);
  t.equal(modeOf(join(root, 'a')), 0o700, 'parents made private too');
  // /proc answers mkdir with ENOENT although the parent exists: Node's recursive mkdir loops.
  t.throws(() => ensurePrivateDir('/proc/picloud-test/data'), { code: 'ERR_INVALID_ARGUMENT', message: /cannot create the data dir \/proc\/picloud-test\/data: ENOENT.*mkdir '\/proc\/picloud-test'/ });
  const file = join(root, 'file');
  writeFileSync(file, '');
  t.throws(() => ensurePrivateDir(join(file, 'data')), { code: 'ERR_INVALID_ARGUMENT', message: /cannot create the data dir .*ENOTDIR/ }, 'under a file');
});
