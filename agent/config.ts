/**
 * The agent's configuration: the command line contract of DESIGN.md, an optional JSON
 * config file, and the embedded defaults (`--dev` needs nothing else). Validation lives
 * here so every bad flag gets one clear error before anything starts listening.
 */
import { AUTH_TOKEN_TTL_SECONDS } from '../core/api/credentials.js';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_SNAPSHOT_EVERY_ENTRIES, LOG_ENTRIES_KEPT_AFTER_SNAPSHOT } from '../core/api/snapshot-policy.js';
import { checkClientTls, type ClientTls } from '../core/net/etcd/client-tls.js';
import { MEMBER_NAME_PATTERN } from '../core/net/join.js';
import type { AutoTlsRequest } from './auto-tls.js';
import { parseHostPort } from '../core/net/address.js';
import { isWildcard } from '../core/net/advertise.js';
import { parseJoinToken, type JoinToken } from '../core/net/token.js';
import { joinedBefore } from './gossip-files.js';
import { PROGRESS_NOTIFY_INTERVAL_MS, QUOTA_BYTES_MIN, parseAutoCompaction, type AutoCompactionConfig } from '../core/kv/index.js';
import { parseDurationMs } from '../core/kv/duration.js';

export type Role = 'manager' | 'worker';

export interface AgentConfig {
  name: string;
  dataDir: string;
  bootstrap: boolean;
  join: string[];
  token: string | undefined;
  role: Role;
  bindAddr: string;
  advertiseAddr: string | undefined;
  clientPort: number;
  peerPort: number;
  gossipPort: number;
  httpPort: number;
  lbPort: number;
  s3Port: number;
  dnsPort: number;
  dev: boolean;
  /** Raft tick length; election timeout is electionTicks ticks (see core/raft). */
  tickMs: number;
  electionTicks: number;
  /** etcd's --quota-backend-bytes; undefined: the default for this machine's RAM (core/kv/quota.ts). */
  quotaBackendBytes: number | undefined;
  /** etcd's --auto-compaction-mode / --auto-compaction-retention; undefined: keep one hour. */
  autoCompaction: AutoCompactionConfig | undefined;
  /** etcd's --snapshot-count: applied entries between Raft log compactions. */
  snapshotCount: number;
  /** etcd's --auth-token-ttl: seconds an auth token lasts after its last use on a member. */
  authTokenTtlSeconds: number;
  /** etcd's --experimental-snapshot-catchup-entries: log entries kept behind a compaction. */
  snapshotCatchUpEntries: number;
  /** etcd's --experimental-watch-progress-notify-interval: how often idle progress_notify watchers hear the revision. */
  watchProgressNotifyIntervalMs: number;
  /**
   * --new-board BOARD: the data dir (its SD card) was moved here from BOARD for good, or this
   * machine's id changed; take it over (agent/board-id.ts). Command line only, and naming the
   * board it replaces: left in a config file or service, it cannot take over a later copy.
   */
  newBoard: string | undefined;
  /** etcd's --cert-file / --key-file / --trusted-ca-file / --client-cert-auth: the client port over TLS; plain when undefined. */
  clientTls: ClientTls | undefined;
  /**
   * etcd's --auto-tls without --cert-file/--key-file: the client port over TLS with a certificate
   * the member makes itself (agent/auto-tls.ts), keeping --trusted-ca-file / --client-cert-auth.
   */
  autoTls: AutoTlsRequest | undefined;
  /** Flags taken but without effect, each with why: the agent logs them as warnings at start. */
  notices: string[];
}

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Default ports (DESIGN.md). */
export const DEFAULT_PORTS = {
  clientPort: 2379,
  peerPort: 2380,
  gossipPort: 7946,
  httpPort: 7480,
  lbPort: 8080,
  s3Port: 9000,
  dnsPort: 8600,
} as const;

