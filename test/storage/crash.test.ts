import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftLogStore } from '../../core/storage/raft-log-store.js';

const WRITER = join(process.cwd(), 'dist', 'test', 'storage', 'crash-writer.js');
const ROUNDS = 4;
const KILL_AFTER_ACKS_MIN = 150;
const ROUND_TIMEOUT_MS = 15_000;

/** Runs the writer until it has acknowledged a random number of entries, then SIGKILLs it. */
function runAndKill(dir: string, killAfterAcks: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    const acked: number[] = [];
    let buf = '';
    let killed = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`writer made only ${acked.length} acks in ${ROUND_TIMEOUT_MS} ms`));
    }, ROUND_TIMEOUT_MS);
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = /^ack (\d+)$/.exec(line);
        if (m) acked.push(Number(m[1]));
      }
      if (!killed && acked.length >= killAfterAcks) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.on('exit', (_code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`writer exited on its own (${signal})`));
      else resolve(acked);
    });
  });
}

t.test('kill -9 while writing loses no acknowledged entry', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'picloud-crash-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let total = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const acked = await runAndKill(dir, KILL_AFTER_ACKS_MIN + Math.floor(Math.random() * 300));
    total += acked.length;
    const store = await RaftLogStore.open(dir);
    try {
      const maxAcked = Math.max(...acked);
      t.ok(store.lastIndex() >= maxAcked, `round ${round}: last index ${store.lastIndex()} >= max acked ${maxAcked}`);
      t.ok(store.hardState().commit >= maxAcked, `round ${round}: hard state commit ${store.hardState().commit} covers acks`);
      let missing = 0;
      let wrong = 0;
      const first = store.firstIndex();
      for (const index of acked) {
        if (index < first) {
          if (store.snapshotMetadata().index < index) missing++; // compacted but not covered
          continue;
        }
        const [e] = store.entries(index, index + 1);
        if (e === undefined) missing++;
        else if (!new TextDecoder().decode(e.data).startsWith(`entry-${index}-`)) wrong++;
      }
      t.equal(missing, 0, `round ${round}: all ${acked.length} acked entries present (first index ${first})`);
      t.equal(wrong, 0, `round ${round}: contents intact`);
      // The log is contiguous from firstIndex to lastIndex (open() checks) and readable.
      t.equal(store.entries(first, store.lastIndex() + 1).length, store.lastIndex() - first + 1);
      if (store.snapshotMetadata().index > 0) {
        t.equal((await store.readSnapshotChunk(0, 64 * 1024)).length, 32 * 1024, 'snapshot file whole');
      }
    } finally {
      await store.close();
    }
  }
  t.ok(total >= ROUNDS * KILL_AFTER_ACKS_MIN, `${total} acknowledged entries checked across ${ROUNDS} kills`);
});
