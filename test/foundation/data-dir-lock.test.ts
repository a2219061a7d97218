/**
 * One agent per data dir (agent/data-dir-lock.ts): a live holder refuses a second, a lock left by
 * a process that is gone, by a pid since reused, or half-written is taken over at once.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataDirLockError, LOCK_FILE, lockDataDir } from '../../agent/data-dir-lock.js';

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-lock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

t.test('a live holder refuses a second lock; released, it can be taken again', async (t) => {
  const dir = tempDir(t);
  const release = lockDataDir(dir);
  const held = JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number; started: number | null };
  t.equal(held.pid, process.pid, 'the lock names this process');
  t.type(held.started, 'number', 'and its start time');
  t.throws(() => lockDataDir(dir), { name: 'DataDirLockError', message: new RegExp(`is in use by another picloud-node \\(pid ${process.pid}\\): one agent per data dir`) });
  release();
  t.notOk(existsSync(join(dir, LOCK_FILE)), 'released: the file is gone');
  const again = lockDataDir(dir);
  t.equal((JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number }).pid, process.pid, 'taken again');
  again();
});

t.test('a stale lock is taken over: its process gone, its pid reused, or the file half-written', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, LOCK_FILE);
  const cases: Array<[string, string]> = [
    ['a process that exited', JSON.stringify({ pid: deadPid(), started: 1 })],
    // pid 1 is alive, but it is not the process that took the lock (it started at another time).
    ['a pid since reused', JSON.stringify({ pid: 1, started: 123_456_789_012 })],
    ['half-written', '{"pid": 12'],
  ];
  for (const [label, text] of cases) {
    writeFileSync(path, text);
    const release = lockDataDir(dir);
    t.equal((JSON.parse(readFileSync(path, 'utf8')) as { pid: number }).pid, process.pid, `${label}: taken over`);
    release();
  }
});

t.test('the refusal is a typed error (the CLI prints its message, exit 1)', async (t) => {
  const dir = tempDir(t);
  // A live process that is not this one: the parent (the tap runner).
  writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: process.ppid, started: null }));
  try {
    lockDataDir(dir);
    t.fail('taken');
  } catch (e) {
    t.ok(e instanceof DataDirLockError && e.code === 'DATA_DIR_LOCKED', (e as Error).message);
  }
});

t.test('takeovers of a stale lock go one at a time (a second lock, judged the same way)', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, LOCK_FILE);
  const takeover = `${path}.takeover`;
  const stale = JSON.stringify({ pid: deadPid(), started: 1 });
  // Another start is taking over right now: refused, the lock left to it.
  writeFileSync(path, stale);
  writeFileSync(takeover, JSON.stringify({ pid: process.ppid, started: null }));
  t.throws(() => lockDataDir(dir), { name: 'DataDirLockError', message: /starting at the same time/ }, 'a live taker: refused');
  writeFileSync(takeover, '{"pid"');
  t.throws(() => lockDataDir(dir), { name: 'DataDirLockError', message: /being taken over/ }, 'a taker writing its file this instant: refused');
  t.equal(readFileSync(path, 'utf8'), stale, 'the lock untouched');
  // Left by takers that died: taken over.
  utimesSync(takeover, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
  lockDataDir(dir)();
  t.notOk(existsSync(takeover), 'a half-written one, old: removed');
  writeFileSync(path, stale);
  writeFileSync(takeover, JSON.stringify({ pid: deadPid(), started: 1 }));
  const release = lockDataDir(dir);
  t.equal((JSON.parse(readFileSync(path, 'utf8')) as { pid: number }).pid, process.pid, "a dead taker's: taken over");
  t.notOk(existsSync(takeover), 'and its file removed');
  release();
});
