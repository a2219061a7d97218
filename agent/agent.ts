/**
 * The agent process: starts the subsystems the config asks for, wires them to the HTTP
 * port, and stops them in reverse order on SIGINT/SIGTERM. Subsystems not built yet are
 * accepted on the command line and logged as not in use (DESIGN.md's contract).
 */
import { mkdirSync } from 'node:fs';
import pino from 'pino';
import { AgentConfig } from './config.js';
import { AgentHttp, sendJson } from './http.js';
import { startManager, RunningManager } from './manager.js';

export interface RunningAgent {
  config: AgentConfig;
  stop(): Promise<void>;
}

export const logger = pino({ name: 'picloud-node', level: process.env.PICLOUD_LOG_LEVEL ?? 'info' }, pino.destination(2));

export async function runAgent(config: AgentConfig): Promise<RunningAgent> {
  mkdirSync(config.dataDir, { recursive: true });
  const log = logger.child({ node: config.name });
  let manager: RunningManager | undefined;
  const http = new AgentHttp({
    ready: () => {
      if (!manager) return { ok: false, reason: 'not a member of a cluster yet' };
      return manager.readiness();
    },
  });
  const stops: Array<() => Promise<void>> = [];
  try {
    if (config.role === 'manager') {
      manager = await startManager(config, log);
      stops.push(() => manager!.stop());
    } else {
      log.warn('role worker: the KV store is used as a client; worker subsystems are not built yet');
    }
    for (const [flag, p] of [
      ['lb-port', config.lbPort],
      ['s3-port', config.s3Port],
      ['dns-port', config.dnsPort],
    ] as const) {
      log.info({ port: p }, `--${flag}: subsystem not built yet; port not used`);
    }
    if (manager) {
      const node = manager.node;
      http.addRoutes([
        {
          method: 'GET',
          path: '/v1/raft/status',
          handler: (_req, res) => {
            const st = node.driver.node.status();
            sendJson(res, 200, { id: st.id.toString(16), name: config.name, lead: st.lead.toString(16), term: st.term, role: st.role, commit: st.commit, applied: st.applied, voters: st.conf.voters.map((v) => v.toString(16)), learners: st.conf.learners.map((v) => v.toString(16)) });
          },
        },
      ]);
    }
    await http.listen(config.bindAddr, config.httpPort);
    stops.push(() => http.close());
    log.info({ http: `${config.bindAddr}:${config.httpPort}` }, 'agent started');
  } catch (e) {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    throw e;
  }
  return {
    config,
    stop: async () => {
      for (const s of stops.reverse()) await s().catch((e) => log.warn({ err: e }, 'stop failed'));
    },
  };
}
