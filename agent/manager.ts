/**
 * A manager: a Raft voter of the state store. This first version runs a single-node Raft
 * group with in-memory persistence (the dev node); the durable, networked manager replaces
 * it as core/storage, core/net and core/kv land.
 */
import type { Logger } from 'pino';
import { MemoryPersistence, RaftDriver } from '../core/api/raft-driver.js';
import { bootstrap as bootstrapStorage } from '../core/raft/storage.js';
import { Role } from '../core/raft/types.js';
import { Prng } from '../core/sim/prng.js';
import { AgentConfig } from './config.js';

export interface ManagerNode {
  driver: RaftDriver;
  readiness(): { ok: boolean; reason: string };
  stop(): Promise<void>;
}

export async function startManager(config: AgentConfig, log: Logger): Promise<ManagerNode> {
  if (config.join.length > 0) throw new Error('joining a cluster needs the networked manager (not built yet)');
  const persistence = new MemoryPersistence();
  bootstrapStorage(persistence.storage, [1]);
  const driver = new RaftDriver(
    { id: 1, storage: persistence.storage, random: new Prng(Date.now() >>> 0), electionTicks: config.electionTicks },
    persistence,
    { send: () => undefined },
    { apply: () => undefined, restore: () => undefined },
    { tickMs: config.tickMs, requestTimeoutMs: 5000 },
  );
  let lead = 0;
  driver.onLeaderChange((l, role) => {
    lead = l;
    log.info({ lead: l, role }, role === Role.Leader ? 'became leader' : 'leader changed');
  });
  driver.start();
  for (const [flag, p] of [
    ['client-port', config.clientPort],
    ['peer-port', config.peerPort],
    ['gossip-port', config.gossipPort],
  ] as const) {
    log.info({ port: p }, `--${flag}: not used yet by this manager`);
  }
  return {
    driver,
    readiness: () => (lead !== 0 ? { ok: true, reason: `leader is ${lead}` } : { ok: false, reason: 'no leader yet' }),
    stop: async () => driver.stop(),
  };
}
