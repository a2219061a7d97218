/**
 * The incarnation a node last announced outlives a restart (agent/gossip-files.ts,
 * gossip/incarnation.json). A missing file is a first start; a damaged one is said in a warning
 * and the node starts at 1 all the same, then climbs back above what the others still hold for
 * it, so it is alive to them again. Real sockets on 127.0.0.1, fast timing.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGossip, type GossipSubsystem } from '../../agent/gossip-subsystem.js';
import { INCARNATION_FILE, MAX_INCARNATION_FILE_BYTES, gossipDir, loadIncarnation } from '../../agent/gossip-files.js';
import { LOCAL_CONFIG } from '../../core/gossip/config.js';
import { Keyring } from '../../core/gossip/keyring/index.js';
import { GossipNode } from '../../core/net/gossip-node.js';
import { until } from '../helpers/wait.js';

const SECRET = 'incarnation-file-test-secret';
const dir = mkdtempSync(join(tmpdir(), 'picloud-gossip-incarnation-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A data dir whose gossip/incarnation.json holds `contents` (none if undefined). */
function dataDirWith(name: string, contents: string | undefined): string {
  const d = join(dir, name);
  mkdirSync(gossipDir(d), { recursive: true });
  if (contents !== undefined) writeFileSync(join(gossipDir(d), INCARNATION_FILE), contents);
  return d;
}

function load(d: string): { incarnation: number; warnings: string[] } {
  const warnings: string[] = [];
  return { incarnation: loadIncarnation(d, (m) => warnings.push(m)), warnings };
}

t.test('loadIncarnation: missing is 0, quietly; damage is 0 with a warning naming the file', async (t) => {
  t.same(load(dataDirWith('missing', undefined)), { incarnation: 0, warnings: [] }, 'missing: a first start');
  t.same(load(dataDirWith('good', '{"incarnation":7}')), { incarnation: 7, warnings: [] });
  const damaged: Array<[string, string]> = [
    ['torn', '{"incarnation":'], ['empty', ''], ['null', 'null'], ['number', '7'], ['string', '{"incarnation":"7"}'],
    ['negative', '{"incarnation":-1}'], ['fraction', '{"incarnation":1.5}'], ['unsafe', '{"incarnation":9007199254740993}'],
    ['too-large', `{"incarnation":7}${' '.repeat(MAX_INCARNATION_FILE_BYTES)}`],
  ];
  for (const [name, text] of damaged) {
    const r = load(dataDirWith(name, text));
    t.equal(r.incarnation, 0, `${name}: 0`);
    t.equal(r.warnings.length, 1, `${name}: one warning`);
    t.match(r.warnings[0], new RegExp(`${INCARNATION_FILE.replace('.', '\\.')}.*starting at incarnation 1`), `${name}: it names the file`);
  }
});

t.test('a node restarted on a damaged incarnation.json warns, and is alive to the others above its old incarnation', async (t) => {
  const dataDir = join(dir, 'w');
  const warnings: string[] = [];
  const start = (port: number): Promise<GossipSubsystem> =>
    startGossip({
      name: 'w', bindAddr: '127.0.0.1', gossipPort: port, join: [], secret: SECRET, dataDir, meta: { role: 'worker' }, profile: 'local',
      logger: { info: () => {}, warn: (...a) => warnings.push(a.join(' ')) },
    });
  let w = await start(0);
  const port = w.node.port;
  const e = await GossipNode.start({ name: 'e', bindHost: '127.0.0.1', bindPort: 0, keyring: Keyring.fromSecret(SECRET), config: { ...LOCAL_CONFIG } });
  t.teardown(async () => {
    await w.stop().catch(() => {});
    await e.stop();
  });
  await e.join([{ host: '127.0.0.1', port }]);
  await until('e sees w', () => e.members().some((m) => m.name === 'w' && m.status === 'alive'), 5_000);
  // Two more restarts: e now holds w at incarnation 3.
  for (let i = 0; i < 2; i++) {
    await w.stop();
    w = await start(port);
    await e.join([{ host: '127.0.0.1', port }]);
  }
  await until('e holds w at 3', () => e.members().find((m) => m.name === 'w')?.incarnation === 3, 5_000);
  await w.stop();
  writeFileSync(join(gossipDir(dataDir), INCARNATION_FILE), '{"incarn');
  w = await start(port);
  t.equal(w.node.incarnation, 1, 'the damaged file: started at 1');
  t.equal(warnings.filter((m) => /ignoring unreadable .*incarnation\.json/.test(m)).length, 1, 'a warning names the file');
  t.same(JSON.parse(readFileSync(join(gossipDir(dataDir), INCARNATION_FILE), 'utf8')), { incarnation: 1 }, 'the file written whole again');
  await e.join([{ host: '127.0.0.1', port }]);
  await until('w back above 3', () => w.node.incarnation >= 3, 10_000);
  await until('e holds w alive at its incarnation', () => {
    const m = e.members().find((x) => x.name === 'w');
    return m?.status === 'alive' && m.incarnation === w.node.incarnation;
  }, 10_000);
  t.ok(w.node.incarnation >= 3, `w climbed back to ${w.node.incarnation}`);
});
