/** One bootstrapped member in this process (no client port traffic), for probes of the store's own costs. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { ManagerEtcdBackend } from '../../core/api/etcd-backend.js';
import { ManagerNode } from '../../core/api/manager-node.js';
import { freePort } from '../../test/helpers/ports.js';

/** Runs `fn` against a fresh ready member and its etcd backend; stops it and removes its data dir after. */
export async function withInProcessMember(name: string, fn: (node: ManagerNode, backend: ManagerEtcdBackend) => Promise<void>): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), `picloud-${name}-`));
  const node = await ManagerNode.start({
    name, dataDir, bindAddr: '127.0.0.1', clientPort: await freePort(), peerPort: await freePort(), joinPort: await freePort(),
    bootstrap: true, join: [], tickMs: 100, electionTicks: 10, logger: pino({ level: 'silent' }),
  });
  try {
    while (!node.readiness().ok) await new Promise((r) => setTimeout(r, 20));
    await fn(node, new ManagerEtcdBackend(node));
  } finally {
    await node.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
