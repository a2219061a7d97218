/**
 * The open files budget (agent/open-files.ts): reading the limit from /proc, and sharing it out
 * so that the node's own descriptors always fit beside the client and http ports' caps.
 */
import t from 'tap';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  LEVEL_DEFAULT_OPEN_FILES,
  LEVEL_MIN_OPEN_FILES,
  MAX_HTTP_CONNECTIONS,
  MIN_CLIENT_CONNECTIONS,
  NODE_RESERVED_FILES,
  openFilesBudget,
  parseOpenFilesLimit,
} from '../../agent/open-files.js';

const PROC_LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max stack size            8388608              unlimited            bytes
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

t.test('the limit is read from /proc/PID/limits', async (t) => {
  t.same(parseOpenFilesLimit(PROC_LIMITS), { soft: 1024, hard: 524288 });
  t.same(parseOpenFilesLimit(PROC_LIMITS.replace('1024                 524288', 'unlimited            unlimited')), { soft: Infinity, hard: Infinity });
  t.equal(parseOpenFilesLimit('Max cpu time unlimited unlimited seconds\n'), undefined, 'no open files line');
  t.equal(parseOpenFilesLimit(''), undefined);
  // A process started under prlimit reads its own limit (Node raises the soft one to the hard one).
  const module = fileURLToPath(new URL('../../agent/open-files.js', import.meta.url));
  const r = spawnSync('prlimit', ['--nofile=700:900', process.execPath, '--input-type=module', '-e', `import { readOpenFilesLimit } from ${JSON.stringify(module)}; console.log(JSON.stringify(readOpenFilesLimit()))`], { encoding: 'utf8' });
  t.equal(r.error, undefined, 'prlimit (util-linux) ran');
  t.same(JSON.parse(r.stdout || 'null'), { soft: 900, hard: 900 }, r.stderr);
});

t.test('the budget at typical limits', async (t) => {
  t.same(openFilesBudget(1024), { limit: 1024, levelMaxOpenFiles: 128, httpConnections: 64, clientConnections: 384, tooLow: false });
  const systemd = openFilesBudget(524288);
  t.equal(systemd.levelMaxOpenFiles, LEVEL_DEFAULT_OPEN_FILES, "LevelDB's default table cache when there is room");
  t.equal(systemd.httpConnections, MAX_HTTP_CONNECTIONS);
  t.equal(systemd.clientConnections, 524288 - 2 * LEVEL_DEFAULT_OPEN_FILES - NODE_RESERVED_FILES - MAX_HTTP_CONNECTIONS);
  t.equal(openFilesBudget(Infinity).limit, 1_048_576, 'unlimited is taken as the kernel default nr_open');
  const tiny = openFilesBudget(256);
  t.ok(tiny.tooLow, 'a limit below the floors is flagged');
  t.equal(tiny.levelMaxOpenFiles, LEVEL_MIN_OPEN_FILES);
  t.equal(tiny.clientConnections, MIN_CLIENT_CONNECTIONS);
});

t.test('whatever the limit, the shares fit in it once it covers the floors; from 1,024 up clients get a third or more', async (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4_000_000 }), (limit) => {
        const b = openFilesBudget(limit);
        const used = 2 * b.levelMaxOpenFiles + NODE_RESERVED_FILES + b.httpConnections + b.clientConnections;
        if (!b.tooLow && used > limit) return false;
        if (limit >= 1024) return !b.tooLow && b.clientConnections >= limit / 3;
        return b.clientConnections >= MIN_CLIENT_CONNECTIONS && b.levelMaxOpenFiles >= LEVEL_MIN_OPEN_FILES;
      }),
    ),
  );
});
