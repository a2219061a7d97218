import t from 'tap';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_FSYNC_SAMPLES, clampSamples, measureFsyncLatency, measureSaveCost } from '../../core/storage/disk-probe.js';

t.test('measureFsyncLatency times real syncs and cleans up', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'picloud-probe-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const r = await measureFsyncLatency({ dir, samples: 50 });
  t.equal(r.samples, 50);
  t.equal(r.method, 'fdatasync');
  t.ok(r.p50Ms > 0 && r.p50Ms <= r.p99Ms && r.p99Ms <= r.maxMs, `p50 ${r.p50Ms.toFixed(3)} p99 ${r.p99Ms.toFixed(3)} max ${r.maxMs.toFixed(3)} ms`);
  const f = await measureFsyncLatency({ dir, samples: 20, method: 'fsync' });
  t.comment(`fdatasync 4 KiB: p50 ${r.p50Ms.toFixed(3)} ms, p99 ${r.p99Ms.toFixed(3)} ms; fsync p50 ${f.p50Ms.toFixed(3)} ms`);
  t.same(await readdir(dir), [], 'scratch files removed');
});

t.test('sample count is clamped to [1, MAX_FSYNC_SAMPLES]', async (t) => {
  t.equal(clampSamples(MAX_FSYNC_SAMPLES), MAX_FSYNC_SAMPLES);
  t.equal(clampSamples(MAX_FSYNC_SAMPLES + 1), MAX_FSYNC_SAMPLES);
  t.equal(clampSamples(0), 1);
  const dir = await mkdtemp(join(tmpdir(), 'picloud-probe-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.equal((await measureFsyncLatency({ dir, samples: 0 })).samples, 1);
});

t.test('measureSaveCost reports bytes per synced save', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'picloud-probe-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const c = await measureSaveCost({ dir, saves: 100, valueBytes: 256 });
  t.ok(c.logicalBytesPerSave > 256 + 32 && c.logicalBytesPerSave < 512, `logical ${c.logicalBytesPerSave} B/save`);
  t.comment(
    `256 B value: ${c.logicalBytesPerSave.toFixed(0)} B to LevelDB per save, ` +
      `${c.deviceBytesPerSave === undefined ? 'n/a' : c.deviceBytesPerSave.toFixed(0)} B to the device per save, ` +
      `${c.meanSaveMs.toFixed(3)} ms per sequential save`,
  );
});