/**
 * Raft timing for a LAN of Pis on SD cards: 100 ms ticks and a 10-tick (1–2 s randomized)
 * election timeout — etcd's defaults are 100 ms / 1 s; the extra room absorbs SD-card fsync
 * stalls of several hundred ms without needless elections (etcd#10215).
 */
export const DEFAULT_TICK_MS = 100;
export const DEFAULT_ELECTION_TICKS = 10;

/** etcd's bounds on its timing flags (etcdserver refuses the same): the longest election timeout, */
export const ELECTION_TIMEOUT_MAX_MS = 50_000;
/** and the least election timeout per heartbeat interval. */
export const ELECTION_TIMEOUT_MIN_HEARTBEATS = 5;

const OPTIONS = {
  name: { type: 'string' },
  'data-dir': { type: 'string' },
  bootstrap: { type: 'boolean' },
  join: { type: 'string', multiple: true },
  token: { type: 'string' },
  role: { type: 'string' },
  bind: { type: 'string' },
  advertise: { type: 'string' },
  'client-port': { type: 'string' },
  'peer-port': { type: 'string' },
  'gossip-port': { type: 'string' },
  'http-port': { type: 'string' },
  'lb-port': { type: 'string' },
  's3-port': { type: 'string' },
  'dns-port': { type: 'string' },
  config: { type: 'string' },
  dev: { type: 'boolean' },
  'new-board': { type: 'string' },
  'tick-ms': { type: 'string' },
  'election-ticks': { type: 'string' },
  'heartbeat-interval': { type: 'string' },
  'election-timeout': { type: 'string' },
  'quota-backend-bytes': { type: 'string' },
  'auto-compaction-mode': { type: 'string' },
  'auto-compaction-retention': { type: 'string' },
  'snapshot-count': { type: 'string' },
  'snapshot-catchup-entries': { type: 'string' },
  'auth-token-ttl': { type: 'string' },
  'experimental-watch-progress-notify-interval': { type: 'string' },
  'cert-file': { type: 'string' },
  'key-file': { type: 'string' },
  'trusted-ca-file': { type: 'string' },
  'client-cert-auth': { type: 'boolean' },
  'auto-tls': { type: 'boolean' },
  'peer-auto-tls': { type: 'boolean' },
} as const;

/** Keys whose value a config file may give as a JSON number (or as the flag's text). */
const NUMERIC_KEYS = new Set([
  'client-port', 'peer-port', 'gossip-port', 'http-port', 'lb-port', 's3-port', 'dns-port', 'tick-ms', 'election-ticks',
  'heartbeat-interval', 'election-timeout', 'quota-backend-bytes', 'auto-compaction-retention', 'snapshot-count',
  'snapshot-catchup-entries', 'auth-token-ttl',
]);

/**
 * A config file holds the agent's flags by name: a key that is none of them (a typo such as
 * "client_port" would leave the default in force) and a value of the wrong type are refused,
 * naming them, rather than ignored or coerced ("snapshot-count": true read as 1).
 */
function checkConfigFile(path: string, file: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(file)) {
    // Own keys only: "toString" or "__proto__" are not flags.
    const opt = Object.hasOwn(OPTIONS, key) ? (OPTIONS as Record<string, { type: string; multiple?: boolean }>)[key] : undefined;
    if (opt === undefined || key === 'config') {
      throw new ConfigError(`--config ${path}: unknown key "${key}" (the keys are the agent's flag names without "--", e.g. "client-port")`);
    }
    const ok =
      opt.type === 'boolean' ? typeof value === 'boolean'
      : opt.multiple === true ? Array.isArray(value) && value.every((v) => typeof v === 'string')
      : typeof value === 'string' || (NUMERIC_KEYS.has(key) && typeof value === 'number');
    if (!ok) {
      const want = opt.type === 'boolean' ? 'true or false' : opt.multiple === true ? 'a list of strings' : NUMERIC_KEYS.has(key) ? 'a number or a string' : 'a string';
      throw new ConfigError(`--config ${path}: "${key}" must be ${want}, not ${JSON.stringify(value)}`);
    }
  }
}

