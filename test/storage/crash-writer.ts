/**
 * Child process for crash.test.ts: appends entries to a RaftLogStore in a loop with several
 * saves in flight (so group commit batches them), takes a snapshot and compacts now and then,
 * and prints "ack N" once the save holding entry N has resolved. The parent SIGKILLs it.
 */
import { RaftLogStore } from '../../core/storage/raft-log-store.js';
import { EntryType } from '../../core/raft/types.js';

const dir = process.argv[2];
if (dir === undefined) {
  console.error('usage: crash-writer.js DIR (run by crash.test.js)');
  process.exit(2);
}
const IN_FLIGHT = 8;
const SNAPSHOT_EVERY = 150;
const MAX_ENTRIES = 200_000; // a bound, never reached before the parent kills us

function payload(index: number): Uint8Array {
  return new TextEncoder().encode(`entry-${index}-`.padEnd(200, 'x'));
}

const store = await RaftLogStore.open(dir);
let next = store.lastIndex() + 1;
let lastSnapshot = store.snapshotMetadata().index;
process.stdout.write(`start ${next}\n`);

async function writer(): Promise<void> {
  while (next < MAX_ENTRIES) {
    const index = next++;
    await store.save({
      entries: [{ term: 1, index, type: EntryType.Normal, data: payload(index) }],
      hardState: { term: 1, vote: 1, commit: index },
    });
    process.stdout.write(`ack ${index}\n`);
  }
}

async function snapshotter(): Promise<void> {
  while (next < MAX_ENTRIES) {
    await new Promise((r) => setTimeout(r, 20));
    const durable = store.lastIndex();
    if (durable - lastSnapshot >= SNAPSHOT_EVERY) {
      const at = durable - 10;
      await store.createSnapshot(at, { voters: [1], learners: [] }, new Uint8Array(32 * 1024).fill(at & 0xff));
      await store.compact(at);
      lastSnapshot = at;
    }
  }
}

await Promise.all([...Array.from({ length: IN_FLIGHT }, writer), snapshotter()]);
