/**
 * The agent process: starts the subsystems the config asks for, wires them to the HTTP
 * port, and stops them in reverse order on SIGINT/SIGTERM. Subsystems not built yet are
 * accepted on the command line and logged as not in use (DESIGN.md's contract).
 */
import { ensurePrivateDir } from '../core/storage/private-dir.js';
import { lockDataDir } from './data-dir-lock.js';
import { checkPortsFree } from './port-check.js';
import { setLevelMaxOpenFiles } from '../core/storage/level-open.js';
import { applyOpenFilesBudget } from './open-files.js';
import { autoTlsNames, keepAutoTlsFresh, loadOrCreateAutoTls, type AutoTls } from './auto-tls.js';
import pino from 'pino';
import { Counter, Gauge } from 'prom-client';
import { AgentConfig, ConfigError } from './config.js';
import { AgentHttp, sendJson } from './http.js';
import { startManager, RunningManager } from './manager.js';
import { registerRaftMetrics } from './raft-metrics.js';
import { GossipSubsystem, clusterKeyringAuthority, startGossip, type StartGossipOptions } from './gossip-subsystem.js';
import { checkingAuthority } from '../core/gossip/keyring/authority.js';
import { formatToken, parseJoinToken, type JoinToken } from '../core/net/token.js';
import { formatHostPort } from '../core/net/address.js';
import { ThrottledReports } from '../core/net/throttled-reports.js';
import { AdvertiseError, defaultAdvertiseAddress, isWildcard } from '../core/net/advertise.js';

export interface AgentEnd {
  reason: string;
  failed: boolean;
}

export interface RunningAgent {
  config: AgentConfig;
  /**
   * Resolves when the agent must stop by itself: its manager was removed from the cluster
   * (failed false, unless marking the data dir as removed failed), or writing to its data dir
   * failed (failed true: the process should exit with an error, so a supervisor shows it and
   * restarts it once the disk is fixed).
   */
  ended: Promise<AgentEnd>;
  stop(): Promise<void>;
}

export const AGENT_VERSION = '0.1.0';
/** How often gossip's view of the managers is handed to Raft's transport. */
export const RAFT_PEERS_FROM_GOSSIP_MS = 1_000;
/** Failed accepts on the http port (out of file descriptors) are logged at most this often. */
const ACCEPT_ERROR_REPORT_MS = 10_000;

/**
 * Gossip knows where every live manager is now (its address, its peer port and Raft id in its
 * metadata); Raft's transport takes that for a member it cannot reach where it dials it. So
 * managers whose addresses all changed at once find each other again through the gossip seeds
 * (--join by name).
 */
function tellRaftWhereManagersAre(g: GossipSubsystem, m: RunningManager): void {
  for (const member of g.node.members()) {
    if (member.status !== 'alive' || typeof member.meta.raft !== 'string') continue;
    const id = Number.parseInt(member.meta.raft, 16);
    const peer = (member.meta.ports as { peer?: unknown } | undefined)?.peer;
    if (!Number.isSafeInteger(id) || id <= 0 || typeof peer !== 'number' || !Number.isInteger(peer) || peer < 1 || peer > 65535) continue;
    m.node.peerSeenAt(id, formatHostPort({ host: member.host, port: peer }));
  }
}

/**
 * What gossip joins with: a manager's cluster token, or a worker's --token of either kind, and
 * who may change the keyring for others (a cluster token signs changes, a worker token checks).
 */
function gossipCredentials(manager: RunningManager | undefined, token: string | undefined): Pick<StartGossipOptions, 'secret' | 'workerToken' | 'keyringAuthority'> {
  const cluster = (t: string) => ({ secret: t, keyringAuthority: clusterKeyringAuthority(t) });
  if (manager) return cluster(manager.node.tokenString());
  if (token === undefined) return { secret: undefined };
  let parsed: JoinToken;
  try {
    parsed = parseJoinToken(token);
  } catch (e) {
    throw new ConfigError(`--token: ${(e as Error).message}`);
  }
  if (parsed.kind === 'cluster') return cluster(formatToken(parsed.secret));
  return { secret: undefined, workerToken: parsed, keyringAuthority: checkingAuthority(parsed.authorityKey) };
}

export const logger = pino({ name: 'picloud-node', level: process.env.PICLOUD_LOG_LEVEL ?? 'info' }, pino.destination(2));

/**
 * The address this node tells others to reach it at: --advertise, else --bind, else (bound to
 * every interface, the default) the machine's own choice (core/net/advertise.ts).
 */
function resolveAdvertise(config: AgentConfig, log: pino.Logger): string | undefined {
  if (config.advertiseAddr !== undefined || !isWildcard(config.bindAddr)) return config.advertiseAddr;
  try {
    const address = defaultAdvertiseAddress();
    log.info({ address }, 'advertising this address to the cluster (no --advertise given; set it to choose another)');
    return address;
  } catch (e) {
    if (e instanceof AdvertiseError) throw new ConfigError(e.message);
    throw e;
  }
}

