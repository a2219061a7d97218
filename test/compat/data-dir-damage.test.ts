/**
 * A data dir that is damaged, or is not this cluster's, is refused at start with a message naming
 * what is wrong, and nothing in it is changed. Each case is a copy of one stopped member's data
 * dir with one thing done to it:
 * - identity.json lost: starting with --bootstrap would found a second cluster on the old data
 *   (and write a new token over the old one), --join would take part with state the cluster
 *   never had;
 * - the Raft log lost while the applied state remains (the member's term and vote are gone);
 * - LevelDB damage it would otherwise repair in silence: CURRENT lost (an empty store, the old
 *   tables deleted), a write-ahead log record that fails its checksum (skipped);
 * - a value damaged in a table file where LevelDB keeps it uncompressed, which LevelDB reads back
 *   as data (it checks block checksums only when asked): the value's own checksum refuses it;
 * - identity.json truncated (a stack trace before), the token file damaged;
 * - a restored snapshot given to --join; a restore into a directory holding other files.
 * An untouched copy starts and serves the data, so the copying is not what is refused.
 */
import t from 'tap';
import { cpSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { compactWholeDatabase } from '../../core/storage/level-batch.js';
import { AgentCluster, CLI, etcdctl, hasEtcdctl } from '../helpers/agents.js';
import { SimpleKv } from '../helpers/kv-client.js';

const KEYS = 40;
const VALUE = 'v'.repeat(2000);
/** Text Snappy cannot shrink (random two-byte UTF-8 characters): its table block is stored raw. */
const NOISE = Array.from({ length: 3000 }, () => String.fromCharCode(0x100 + Math.floor(Math.random() * 0x700))).join('');

/** The largest LevelDB write-ahead log file of a store (its records span several 32 KiB blocks). */
function largestLog(dir: string): string {
  const logs = readdirSync(dir).filter((f) => /^\d+\.log$/.test(f)).map((f) => join(dir, f));
  return logs.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
}

/** Moves a store's data into table files, then flips one byte of `text` where a table holds it. */
async function rotInTable(dir: string, text: string): Promise<void> {
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', createIfMissing: false });
  await db.open();
  await compactWholeDatabase(db);
  await db.close();
  const needle = Buffer.from(text).subarray(1000, 1100);
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.ldb'))) {
    const bytes = readFileSync(join(dir, f));
    const at = bytes.indexOf(needle);
    if (at < 0) continue;
    bytes[at + 50]! ^= 0x01;
    writeFileSync(join(dir, f), bytes);
    return;
  }
  throw new Error(`no table file in ${dir} holds the value`);
}

/** Overwrites 32 bytes in the middle of a file (bit rot on an SD card). */
function corruptMiddle(file: string): void {
  const size = statSync(file).size;
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.alloc(32, 0xa5), 0, 32, Math.floor(size / 2));
  closeSync(fd);
}

