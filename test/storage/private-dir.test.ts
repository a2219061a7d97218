// A data dir is made private (0700) at start, but a shared directory (sticky, like /tmp), another
// account's, a path that is no directory, or an open directory holding other files given as the
// data dir is refused and left as it was.
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
  // A mistyped --data-dir naming a file (or /dev/null) is not chmod-ed.
  const file = join(root, 'notes.txt');
  writeFileSync(file, 'mine\n', { mode: 0o644 });
  chmodSync(file, 0o644);
  t.throws(() => ensurePrivateDir(file), { code: 'ERR_INVALID_ARGUMENT', message: /notes\.txt is not a directory/ });
  t.equal(modeOf(file), 0o644, 'the file keeps its mode');
  // An open directory with other things in it (--data-dir /etc) is not taken over.
  const busy = join(root, 'busy');
  mkdirSync(busy);
  chmodSync(busy, 0o755);
  writeFileSync(join(busy, 'passwd'), '');
  t.throws(() => ensurePrivateDir(busy), { code: 'ERR_INVALID_ARGUMENT', message: /busy can be read by other accounts \(mode 755\) and holds other files.*chmod 700/ });
  t.equal(modeOf(busy), 0o755, 'the busy dir keeps its mode');
  // An open data dir (written by an older version, or copied with a wide mode) is made private.
  const older = join(root, 'older');
  mkdirSync(join(older, 'kv'), { recursive: true });
  chmodSync(older, 0o755);
  t.equal(ensurePrivateDir(older), 0o755, 'a data dir others can read: made private');
  t.equal(modeOf(older), 0o700);
});

t.test("root: another account's dir is taken where it was put there by its owner, refused in a shared dir (/tmp) where anyone could have made it", { skip: process.getuid?.() === 0 ? false : 'needs root to give a dir to nobody' }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'picloud-private-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const home = join(root, 'home');
  mkdirSync(home, { mode: 0o755 });
  chmodSync(home, 0o755);
  const pis = join(home, 'picloud');
  mkdirSync(pis, { mode: 0o700 });
  chownSync(pis, NOBODY, NOBODY);
  t.equal(ensurePrivateDir(pis), undefined, "a user's own 0700 dir under a normal parent: taken, as before");
  // A directory planted in a sticky, world-writable one (as /tmp/picloud-dev-0 could be).
  const shared = join(root, 'tmp');
  mkdirSync(shared);
  chmodSync(shared, 0o1777);
  const planted = join(shared, 'planted');
  mkdirSync(planted, { mode: 0o700 });
  chownSync(planted, NOBODY, NOBODY);
  t.throws(() => ensurePrivateDir(planted), { code: 'ERR_INVALID_ARGUMENT', message: /planted belongs to another account \(uid 65534, this process runs as uid 0\)/ }, "nobody's dir in a shared one, given to root");
  t.equal(statSync(planted).uid, NOBODY, 'left as it was');
  // A fresh file system's mount point: only lost+found in it.
  const mount = join(root, 'mnt');
  mkdirSync(join(mount, 'lost+found'), { recursive: true });
  chmodSync(mount, 0o755);
  t.equal(ensurePrivateDir(mount), 0o755, 'a mount point holding only lost+found: made private');
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

// As an account other than root: run as nobody through setpriv, where the suite runs as root.
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
  t.match(check(others), /^ERR_INVALID_ARGUMENT .*roots belongs to another account \(uid 0, this process runs as uid 65534\)/, "root's dir is refused to nobody");
  t.equal(modeOf(others), 0o755, 'and keeps its mode');
  t.equal(check(own), `mode ${0o755}`, "nobody's own dir is made private");
  t.equal(modeOf(own), 0o700);
});