/** Shortest progress-notify interval taken: each one walks every watcher. */
const WATCH_PROGRESS_NOTIFY_MIN_MS = 100;
/** Longest: a day (setInterval's limit is ~24.8 days). */
const WATCH_PROGRESS_NOTIFY_MAX_MS = 86_400_000;

function progressNotifyInterval(v: unknown): number {
  if (v === undefined) return PROGRESS_NOTIFY_INTERVAL_MS;
  const ms = parseDurationMs(String(v));
  if (ms === undefined || ms < WATCH_PROGRESS_NOTIFY_MIN_MS || ms > WATCH_PROGRESS_NOTIFY_MAX_MS) {
    throw new ConfigError(`--experimental-watch-progress-notify-interval: expected a duration from 100ms to 24h (e.g. 10m, 5s), got "${String(v)}"`);
  }
  return ms;
}

/** Longest --auth-token-ttl: a day (a token is a password's stand-in on the wire). */
const AUTH_TOKEN_TTL_MAX_SECONDS = 86_400;

/** Largest --snapshot-count: the log behind a snapshot is kept in memory, so bound it. */
const SNAPSHOT_COUNT_MAX = 10_000_000;

/** Largest quota accepted: far beyond any Pi's memory, small enough to stay an exact integer. */
const QUOTA_BYTES_MAX = 2 ** 50;

function quotaBytes(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < QUOTA_BYTES_MIN || n > QUOTA_BYTES_MAX) {
    throw new ConfigError(`--quota-backend-bytes: expected an integer ${QUOTA_BYTES_MIN}-${QUOTA_BYTES_MAX}, got "${String(v)}"`);
  }
  return n;
}

function autoCompaction(mode: unknown, retention: unknown): AutoCompactionConfig | undefined {
  if (mode === undefined && retention === undefined) return undefined;
  try {
    return parseAutoCompaction(String(mode ?? 'periodic'), retention === undefined ? undefined : String(retention));
  } catch (e) {
    throw new ConfigError(`--auto-compaction-mode/--auto-compaction-retention: ${(e as Error).message}`);
  }
}

/** A whole number written in decimal digits ("0x7d0", "1e3" and " 80 " are not ports), or a JSON number. */
function decimal(v: unknown): number {
  if (typeof v === 'number') return v;
  const text = String(v);
  return /^\d{1,16}$/.test(text) ? Number(text) : NaN;
}

