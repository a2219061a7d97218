// A data dir is made private (0700) at start, but a shared directory (sticky, like /tmp) given as
// the data dir is refused, not taken away from its other users.
import t from 'tap';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensurePrivateDir } from '../../core/storage/private-dir.js';

const modeOf = (dir: string): number => statSync(dir).mode & 0o7777;
/** The nobody account's uid and gid on Debian. */
const NOBODY = 65534;

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

// The other-owner rule applies to an account other than root (root may take any dir): run as
// nobody through setpriv, where the suite runs as root.
const asNobody = process.getuid?.() === 0 && spawnSync('setpriv', ['--version']).status === 0;
t.test('as another account: a dir owned by someone else is refused, its own made private', { skip: asNobody ? false : 'needs root and setpriv (util-linux) to run a check as nobody' }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'picloud-private-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  chmodSync(root, 0o755);
  const others = join(root, 'roots');
  mkdirSync(others, { mode: 0o755 });
  chmodSync(others, 0o755);
  const own = join(root, 'nobodys');
  mkdirSync(own, { mode: 0o755 });
  chmodSync(own, 0o755);
  chownSync(own, NOBODY, NOBODY);
  const module = fileURLToPath(new URL('../../core/storage/private-dir.js', import.meta.url));
  const check = (dir: string): string => {
    const script = `import { ensurePrivateDir } from ${JSON.stringify(module)}; try { console.log('mode', ensurePrivateDir(${JSON.stringify(dir)})); } catch (e) { console.log(e.code, e.message); }`;
    const r = spawnSync('setpriv', ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
    return r.stdout.trim() || r.stderr.trim();
  };
  t.match(check(others), /^ERR_INVALID_ARGUMENT .*roots is a shared directory \(mode 755, owner uid 0\)/, "root's dir is refused to nobody");
  t.equal(modeOf(others), 0o755, 'and keeps its mode');
  t.equal(check(own), `mode ${0o755}`, "nobody's own dir is made private");
  t.equal(modeOf(own), 0o700);
});
