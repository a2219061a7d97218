/**
 * The process's open files, shared out so that clients can never take the descriptors the Raft
 * log and the KV store need.
 *
 * Without this a client could stop a member: 1,200 idle connections to the client port under a
 * limit of 1,024 left LevelDB unable to open its next log file, and the member exited ("writing
 * the Raft log failed ... Too many open files"). Node raises its soft limit to the hard one at
 * start (as Go 1.19 and later does for etcd), so the limit here is the hard one the service
 * manager or shell gave (`ulimit -n` sets both).
 *
 * The budget: LevelDB's table cache per store (its max_open_files, an eighth of the limit, between
 * LevelDB's own floor and its default), a fixed reserve for what the node opens itself (peer and
 * join connections, gossip streams, LevelDB's logs and manifests, snapshots, stdio), a share for
 * the http port, and the rest for client connections. A listener at its share closes new
 * connections at once (Node's maxConnections) instead of failing to accept them.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { ConnectionCap } from '../core/net/connection-cap.js';

/** RLIMIT_NOFILE; Infinity for "unlimited". */
export interface OpenFilesLimit {
  soft: number;
  hard: number;
}

/** LevelDB's smallest max_open_files (64 table files plus its 10 others): it raises a smaller one. */
export const LEVEL_MIN_OPEN_FILES = 74;
/** LevelDB's default max_open_files (classic-level's too). */
export const LEVEL_DEFAULT_OPEN_FILES = 1_000;
/**
 * Descriptors the node opens itself besides LevelDB's tables: up to 128 inbound peer connections
 * and its outbound ones, 32 join connections, 64 gossip streams, each store's log, manifest and
 * lock files, snapshot and spool files, stdio, epoll and the event fds.
 */
export const NODE_RESERVED_FILES = 320;
/** Client connections are never capped below this, however low the limit (a warning says so). */
export const MIN_CLIENT_CONNECTIONS = 32;
/** The http port (health, readiness, metrics, the gossip API): a sixteenth of the limit, 16 to 256. */
export const MIN_HTTP_CONNECTIONS = 16;
export const MAX_HTTP_CONNECTIONS = 256;
/** Below this limit the agent warns: raise LimitNOFILE. */
export const LOW_OPEN_FILES_LIMIT = 4_096;
/** Taken for an "unlimited" limit (the kernel's default nr_open). */
const NR_OPEN_DEFAULT = 1_048_576;

export interface OpenFilesBudget {
  limit: number;
  /** max_open_files of each of the two LevelDB stores. */
  levelMaxOpenFiles: number;
  httpConnections: number;
  clientConnections: number;
  /** The limit does not cover the budget's floors: the node may still run out of descriptors. */
  tooLow: boolean;
}

function parseLimitValue(v: string): number {
  return v === 'unlimited' ? Infinity : Number(v);
}

/** The "Max open files" line of /proc/<pid>/limits; undefined when absent or unreadable. */
export function parseOpenFilesLimit(procLimits: string): OpenFilesLimit | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)\s+files/m.exec(procLimits);
  if (m === null) return undefined;
  return { soft: parseLimitValue(m[1]!), hard: parseLimitValue(m[2]!) };
}

/** This process's limit. */
export function readOpenFilesLimit(): OpenFilesLimit | undefined {
  try {
    return parseOpenFilesLimit(readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    return undefined;
  }
}

export function openFilesBudget(limit: number): OpenFilesBudget {
  const n = Number.isFinite(limit) ? Math.floor(limit) : NR_OPEN_DEFAULT;
  const levelMaxOpenFiles = Math.min(LEVEL_DEFAULT_OPEN_FILES, Math.max(LEVEL_MIN_OPEN_FILES, Math.floor(n / 8)));
  const httpConnections = Math.min(MAX_HTTP_CONNECTIONS, Math.max(MIN_HTTP_CONNECTIONS, Math.floor(n / 16)));
  const rest = n - 2 * levelMaxOpenFiles - NODE_RESERVED_FILES - httpConnections;
  return { limit: n, levelMaxOpenFiles, httpConnections, clientConnections: Math.max(MIN_CLIENT_CONNECTIONS, rest), tooLow: rest < MIN_CLIENT_CONNECTIONS };
}

/** At most one warning per port in this long, with the count refused since the last. */
export const REFUSED_WARNING_EVERY_MS = 10_000;

/**
 * Sets LevelDB's share of this process's limit and returns the listeners' caps; says in the log
 * what it found, and warns where the limit is low enough to matter.
 */
export function applyOpenFilesBudget(log: Logger, setLevelMaxOpenFiles: (n: number) => void): { budget: OpenFilesBudget; client: ConnectionCap; http: ConnectionCap } {
  const limit = readOpenFilesLimit()?.soft ?? LOW_OPEN_FILES_LIMIT;
  const budget = openFilesBudget(limit);
  setLevelMaxOpenFiles(budget.levelMaxOpenFiles);
  const fields = { limit, clientConnections: budget.clientConnections, httpConnections: budget.httpConnections, levelMaxOpenFiles: budget.levelMaxOpenFiles };
  if (budget.tooLow || limit < LOW_OPEN_FILES_LIMIT) {
    log.warn(fields, 'the open files limit is low: raise it (systemd: LimitNOFILE=65536) so that many clients cannot crowd out each other and the node');
  } else {
    log.info(fields, 'open files budget');
  }
  return { budget, client: refusalsLogged(log, 'client', budget.clientConnections), http: refusalsLogged(log, 'http', budget.httpConnections) };
}

function refusalsLogged(log: Logger, port: string, max: number): ConnectionCap {
  let refused = 0;
  let lastWarn = -Infinity;
  return {
    max,
    onRefused: (remoteAddress) => {
      refused++;
      const now = Date.now();
      if (now - lastWarn < REFUSED_WARNING_EVERY_MS) return;
      lastWarn = now;
      log.warn({ port, max, refused, from: remoteAddress }, 'connection refused: the port holds as many connections as the open files budget allows');
      refused = 0;
    },
  };
}
