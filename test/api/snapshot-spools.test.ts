// Spool files of the Snapshot call that a killed process left in the data dir go at start;
// nothing else in the data dir is touched.
import t from 'tap';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeSnapshotSpools } from '../../core/api/etcd-backend.js';

t.test('removeSnapshotSpools removes only snapshot-*.tmp', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'picloud-spools-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const f of ['snapshot-123-1700000000000.tmp', 'snapshot-9-1.tmp', 'snapshot.db', 'identity.json', 'token', 'my-snapshot-1.tmp']) writeFileSync(join(dir, f), 'x');
  mkdirSync(join(dir, 'kv'));
  t.equal(removeSnapshotSpools(dir), 2);
  t.same(readdirSync(dir).sort(), ['identity.json', 'kv', 'my-snapshot-1.tmp', 'snapshot.db', 'token']);
  t.equal(removeSnapshotSpools(dir), 0, 'nothing left to remove');
});