function autoTlsPair(config: AgentConfig): Promise<AutoTls> {
  return loadOrCreateAutoTls(config.dataDir, autoTlsNames(config.bindAddr, config.advertiseAddr), config.autoTls!);
}

/** --auto-tls: the member's own certificate, found in the data dir or made now (agent/auto-tls.ts). */
async function autoClientTls(config: AgentConfig, log: pino.Logger): Promise<AgentConfig['clientTls']> {
  const auto = await autoTlsPair(config);
  log.info(
    { cert: auto.tls.files.cert, sha256: auto.fingerprint256, validTo: auto.validTo, names: auto.names, made: auto.made === 'new' ? 'now' : auto.made === 'expiring' ? 'now, the previous one expiring' : 'at an earlier start' },
    '--auto-tls: the client port uses this self-signed certificate (etcdctl: --insecure-transport=false --insecure-skip-tls-verify, or --cacert naming it)',
  );
  return auto.tls;
}

/** The agent failed while it was still starting (its reason, e.g. another process is this member). */
export class AgentStartError extends Error {
  readonly code = 'AGENT_START_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'AgentStartError';
  }
}

export async function runAgent(given: AgentConfig): Promise<RunningAgent> {
  const log = logger.child({ node: given.name });
  // Before the data dir is made: a board with no address to advertise leaves nothing behind.
  const config: AgentConfig = { ...given, advertiseAddr: resolveAdvertise(given, log) };
  const wider = ensurePrivateDir(config.dataDir);
  if (wider !== undefined) log.warn({ dataDir: config.dataDir, was: wider.toString(8) }, 'the data dir could be read by other accounts on this board: made it private (0700)');
  // Before anything in the data dir is read or written (TLS files, gossip state, the stores).
  const unlock = lockDataDir(config.dataDir);
  try {
    return await runLocked(config, log, unlock);
  } catch (e) {
    unlock();
    throw e;
  }
}