t.test('damaged or foreign data dirs are refused, naming what is wrong', { skip: hasEtcdctl() ? false : 'etcdctl not installed' }, async (t) => {
  const cluster = new AgentCluster();
  t.teardown(() => cluster.stopAll());
  await cluster.startCluster(['m1']);
  const m1 = cluster.agents[0]!;
  const kv = new SimpleKv(cluster.endpoints());
  for (let i = 0; i < KEYS; i++) await kv.put(`k${i}`, VALUE);
  await kv.put('noise', NOISE);
  kv.close();
  const snap = join(cluster.root, 'snap.db');
  t.equal(etcdctl(cluster.endpoints(), ['snapshot', 'save', snap]).status, 0, 'a snapshot to restore');
  cluster.kill(m1, 'SIGTERM');
  t.equal(await cluster.exited(m1), 0, 'the member stopped');

  /** A copy of m1's data dir, damaged by `damage`, started as m1 on ports of its own. */
  const tryStart = async (label: string, damage: (dir: string) => void, bootstrap: boolean, then?: (dir: string) => Promise<void>): Promise<{ code: number | null; log: string }> => {
    const a = await cluster.add('m1');
    a.dataDir = join(cluster.root, label);
    cpSync(m1.dataDir, a.dataDir, { recursive: true });
    damage(a.dataDir);
    await then?.(a.dataDir);
    cluster.start(a, bootstrap);
    const code = await cluster.exited(a);
    return { code, log: a.log.join('') };
  };
  const refused = async (label: string, damage: (dir: string) => void, message: RegExp, bootstrap = true, then?: (dir: string) => Promise<void>): Promise<void> => {
    const { code, log } = await tryStart(label, damage, bootstrap, then);
    t.equal(code, 1, `${label}: refused`);
    t.match(log, message, `${label}: says what is wrong`);
    t.notMatch(log, /\n\s+at /, `${label}: no stack trace`);
  };

  const token = readFileSync(join(m1.dataDir, 'token'), 'utf8');
  await refused('no-identity-bootstrap', (d) => rmSync(join(d, 'identity.json')), /holds a member's data \(applied index \d+, Raft log to \d+\) but no identity\.json/);
  t.equal(readFileSync(join(cluster.root, 'no-identity-bootstrap', 'token'), 'utf8'), token, 'the token file is left as it was');
  await refused('no-identity-join', (d) => rmSync(join(d, 'identity.json')), /but no identity\.json/, false);
  await refused('no-raft-log', (d) => rmSync(join(d, 'raft'), { recursive: true }), /cannot open the Raft log \(.*log\): .*does not exist/);
  // An empty Raft log where the member's was (a "reset" store): its term, vote and entries are gone.
  await refused('empty-raft-log', (d) => rmSync(join(d, 'raft'), { recursive: true }), /the Raft log \(raft\/\) is missing or empty while the applied state is at index \d+/, true, async (d) => {
    const db = new ClassicLevel(join(d, 'raft', 'log'));
    await db.open();
    await db.close();
  });
  await refused('kv-no-current', (d) => rmSync(join(d, 'kv', 'CURRENT')), /cannot open the KV store \(.*kv\): its CURRENT file is missing/);
  await refused('kv-log-bit-rot', (d) => corruptMiddle(largestLog(join(d, 'kv'))), /the KV store \(.*kv\) is damaged: LevelDB skipped data it could not read/);
  await refused('raft-log-bit-rot', (d) => corruptMiddle(largestLog(join(d, 'raft', 'log'))), /the Raft log \(.*log\) is damaged: LevelDB skipped data it could not read/);
  await refused('kv-table-bit-rot', () => undefined, /the KV store is damaged: the value under key [0-9a-f]+ fails its checksum/, true, (d) => rotInTable(join(d, 'kv'), NOISE));
  await refused('identity-truncated', (d) => writeFileSync(join(d, 'identity.json'), '{"id":12'), /identity\.json is damaged/);
  await refused('token-damaged', (d) => writeFileSync(join(d, 'token'), 'garbage\n'), /token is missing or damaged \(not a picloud join token/);

  // A restored snapshot founds a new cluster; it cannot join one.
  const restoredDir = join(cluster.root, 'restored');
  const r = spawnSync(process.execPath, [CLI, 'snapshot', 'restore', snap, '--data-dir', restoredDir], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.status, 0, `restore: ${r.stderr}`);
  const joiner = await cluster.add('m1');
  joiner.dataDir = restoredDir;
  cluster.start(joiner, false);
  t.equal(await cluster.exited(joiner), 1, 'a restored data dir given --join: refused');
  t.match(joiner.log.join(''), /holds a restored snapshot: start it with --bootstrap/);

  // Nor is a restore mixed into a directory holding other files (etcdctl refuses it too).
  const busy = join(cluster.root, 'busy');
  mkdirSync(busy);
  writeFileSync(join(busy, 'notes.txt'), 'mine\n');
  const intoBusy = spawnSync(process.execPath, [CLI, 'snapshot', 'restore', snap, '--data-dir', busy], { encoding: 'utf8', timeout: 30_000 });
  t.equal(intoBusy.status, 1, 'restore into a directory that is not empty: refused');
  t.match(intoBusy.stderr, /busy is not empty; restore into a new directory/);
  t.same(readdirSync(busy), ['notes.txt'], 'and nothing is added to it');

  // A restore cut short (the command killed before it finished): the agent refuses the dir
  // (its store would pass for an interrupted first bootstrap and found an empty cluster); the
  // restore run again starts over.
  const cut = join(cluster.root, 'cut');
  const restore = (): ReturnType<typeof spawnSync> => spawnSync(process.execPath, [CLI, 'snapshot', 'restore', snap, '--data-dir', cut], { encoding: 'utf8', timeout: 30_000 });
  t.equal(restore().status, 0, 'a restore to cut short');
  rmSync(join(cut, 'restored-snapshot'));
  writeFileSync(join(cut, 'restoring-snapshot'), '{}\n');
  const cutAgent = await cluster.add('m1');
  cutAgent.dataDir = cut;
  cluster.start(cutAgent, true);
  t.equal(await cluster.exited(cutAgent), 1, 'a restore cut short, given --bootstrap: refused');
  t.match(cutAgent.log.join(''), /holds a snapshot restore that was cut short: run `picloud-node snapshot restore FILE --data-dir .*cut` again \(it starts over\)/);
  t.notOk(existsSync(join(cut, 'raft')), 'and nothing added to it');
  const redo = restore();
  t.equal(redo.status, 0, `the restore run again: ${String(redo.stderr)}`);
  t.ok(existsSync(join(cut, 'restored-snapshot')) && !existsSync(join(cut, 'restoring-snapshot')), 'finished this time');
  // Cut short after its "done" marker, before removing the "restoring" one: finished, and taken.
  writeFileSync(join(cut, 'restoring-snapshot'), '{}\n');
  const done = await cluster.add('m1');
  done.dataDir = cut;
  cluster.start(done, true);
  await cluster.ready(done);
  t.notOk(existsSync(join(cut, 'restoring-snapshot')), 'a finished restore with its restoring marker left: founds the cluster, the marker removed');
  cluster.kill(done, 'SIGTERM');
  t.equal(await cluster.exited(done), 0, 'stopped');

  // The control: an untouched copy starts and holds every key.
  const intact = await cluster.add('m1');
  intact.dataDir = join(cluster.root, 'intact');
  cpSync(m1.dataDir, intact.dataDir, { recursive: true });
  cluster.start(intact, true);
  await cluster.ready(intact);
  const get = etcdctl(cluster.endpoints([intact]), ['get', 'k', '--prefix', '--keys-only', '-w', 'json']);
  t.equal((JSON.parse(get.stdout) as { count?: number }).count, KEYS, 'an untouched copy starts and serves every key');
});