function port(flag: string, v: unknown, def: number): number {
  if (v === undefined) return def;
  const n = decimal(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new ConfigError(`--${flag}: expected a port 1-65535, got "${String(v)}"`);
  return n;
}

function positiveInt(flag: string, v: unknown, def: number, max: number): number {
  if (v === undefined) return def;
  const n = decimal(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new ConfigError(`--${flag}: expected an integer 1-${max}, got "${String(v)}"`);
  return n;
}

/**
 * Raft timing, from etcd's flags in milliseconds (--heartbeat-interval, --election-timeout) or
 * picloud's in ticks (--tick-ms, --election-ticks). A leader heartbeats every tick, so the
 * heartbeat interval is the tick; an election timeout that is not a whole number of ticks is
 * rounded down, as etcd does.
 */
function raftTiming(get: (k: string) => unknown): { tickMs: number; electionTicks: number } {
  const heartbeat = get('heartbeat-interval');
  const election = get('election-timeout');
  if (heartbeat !== undefined && get('tick-ms') !== undefined) throw new ConfigError('--heartbeat-interval and --tick-ms set the same thing (the tick, in ms): give one');
  if (election !== undefined && get('election-ticks') !== undefined) throw new ConfigError('--election-timeout and --election-ticks set the same thing: give one');
  const tickMs = heartbeat !== undefined ? positiveInt('heartbeat-interval', heartbeat, DEFAULT_TICK_MS, 10_000) : positiveInt('tick-ms', get('tick-ms'), DEFAULT_TICK_MS, 10_000);
  if (election === undefined && heartbeat === undefined) {
    const electionTicks = positiveInt('election-ticks', get('election-ticks'), DEFAULT_ELECTION_TICKS, 1000);
    // Raft's own rule (core/raft): an election timeout of one tick is no longer than a heartbeat.
    if (electionTicks < 2) throw new ConfigError('--election-ticks: expected at least 2 (one tick is the heartbeat interval)');
    return { tickMs, electionTicks };
  }
  const electionMs = positiveInt('election-timeout', election, DEFAULT_TICK_MS * DEFAULT_ELECTION_TICKS, ELECTION_TIMEOUT_MAX_MS);
  if (electionMs < ELECTION_TIMEOUT_MIN_HEARTBEATS * tickMs) {
    throw new ConfigError(`--election-timeout (${electionMs} ms) must be at least ${ELECTION_TIMEOUT_MIN_HEARTBEATS} times --heartbeat-interval (${tickMs} ms), as etcd requires`);
  }
  return { tickMs, electionTicks: Math.floor(electionMs / tickMs) };
}

function address(flag: string, v: unknown, def: string | undefined): string | undefined {
  if (v === undefined) return def;
  if (typeof v !== 'string' || isIP(v) === 0) throw new ConfigError(`--${flag}: expected an IP address, got "${String(v)}"`);
  return v;
}

function newBoard(flag: unknown, inFile: unknown): string | undefined {
  if (inFile !== undefined) throw new ConfigError('new-board: command line only (--new-board BOARD), not in a config file, where it would stay');
  if (flag === undefined) return undefined;
  if (typeof flag !== 'string' || !/^[\x21-\x7e]{1,140}$/.test(flag)) throw new ConfigError(`--new-board: expected the board id the data dir last ran on (as the refusal names it), got "${String(flag)}"`);
  return flag;
}

/** A switch: true, false or absent. A config file's "true" or 1 is refused rather than read as off. */
function flagOn(flag: string, v: unknown): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new ConfigError(`${flag}: expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** The bytes of the file a flag names; a clear error naming the flag otherwise (snapshot.ts too). */
export function readFlagFile(flag: string, path: unknown): Buffer {
  if (typeof path !== 'string' || path === '') throw new ConfigError(`--${flag}: expected a file name`);
  try {
    return readFileSync(path);
  } catch (e) {
    throw new ConfigError(`--${flag} ${path}: ${(e as Error).message}`);
  }
}

/** The client port's TLS, read and checked now so that a bad file is refused before anything listens. */
function clientTls(certFile: unknown, keyFile: unknown, caFile: unknown, certAuth: unknown, autoTls: boolean): ClientTls | undefined {
  const clientCertAuth = flagOn('client-cert-auth', certAuth);
  if (certFile === undefined && keyFile === undefined) {
    if ((caFile !== undefined || clientCertAuth) && !autoTls) throw new ConfigError('--trusted-ca-file and --client-cert-auth need --cert-file and --key-file (the client port\'s own certificate), or --auto-tls');
    return undefined;
  }
  if (certFile === undefined || keyFile === undefined) throw new ConfigError('--cert-file and --key-file go together: the client port\'s certificate and its private key');
  if (clientCertAuth && caFile === undefined) throw new ConfigError('--client-cert-auth needs --trusted-ca-file (the CA that signs client certificates)');
  const files = { cert: String(certFile), key: String(keyFile), ...(caFile === undefined ? {} : { ca: String(caFile) }) };
  const tls: ClientTls = { cert: readFlagFile('cert-file', certFile), key: readFlagFile('key-file', keyFile), ca: caFile === undefined ? undefined : readFlagFile('trusted-ca-file', caFile), clientCertAuth, files };
  try {
    checkClientTls(tls);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  return tls;
}

/**
 * etcd's --auto-tls, when no --cert-file/--key-file are given (given, they win, as in etcd).
 * etcd 3.4 then silently drops --trusted-ca-file and --client-cert-auth and lets in any client;
 * picloud keeps them: a member told to require client certificates requires them.
 */
function autoTls(on: boolean, client: ClientTls | undefined, caFile: unknown, certAuth: unknown): AutoTlsRequest | undefined {
  if (!on || client !== undefined) return undefined;
  const clientCertAuth = flagOn('client-cert-auth', certAuth);
  if (clientCertAuth && caFile === undefined) throw new ConfigError('--client-cert-auth needs --trusted-ca-file (the CA that signs client certificates)');
  if (caFile === undefined) return { clientCertAuth };
  const ca = readFlagFile('trusted-ca-file', caFile);
  try {
    new X509Certificate(ca);
  } catch (e) {
    throw new ConfigError(`--trusted-ca-file: not a PEM certificate: ${(e as Error).message}`);
  }
  return { ca, caFile: String(caFile), clientCertAuth };
}

/** Warnings for TLS flags taken from etcd that change nothing here. */
function tlsNotices(autoTlsOn: boolean, client: ClientTls | undefined, peerAutoTls: boolean): string[] {
  const notices: string[] = [];
  if (autoTlsOn && client !== undefined) notices.push('--auto-tls: ignored, as etcd ignores it, since --cert-file and --key-file are given');
  // Peer traffic is authenticated and encrypted with the join token's secret whatever the flags:
  // what --peer-auto-tls asks for is always in force (stronger: etcd's auto peer certificates
  // authenticate no one), so a flag copied from an etcd unit file is taken rather than refused.
  if (peerAutoTls) notices.push('--peer-auto-tls: nothing to do, the peer port is always authenticated and encrypted with the cluster token\'s secret (no certificates involved)');
  return notices;
}

function tlsConfig(get: (k: string) => unknown): Pick<AgentConfig, 'clientTls' | 'autoTls' | 'notices'> {
  const autoTlsOn = flagOn('auto-tls', get('auto-tls'));
  const client = clientTls(get('cert-file'), get('key-file'), get('trusted-ca-file'), get('client-cert-auth'), autoTlsOn);
  return {
    clientTls: client,
    autoTls: autoTls(autoTlsOn, client, get('trusted-ca-file'), get('client-cert-auth')),
    notices: tlsNotices(autoTlsOn, client, flagOn('peer-auto-tls', get('peer-auto-tls'))),
  };
}

/** Where `--dev` keeps its data when no --data-dir is given. */
export function defaultDevDataDir(): string {
  return join(tmpdir(), `picloud-dev-${process.getuid?.() ?? 0}`);
}

/** Largest config file read: a few dozen flags fit in a few KiB. */
const CONFIG_FILE_MAX_BYTES = 1 << 20;

/** A config file's text: a regular file of at most CONFIG_FILE_MAX_BYTES (not /dev/zero, a FIFO or a disk). */
function readConfigFile(path: string): string {
  const st = statSync(path);
  if (!st.isFile()) throw new Error('not a regular file');
  if (st.size > CONFIG_FILE_MAX_BYTES) throw new Error(`${st.size} bytes: a config file is at most ${CONFIG_FILE_MAX_BYTES}`);
  return readFileSync(path, 'utf8');
}

/** Parse `agent` flags; a config file supplies defaults that flags override. */
export function parseAgentArgs(argv: string[]): AgentConfig {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const flags = parsed.values as Record<string, unknown>;
  let file: Record<string, unknown> = {};
  if (typeof flags.config === 'string') {
    try {
      file = JSON.parse(readConfigFile(flags.config)) as Record<string, unknown>;
    } catch (e) {
      throw new ConfigError(`--config ${flags.config}: ${(e as Error).message}`);
    }
    if (typeof file !== 'object' || file === null || Array.isArray(file)) throw new ConfigError(`--config ${flags.config}: expected a JSON object`);
    checkConfigFile(flags.config, file);
  }
  const get = (k: string): unknown => flags[k] ?? file[k];
  const dev = flagOn('dev', get('dev'));
  const name = (get('name') as string | undefined) ?? (dev ? 'dev' : undefined);
  if (!name) throw new ConfigError('--name is required (or use --dev)');
  if (!MEMBER_NAME_PATTERN.test(name)) throw new ConfigError(`--name: "${name}" must be 1-63 letters, digits, '.', '_' or '-'`);
  const dataDir = (get('data-dir') as string | undefined) ?? (dev ? defaultDevDataDir() : undefined);
  if (!dataDir) throw new ConfigError('--data-dir is required (or use --dev)');
  const role = ((get('role') as string | undefined) ?? 'manager') as Role;
  if (role !== 'manager' && role !== 'worker') throw new ConfigError(`--role: expected manager or worker, got "${role}"`);
  if (role === 'worker' && flagOn('bootstrap', get('bootstrap'))) throw new ConfigError('a worker joins an existing cluster: use --join HOST[:PORT] --token TOKEN (only managers --bootstrap)');
  // A manager's data dir run as a worker: the cluster would lose a voter without a word.
  if (role === 'worker' && existsSync(join(dataDir, 'identity.json'))) {
    throw new ConfigError(`--role worker: ${dataDir} holds a manager's data (identity.json): start it as a manager, or give the worker a data dir of its own`);
  }
  const joinList = (flags.join as string[] | undefined) ?? (file.join as string[] | undefined) ?? [];
  if (!Array.isArray(joinList)) throw new ConfigError('join: expected a list of HOST[:PORT]');
  for (const j of joinList) {
    if (!/^[A-Za-z0-9.\-:[\]]+$/.test(j)) throw new ConfigError(`--join: "${j}" is not HOST[:PORT]`);
    try {
      parseHostPort(j, DEFAULT_PORTS.gossipPort);
    } catch (e) {
      throw new ConfigError(`--join: ${(e as Error).message}`);
    }
  }
  const bootstrap = flagOn('bootstrap', get('bootstrap')) || (dev && joinList.length === 0);
  if (bootstrap && joinList.length > 0) throw new ConfigError('--bootstrap and --join are mutually exclusive');
  // A manager restarting from a data dir that holds its member needs neither: its token, the
  // members and the gossip peers it knew are in the dir (core/api/manager-node.ts). A worker
  // that joined before needs neither either: gossip is all it runs, and its keyring and the
  // peers it saw alive are in the dir (agent/gossip-files.ts).
  const restarting = role === 'manager' ? existsSync(join(dataDir, 'identity.json')) : joinedBefore(dataDir);
  if (!bootstrap && joinList.length === 0 && !restarting) {
    throw new ConfigError(role === 'manager'
      ? 'either --bootstrap (start a cluster) or --join HOST[:PORT] --token T is required (a manager restarting from its data dir needs neither)'
      : 'a worker joins an existing cluster: --join HOST[:PORT] --token T is required (a worker restarting from a data dir that joined before needs neither)');
  }
  const token = get('token') as string | undefined;
  if (joinList.length > 0 && !token) throw new ConfigError('--join needs --token (print it on a manager with `picloud-node token`)');
  const tokenNotice = checkTokenKind(token, role);
  const bindAddr = address('bind', get('bind'), dev ? '127.0.0.1' : '0.0.0.0')!;
  const advertiseAddr = address('advertise', get('advertise'), undefined);
  if (advertiseAddr !== undefined && isWildcard(advertiseAddr)) {
    throw new ConfigError(`--advertise: "${advertiseAddr}" is a wildcard: give the address the others reach this node at`);
  }
  const ports = {
    clientPort: port('client-port', get('client-port'), DEFAULT_PORTS.clientPort),
    peerPort: port('peer-port', get('peer-port'), DEFAULT_PORTS.peerPort),
    gossipPort: port('gossip-port', get('gossip-port'), DEFAULT_PORTS.gossipPort),
    httpPort: port('http-port', get('http-port'), DEFAULT_PORTS.httpPort),
    lbPort: port('lb-port', get('lb-port'), DEFAULT_PORTS.lbPort),
    s3Port: port('s3-port', get('s3-port'), DEFAULT_PORTS.s3Port),
    dnsPort: port('dns-port', get('dns-port'), DEFAULT_PORTS.dnsPort),
  };
  // The reserved ports only when given: their defaults (8080, 9000, 8600) are no one's yet, and
  // configs using them for a listener that exists today (--http-port 8080) keep working.
  const reserved = ['lb-port', 's3-port', 'dns-port'].filter((f) => get(f) === undefined);
  checkPortsDistinct(ports, role, reserved);
  return {
    name,
    dataDir,
    bootstrap,
    join: joinList,
    token,
    role,
    bindAddr,
    advertiseAddr,
    ...ports,
    dev,
    ...raftTiming(get),
    quotaBackendBytes: quotaBytes(get('quota-backend-bytes')),
    autoCompaction: autoCompaction(get('auto-compaction-mode'), get('auto-compaction-retention')),
    snapshotCount: positiveInt('snapshot-count', get('snapshot-count'), DEFAULT_SNAPSHOT_EVERY_ENTRIES, SNAPSHOT_COUNT_MAX),
    snapshotCatchUpEntries: positiveInt('snapshot-catchup-entries', get('snapshot-catchup-entries'), LOG_ENTRIES_KEPT_AFTER_SNAPSHOT, SNAPSHOT_COUNT_MAX),
    watchProgressNotifyIntervalMs: progressNotifyInterval(get('experimental-watch-progress-notify-interval')),
    authTokenTtlSeconds: positiveInt('auth-token-ttl', get('auth-token-ttl'), AUTH_TOKEN_TTL_SECONDS, AUTH_TOKEN_TTL_MAX_SECONDS),
    newBoard: newBoard(flags['new-board'], file['new-board']),
    ...withNotices(tlsConfig(get), tokenNotice),
  };
}

/**
 * Each listener the role opens has a port of its own: found here, before a data dir is made,
 * rather than as EADDRINUSE after bootstrapping it. A worker opens no client or peer port. The
 * load balancer, S3 and DNS ports (subsystems not built yet) are checked when given.
 */
function checkPortsDistinct(ports: Record<string, number>, role: Role, skip: string[]): void {
  const byPort = new Map<number, string>();
  for (const [key, p] of Object.entries(ports)) {
    if (role === 'worker' && (key === 'clientPort' || key === 'peerPort')) continue;
    const flag = key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
    if (skip.includes(flag)) continue;
    const other = byPort.get(p);
    if (other !== undefined) throw new ConfigError(`--${other} and --${flag} are both ${p}: each listener needs a port of its own`);
    byPort.set(p, flag);
  }
}

function withNotices<T extends { notices: string[] }>(c: T, more: string[]): T {
  return { ...c, notices: [...c.notices, ...more] };
}

/**
 * The --token's kind against the role: a worker token (the gossip key alone) cannot make a
 * manager; a worker given the cluster token works, but holds what speaks Raft: said once.
 */
function checkTokenKind(token: string | undefined, role: Role): string[] {
  if (token === undefined) return [];
  let kind: JoinToken['kind'];
  try {
    kind = parseJoinToken(token).kind;
  } catch (e) {
    throw new ConfigError(`--token: ${(e as Error).message}`);
  }
  if (kind === 'worker' && role === 'manager') {
    throw new ConfigError('--token: this is a worker token: it joins workers only (--role worker); a manager needs the cluster token (`picloud-node token` on a manager)');
  }
  return kind === 'cluster' && role === 'worker'
    ? ["--token: this worker holds the cluster token, which also speaks Raft on the managers' peer ports; a worker token (`picloud-node token --worker` on a manager) is all a worker needs"]
    : [];
}
