import t from 'tap';
import { Raft } from '../../core/raft/raft.js';
import type { Snapshot } from '../../core/raft/types.js';
import { runSeed, type BugVariant } from '../../core/sim/index.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Test-only: installs every snapshot from a leader with one value changed (still a well-formed
 * image), so only a comparison of whole states can tell. Entry-level checks see nothing wrong.
 */
class CorruptInstalledSnapshot extends Raft {
  protected override restoreSnapshot(s: Snapshot): boolean {
    if (!(s.data instanceof Uint8Array) || s.data.length === 0) return super.restoreSnapshot(s);
    const image = JSON.parse(decoder.decode(s.data)) as { data: [string, string][] };
    if (image.data.length === 0) return super.restoreSnapshot(s);
    image.data[0]![1] += '-corrupted';
    return super.restoreSnapshot({ ...s, data: encoder.encode(JSON.stringify(image)) });
  }
}

const corruptSnapshots: BugVariant = { name: 'corrupt-installed-snapshot', description: 'test only', raftClass: CorruptInstalledSnapshot };
// Frequent snapshots with no log kept behind them, so lagging followers install them.
const SNAPSHOT_HEAVY = { snapshotEveryEntries: 10, keepEntriesAfterSnapshot: 0 } as const;
const SEEDS = [1, 2, 3, 4, 5];

t.test('a state installed from a damaged snapshot is a state-machine-safety violation', async (t) => {
  let installedSomewhere = 0;
  for (const seed of SEEDS) {
    const r = runSeed(seed, { ...SNAPSHOT_HEAVY, bug: corruptSnapshots });
    if (r.stats.snapshotsInstalled === 0) continue;
    installedSomewhere++;
    const v = r.violations[0];
    t.equal(v?.invariant, 'state-machine-safety', `seed ${seed}: ${v?.message ?? 'no violation'}`);
    t.match(v?.message, /state machine at applied index \d+ differs from node \d+'s at that index/);
  }
  t.ok(installedSomewhere >= 3, `snapshots were installed in ${installedSomewhere} of ${SEEDS.length} seeds`);
});

t.test('the same runs without the damage pass the state comparison', async (t) => {
  for (const seed of SEEDS.slice(0, 2)) {
    const r = runSeed(seed, { ...SNAPSHOT_HEAVY });
    t.ok(r.ok, `seed ${seed}${r.ok ? '' : ': ' + r.violations[0]!.message}`);
  }
});