async function runLocked(config: AgentConfig, log: pino.Logger, unlock: () => void): Promise<RunningAgent> {
  // Before the data dir is bootstrapped or the cluster joined.
  await checkPortsFree(config);
  for (const notice of config.notices) log.warn(notice);
  // Only a manager serves the client port.
  if (config.role === 'manager' && config.autoTls !== undefined) config.clientTls = await autoClientTls(config, log);
  // Before any store or listener opens: every descriptor comes out of one budget.
  const files = applyOpenFilesBudget(log, setLevelMaxOpenFiles);
  let manager: RunningManager | undefined;
  let gossip: GossipSubsystem | undefined;
  const http = new AgentHttp({
    ready: () => {
      if (manager) return manager.readiness();
      // A worker is ready once gossip has joined it to the cluster (it sees a live peer).
      const peers = gossip?.members().filter((m) => m.name !== config.name && m.state === 'alive').length ?? 0;
      return peers > 0 ? { ok: true, reason: `${peers} live peers` } : { ok: false, reason: 'not joined to the cluster yet' };
    },
  });
  const stops: Array<() => Promise<void>> = [];
  let end: (e: AgentEnd) => void = () => undefined;
  const ended = new Promise<AgentEnd>((resolve) => (end = resolve));
  // A failure while still starting (the gossip join can take a while) ends the start at once.
  let starting = true;
  const failedWhileStarting = new Promise<never>((_resolve, reject) => {
    void ended.then((e) => {
      if (starting && e.failed) reject(new AgentStartError(e.reason));
    });
  });
  failedWhileStarting.catch(() => undefined); // raced below; never unhandled
  let gossipStart: Promise<GossipSubsystem> | undefined;
  let leaveGossipOnStop = true;
  try {
    if (config.role === 'manager') {
      manager = await startManager(config, log, {
        onRemoved: (markError) => end(markError
          ? { reason: `removed from the cluster, but marking the data dir failed: ${markError.message}`, failed: true }
          : { reason: 'removed from the cluster', failed: false }),
        onFatal: (err) => end({ reason: `writing to the data dir failed: ${err.message}`, failed: true }),
        onDuplicate: (err) => {
          // Not a gossip leave: the name is the other process's too, which goes on.
          leaveGossipOnStop = false;
          end({ reason: err.message, failed: true });
        },
        metrics: async () => ({ contentType: http.registry.contentType, body: await http.registry.metrics() }),
        clientConnections: files.client,
      });
      stops.push(() => manager!.stop());
      if (config.autoTls !== undefined) {
        const stopRenewing = keepAutoTlsFresh(() => autoTlsPair(config), (outcome) => {
          if ('error' in outcome) log.warn({ reason: outcome.error.message }, '--auto-tls: the daily look at the certificate failed; the port serves the one it has');
          else log.info({ sha256: outcome.replaced.fingerprint256, validTo: outcome.replaced.validTo }, '--auto-tls: replaced the certificate, which expires soon; new connections use the new one');
        });
        stops.push(async () => stopRenewing());
      }
    } else if (config.bootstrap) {
      throw new ConfigError('a worker joins an existing cluster: use --join HOST[:PORT] --token TOKEN (only managers --bootstrap)');
    }
    // Gossip membership on every node. Its key derives from the cluster secret (a worker token
    // carries it alone), so a node without a token can neither join nor inject state. A worker
    // restarted without --token joined before (agent/config.ts checked): the keyring it saved
    // then is its key.
    gossipStart = startGossip({
      name: config.name,
      bindAddr: config.bindAddr,
      advertiseAddr: config.advertiseAddr,
      gossipPort: config.gossipPort,
      join: config.join,
      ...gossipCredentials(manager, config.token),
      dataDir: config.dataDir,
      meta: {
        role: config.role,
        // A manager's Raft id: members that cannot reach it find its peer address here.
        ...(manager ? { raft: manager.node.id.toString(16) } : {}),
        version: AGENT_VERSION,
        ports: { client: config.clientPort, peer: config.peerPort, http: config.httpPort, lb: config.lbPort, s3: config.s3Port, dns: config.dnsPort },
      },
      logger: log,
    });
    gossip = await Promise.race([gossipStart, failedWhileStarting]);
    const g = gossip;
    stops.push(async () => {
      if (leaveGossipOnStop) await g.leave().catch(() => undefined);
      await g.stop();
    });
    if (manager) {
      const m = manager;
      g.node.setJoinHandler((sock, onAuthenticated) => m.node.joinConnection(sock, onAuthenticated));
      const timer = setInterval(() => tellRaftWhereManagersAre(g, m), RAFT_PEERS_FROM_GOSSIP_MS);
      stops.push(async () => clearInterval(timer));
    }
    http.addRoutes(g.httpRoutes());
    // Gossip counters (packets dropped for failed authentication among them) on /metrics.
    new Gauge({
      name: 'picloud_gossip',
      help: 'Gossip counters by name (packets, bytes, authentication failures, replays, malformed, ...)',
      labelNames: ['counter'],
      registers: [http.registry],
      collect() {
        for (const [k, v] of Object.entries(g.metrics())) if (Number.isFinite(v)) this.set({ counter: k }, v);
      },
    });
    for (const [flag, p] of [
      ['lb-port', config.lbPort],
      ['s3-port', config.s3Port],
      ['dns-port', config.dnsPort],
    ] as const) {
      log.info({ port: p }, `--${flag}: subsystem not built yet; port not used`);
    }
    if (manager) {
      const node = manager.node;
      registerRaftMetrics(http.registry, node);
      const m = manager;
      new Gauge({
        name: 'picloud_watch_buffered_bytes',
        help: 'Watch responses queued for clients and not yet written, all streams together (bounded: slow streams pause past half of 64 MiB)',
        registers: [http.registry],
        collect() {
          this.set(m.watchBufferedBytes());
        },
      });
      new Gauge({
        name: 'picloud_client_request_bytes_held',
        help: 'Bytes reserved on the client port for request messages and bodies not yet whole (bounded: 64 MiB, 8 MiB a connection)',
        registers: [http.registry],
        collect() {
          this.set(m.requestBytes().held);
        },
      });
      new Gauge({
        name: 'picloud_client_request_streams_waiting',
        help: 'Client requests not read on until their message fits under the bound on held request bytes',
        registers: [http.registry],
        collect() {
          this.set(m.requestBytes().waiting);
        },
      });
      let refusedSeen = 0;
      new Counter({
        name: 'picloud_client_request_streams_refused_total',
        help: 'Client requests refused (RESOURCE_EXHAUSTED) because too many were waiting for room to be read',
        registers: [http.registry],
        collect() {
          const refused = m.requestBytes().refused;
          this.inc(refused - refusedSeen);
          refusedSeen = refused;
        },
      });
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
    const acceptErrors = new ThrottledReports(ACCEPT_ERROR_REPORT_MS, (reason) => log.warn({ reason }, 'http port'));
    await http.listen(config.bindAddr, config.httpPort, files.http, (err) => acceptErrors.add(`accepting a connection: ${err.message}`));
    stops.push(() => http.close());
    log.info({ http: `${config.bindAddr}:${config.httpPort}` }, 'agent started');
  } catch (e) {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    // Gossip still joining when a failure ended the start: stop it once it is up.
    if (gossip === undefined) void gossipStart?.then((g) => g.stop()).catch(() => undefined);
    throw e;
  }
  starting = false;
  return {
    config,
    ended,
    stop: async () => {
      for (const s of stops.reverse()) await s().catch((e) => log.warn({ err: e }, 'stop failed'));
      unlock();
    },
  };
}
