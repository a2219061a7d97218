/**
 * One atomic LevelDB write from a list of operations. Goes through classic-level's chained
 * batch rather than `db.batch(array)`: the array form copies and re-validates every operation
 * in abstract-level before the native call and measured about 20 µs per operation here, the
 * chained form about 4 µs (40-op batches, 256-byte values) — it is on every Raft save.
 */
import type { ClassicLevel } from 'classic-level';

export type BatchOp = { type: 'put'; key: Buffer; value: Uint8Array } | { type: 'del'; key: Buffer };

export async function writeBatch(db: ClassicLevel<Buffer, Buffer>, ops: readonly BatchOp[], sync: boolean): Promise<void> {
  if (ops.length === 0) return;
  const batch = db.batch();
  try {
    for (const op of ops) {
      if (op.type === 'put') batch.put(op.key, op.value as Buffer);
      else batch.del(op.key);
    }
  } catch (err) {
    await batch.close();
    throw err;
  }
  await batch.write({ sync });
}
