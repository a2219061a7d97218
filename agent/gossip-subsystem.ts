/**
 * The agent's membership subsystem: starts a GossipNode from the agent's flags, keeps its
 * keyring, incarnation, the peers it last saw alive and the reaped members' last incarnations
 * in the data dir (written only when they change), joins the seeds and those peers (resolving
 * names, retrying in the background while none answers), and serves the membership and keyring
 * HTTP API (GET /v1/agent/members[?watch=1], /v1/agent/keyring…, PUT
 * /v1/agent/tags). The HTTP server itself and the CLI wiring belong to agent/http.ts and
 * agent/cli.ts.
 */
import { sendJson, type Route } from './http.js';
import { lookup } from 'node:dns/promises';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { join as joinPath } from 'node:path';
import { LOCAL_CONFIG, PICLOUD_LAN_CONFIG, detectionBoundMs, profileConfig, type GossipConfig, type GossipProfile } from '../core/gossip/config.js';
import { GossipError } from '../core/gossip/errors.js';
import { MAX_INCARNATION } from '../core/gossip/limits.js';
import { formatHostPort, parseHostPort as parseAddress } from '../core/net/address.js';
import { Keyring, deriveGossipKey, parseKey } from '../core/gossip/keyring/index.js';
import type { Address, KeyringOpName, MemberInfo, Meta } from '../core/gossip/types.js';
import { LatestValueFile, writeFileDurablySync } from '../core/storage/durable-file.js';
import { GOSSIP_DIR, INCARNATION_FILE, KEYRING_AUTHORITY_FILE, KEYRING_FILE, KEYRING_UNCONFIRMED_FILE, PEERS_FILE, REAPED_FILE, REMEMBERED_PEERS_MAX, loadIncarnation, loadReapedMembers, loadRememberedPeers } from './gossip-files.js';
import { GossipNode, type GossipEvent, type KeyringResult } from '../core/net/gossip-node.js';
import { deriveKeyringAuthoritySeed, parseToken, type ParsedWorkerToken } from '../core/net/token.js';
import { checkingAuthority, signingAuthority, type KeyringAuthority } from '../core/gossip/keyring/authority.js';

export const DEFAULT_GOSSIP_PORT = 7946;
/** Largest HTTP request body the gossip routes read (keys, tags). */
export const MAX_HTTP_BODY_BYTES = 64 * 1024;
const JOIN_RETRY_MIN_MS = 1_000;
const JOIN_RETRY_MAX_MS = 30_000;

export interface GossipLoggerLike {
  info(...a: unknown[]): void;
  warn(...a: unknown[]): void;
}

export interface StartGossipOptions {
  name: string;
  bindAddr: string;
  advertiseAddr?: string;
  gossipPort: number;
  /** HOST[:PORT] (default port 7946), resolved with dns.lookup. */
  join: string[];
  /**
   * Cluster secret; the default gossip key derives from it. Undefined: a node that joined before
   * restarts on the keyring it saved (a worker started without --token), or `workerToken` gives
   * the key.
   */
  secret: string | undefined;
  /** A worker token's gossip key and cluster digest (core/net/token.ts), instead of a secret. */
  workerToken?: ParsedWorkerToken;
  /** Who may change the keyring for others (keyring/authority.ts); saved for restarts without it. */
  keyringAuthority?: KeyringAuthority;
  /** Keyring and incarnation are persisted here (under gossip/). */
  dataDir: string;
  /** role, ports, zone, tags, version. */
  meta: Record<string, unknown>;
  logger?: GossipLoggerLike;
  /** Timing profile; defaults to $PICLOUD_GOSSIP_PROFILE or 'lan'. */
  profile?: GossipProfile;
  /** Overrides on top of the profile. */
  config?: Partial<GossipConfig>;
  /**
   * When the join finds our name held by a live member at another address, keep retrying this
   * long before giving up: a node restarted with a new address (DHCP) looks exactly like a
   * duplicate until its previous life is declared failed. Default: the detection bound.
   */
  nameConflictRetryMs?: number;
}

/** A member as the HTTP API and `picloud-node members --json` show it. */
export interface MemberView {
  name: string;
  address: string;
  port: number;
  role: string | null;
  state: MemberInfo['status'];
  incarnation: number;
  meta: Meta;
}

export interface MemberEventView extends MemberView {
  type: GossipEvent['type'];
  at: string;
}

/** The agent's HTTP route (agent/http.ts), as this subsystem registers its own. */
export type HttpRoute = Route;

export interface GossipSubsystem {
  readonly name: string;
  readonly node: GossipNode;
  members(): MemberView[];
  events(): AsyncIterableIterator<MemberEventView>;
  updateMeta(meta: Record<string, unknown>): void;
  leave(): Promise<void>;
  stop(): Promise<void>;
  keyring: {
    list(opts?: { local?: boolean }): Promise<KeyringResult>;
    install(key: string, opts?: { local?: boolean }): Promise<KeyringResult>;
    use(key: string, opts?: { local?: boolean }): Promise<KeyringResult>;
    remove(key: string, opts?: { local?: boolean }): Promise<KeyringResult>;
  };
  metrics(): Record<string, number>;
  httpRoutes(): HttpRoute[];
}

export function memberView(m: MemberInfo): MemberView {
  const role = typeof m.meta.role === 'string' ? m.meta.role : null;
  return { name: m.name, address: m.host, port: m.port, role, state: m.status, incarnation: m.incarnation, meta: m.meta };
}

/** Parses HOST[:PORT] / [V6]:PORT (core/net/address.ts). Throws GOSSIP_CONFIG_INVALID with the offending text. */
export function parseHostPort(text: string, defaultPort: number): { host: string; port: number } {
  try {
    return parseAddress(text, defaultPort);
  } catch (e) {
    throw new GossipError('GOSSIP_CONFIG_INVALID', `${(e as Error).message}: expected HOST[:PORT]`);
  }
}

function resolveProfile(opts: StartGossipOptions): GossipConfig {
  const env = process.env.PICLOUD_GOSSIP_PROFILE;
  const profile: GossipProfile = opts.profile ?? (env === 'local' || env === 'lan' || env === 'memberlist' ? env : 'lan');
  const base = profile === 'lan' ? { ...PICLOUD_LAN_CONFIG } : profile === 'local' ? { ...LOCAL_CONFIG } : profileConfig(profile);
  return { ...base, ...opts.config };
}

/** The keyring authority of a holder of the cluster token: it signs changes (keyring/authority.ts). */
export function clusterKeyringAuthority(clusterToken: string): KeyringAuthority {
  return signingAuthority(deriveKeyringAuthoritySeed(parseToken(clusterToken).secret));
}

/**
 * The authority this start was given, saved (its public half) for a restart without a token;
 * or, given none, the one saved before (none saved: changes are taken from any key holder).
 */
function loadKeyringAuthority(dir: string, given: KeyringAuthority | undefined): KeyringAuthority | undefined {
  const file = joinPath(dir, KEYRING_AUTHORITY_FILE);
  let saved: Buffer | undefined;
  try {
    saved = Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
  } catch (err) {
    // Only a missing file means none was saved: one that cannot be read must not turn checks off.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && given === undefined) {
      throw new GossipError('GOSSIP_KEY_INVALID', `${file} cannot be read (${(err as Error).message}): start with --token TOKEN`);
    }
    saved = undefined;
  }
  if (given !== undefined) {
    if (saved === undefined || !saved.equals(given.publicKey)) writeFileDurablySync(file, given.publicKey.toString('hex') + '\n', 0o600);
    return given;
  }
  if (saved === undefined) return undefined;
  try {
    return checkingAuthority(saved);
  } catch (err) {
    throw new GossipError('GOSSIP_KEY_INVALID', `${file} is damaged (${(err as Error).message}): start with --token TOKEN`);
  }
}

/** Names the cluster a saved keyring belongs to, without keeping the secret itself. */
function clusterTag(secret: string): string {
  return createHash('sha256').update('picloud gossip cluster\0').update(secret).digest('hex').slice(0, 16);
}

/** The cluster's digest, when the secret is a join token. */
function tokenDigestOf(secret: string): string | undefined {
  try {
    return parseToken(secret).digest;
  } catch {
    return undefined;
  }
}

/** What a start was given to join with: the key it offers and the tags that name its cluster. */
interface JoinKey {
  key: Buffer;
  /** The tag a data dir should hold: the cluster's digest (a hash of the secret if it is no token). */
  tag: string;
  /** Tags of this cluster that a data dir may hold (older dirs hold a hash of the cluster token). */
  accepts: string[];
  /** A worker token cannot derive that older tag: its key in the saved keyring shows the cluster. */
  provenBySavedKey: boolean;
  flag: string;
}

function joinKeyOf(secret: string | undefined, worker: ParsedWorkerToken | undefined): JoinKey | undefined {
  if (worker !== undefined) return { key: worker.gossipKey, tag: worker.digest, accepts: [worker.digest], provenBySavedKey: true, flag: 'worker token' };
  if (secret === undefined) return undefined;
  const tag = tokenDigestOf(secret) ?? clusterTag(secret);
  return { key: deriveGossipKey(secret), tag, accepts: [tag, clusterTag(secret)], provenBySavedKey: false, flag: '--token' };
}

function readKeyring(file: string): Keyring | Error {
  try {
    return Keyring.fromJSON(JSON.parse(readFileSync(file, 'utf8')));
  } catch (err) {
    return err as Error;
  }
}

/**
 * The saved keyring (it outlives rotations of the token's key), if it is this cluster's. A data
 * dir that joined another cluster would otherwise keep that cluster's keys and retry its join
 * for ever; it is refused, saying so. A keyring saved before the tag was kept is taken as this
 * cluster's. Without a key given (a worker restarted without --token) the saved keyring is all
 * there is. With this cluster's key the saved keyring still wins, as Consul's keyring file
 * wins over -encrypt: it holds the keys rotated in since, and the token's key may be gone.
 * Except one this node made from a token whose join never got through (say a worker token
 * retired by a rotation): a start that joins with another key replaces it.
 */
function loadKeyring(dir: string, given: JoinKey | undefined, joining: boolean, log: GossipLoggerLike): Keyring {
  const file = joinPath(dir, KEYRING_FILE);
  const tagFile = joinPath(dir, 'cluster');
  const unconfirmed = joinPath(dir, KEYRING_UNCONFIRMED_FILE);
  const holds = (ring: Keyring | Error): boolean => given !== undefined && !(ring instanceof Error) && ring.list().includes(given.key.toString('base64'));
  if (given !== undefined && joining && existsSync(unconfirmed) && !holds(readKeyring(file))) {
    log.warn(`gossip: the keyring in ${file} came from a token whose join never got through: replaced by the ${given.flag}'s key`);
    rmSync(tagFile, { force: true });
    rmSync(file, { force: true });
  }
  const saved = existsSync(tagFile) ? readFileSync(tagFile, 'utf8').trim() : undefined;
  const ring = readKeyring(file);
  if (given !== undefined) {
    if (saved !== undefined && !given.accepts.includes(saved) && !(given.provenBySavedKey && holds(ring))) {
      throw new GossipError('GOSSIP_OTHER_CLUSTER', `${dir} holds the gossip keys of another cluster (this data dir joined one with a different token): remove ${dir} to join with this ${given.flag}`);
    }
    // An older tag (or none) becomes the digest, which a worker token can check too (a tag its
    // key vouched for is left alone: the digest is the token's word, not proven by the key).
    if (saved === undefined || (saved !== given.tag && given.accepts.includes(saved))) writeFileDurablySync(tagFile, given.tag + '\n', 0o600);
  }
  if (!(ring instanceof Error)) {
    if (given !== undefined && !holds(ring)) {
      log.warn(`gossip: the keyring saved in ${file} does not hold the key of the ${given.flag} given (keys were rotated since): using the saved keyring`);
    }
    return ring;
  }
  const missing = (ring as NodeJS.ErrnoException).code === 'ENOENT';
  if (given === undefined) {
    throw new GossipError('GOSSIP_KEY_INVALID', `${missing ? 'no' : 'no readable'} gossip keyring in ${file}${missing ? '' : ` (${ring.message})`}: start with --join HOST[:PORT] --token TOKEN`);
  }
  // A damaged keyring is not replaced by the token's key: the keys rotated in since (the token's
  // may be retired) would be lost, and the damaged file with them.
  if (!missing) {
    throw new GossipError('GOSSIP_KEY_INVALID', `the gossip keyring ${file} is damaged (${ring.message}): restore it from a backup, or remove it to start again from the token's key (keys rotated in since then must be installed again)`);
  }
  const fresh = new Keyring(given.key);
  if (joining) writeFileDurablySync(unconfirmed, '', 0o600);
  writeFileDurablySync(file, JSON.stringify(fresh.toJSON()), 0o600);
  return fresh;
}

/** The peers alive or suspected now (not left, not declared dead), as HOST:PORT, sorted. */
function livePeers(node: GossipNode): string[] {
  const self = formatHostPort(node.address);
  const out: string[] = [];
  for (const m of node.members()) {
    if (m.status !== 'alive' && m.status !== 'suspect') continue;
    const a = formatHostPort({ host: m.host, port: m.port });
    if (a !== self) out.push(a);
  }
  return out.sort().slice(0, REMEMBERED_PEERS_MAX);
}

async function resolveSeeds(join: readonly string[], log: GossipLoggerLike): Promise<Address[]> {
  const out: Address[] = [];
  for (const j of join) {
    const { host, port } = parseHostPort(j, DEFAULT_GOSSIP_PORT);
    try {
      const a = isIP(host) ? host : (await lookup(host)).address;
      out.push({ host: a, port });
    } catch (err) {
      log.warn(`gossip: cannot resolve ${host}: ${(err as Error).message}`);
    }
  }
  return out;
}

export async function startGossip(opts: StartGossipOptions): Promise<GossipSubsystem> {
  const log = opts.logger ?? { info: () => {}, warn: () => {} };
  const dir = joinPath(opts.dataDir, GOSSIP_DIR);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyring = loadKeyring(dir, joinKeyOf(opts.secret, opts.workerToken), opts.join.length > 0, log);
  const keyringAuthority = loadKeyringAuthority(dir, opts.keyringAuthority);
  // A join that got through, or a keyring changed since, makes the keyring this node's own.
  const confirmKeyring = (): void => rmSync(joinPath(dir, KEYRING_UNCONFIRMED_FILE), { force: true });
  // A restarted node starts above any incarnation it announced before it stopped (never past
  // the largest the others decode: one pushed to the top stays there, still a member).
  const incarnation = Math.min(MAX_INCARNATION, loadIncarnation(opts.dataDir, (m) => log.warn(m)) + 1);
  const incarnationPath = joinPath(dir, INCARNATION_FILE);
  writeFileDurablySync(incarnationPath, JSON.stringify({ incarnation }), 0o600);
  // Later changes (a refutation) are saved off the event loop: on a stalling SD card the fsync
  // can take seconds, and this process's Raft and client traffic must not wait for it. Not yet
  // saved when the process dies, a restarted node refutes what it meets with a higher one anyway.
  const incarnationFile = new LatestValueFile(incarnationPath, 0o600, (err) => log.warn(`gossip: incarnation not saved: ${err.message}`));
  // Saved only when a member is reaped or one reaped comes back: rare, never in steady state.
  const reapedFile = new LatestValueFile(joinPath(dir, REAPED_FILE), 0o600, (err) => log.warn(`gossip: reaped members not saved: ${err.message}`));
  const config = resolveProfile(opts);
  const node = await GossipNode.start({
    name: opts.name,
    bindHost: opts.bindAddr,
    bindPort: opts.gossipPort,
    advertiseHost: opts.advertiseAddr,
    advertisePort: opts.advertiseAddr ? opts.gossipPort || undefined : undefined,
    keyring,
    keyringAuthority,
    config,
    meta: opts.meta as Meta,
    incarnation,
    onIncarnationChange: (inc) => incarnationFile.save(JSON.stringify({ incarnation: inc })),
    reaped: loadReapedMembers(opts.dataDir, (m) => log.warn(m)),
    onReapedChange: (reaped) => reapedFile.save(JSON.stringify(reaped)),
    onKeyringChange: (ring) => {
      writeFileDurablySync(joinPath(dir, KEYRING_FILE), JSON.stringify(ring.toJSON()), 0o600);
      confirmKeyring();
    },
    logger: log,
  });
  log.info(`gossip: ${opts.name} listening on ${opts.bindAddr}:${node.port} (UDP+TCP), incarnation ${incarnation}`);

  let stopped = false;
  let retryTimer: NodeJS.Timeout | undefined;
  const peersPath = joinPath(dir, PEERS_FILE);
  const remembered = loadRememberedPeers(opts.dataDir, (m) => log.warn(m));
  // The --join seeds are tried first, alone: a remembered peer that is powered off could hold
  // the start up for a connect timeout. Retries try the remembered peers too.
  const everySeed = [...new Set([...opts.join, ...remembered])];
  const peersFile = new LatestValueFile(peersPath, 0o600, (err) => log.warn(`gossip: peers not saved: ${err.message}`));
  const conflictDeadline = performance.now() + (opts.nameConflictRetryMs ?? detectionBoundMs(config, 1000));
  const tryJoin = async (delayMs: number, seedTexts: readonly string[]): Promise<void> => {
    const seeds = await resolveSeeds(seedTexts, log);
    try {
      if (seeds.length === 0) throw new GossipError('GOSSIP_JOIN_FAILED', 'no seed address resolved');
      const n = await node.join(seeds);
      confirmKeyring();
      log.info(`gossip: joined through ${n} of ${seeds.length} seeds`);
    } catch (err) {
      const e = err as GossipError;
      if (stopped) throw err;
      if (e.code === 'GOSSIP_NAME_CONFLICT') {
        if (performance.now() >= conflictDeadline) throw err;
        log.warn(`gossip: ${e.message}; retrying until its previous life is declared failed`);
        await new Promise((r) => setTimeout(r, Math.min(2_000, Math.max(0, conflictDeadline - performance.now()))));
        return tryJoin(delayMs, seedTexts);
      }
      log.warn(`gossip: join failed (${e.message}); retrying in ${delayMs} ms`);
      retryTimer = setTimeout(() => {
        tryJoin(Math.min(JOIN_RETRY_MAX_MS, delayMs * 2), everySeed).catch((e2: GossipError) => {
          if (!stopped) log.warn(`gossip: giving up joining: ${e2.message}`);
        });
      }, delayMs);
      retryTimer.unref();
    }
  };
  if (opts.join.length > 0) {
    try {
      await tryJoin(JOIN_RETRY_MIN_MS, opts.join);
    } catch (err) {
      await node.stop();
      throw err;
    }
  } else if (remembered.length > 0) {
    // Without --join (a restarted manager, or a worker that joined before) the start does not
    // wait on the peers: the cluster may be this node alone for now, and a worker's /ready says
    // when it is back in.
    log.info(`gossip: joining the ${remembered.length} peers seen alive before the restart`);
    tryJoin(JOIN_RETRY_MIN_MS, remembered).catch((e: GossipError) => {
      if (!stopped) log.warn(`gossip: giving up joining the remembered peers: ${e.message}`);
    });
  }
  void rememberPeers(node, peersFile, remembered);

  let meta = { ...opts.meta } as Meta;
  const keyringOp = (op: KeyringOpName, key: string, o?: { local?: boolean }): Promise<KeyringResult> => node.keyringOp(op, key, o);

  const sub: GossipSubsystem = {
    name: opts.name,
    node,
    members: () => node.members().map(memberView).sort((a, b) => a.name.localeCompare(b.name)),
    events: () => {
      const it = node.events();
      const mapped: AsyncIterableIterator<MemberEventView> = {
        next: async () => {
          const r = await it.next();
          if (r.done) return { value: undefined, done: true };
          return { value: { type: r.value.type, at: r.value.at, ...memberView(r.value.member) }, done: false };
        },
        return: async () => {
          await it.return?.();
          return { value: undefined, done: true };
        },
        [Symbol.asyncIterator]() {
          return mapped;
        },
      };
      return mapped;
    },
    updateMeta: (m) => {
      const next = { ...m } as Meta;
      node.updateMeta(next);
      meta = next;
    },
    leave: () => node.leave(),
    stop: async () => {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      await node.stop();
      await Promise.all([incarnationFile.flushed(), peersFile.flushed(), reapedFile.flushed()]);
    },
    keyring: {
      list: (o) => keyringOp('list', '', o),
      install: (k, o) => keyringOp('install', k, o),
      use: (k, o) => keyringOp('use', k, o),
      remove: (k, o) => keyringOp('remove', k, o),
    },
    metrics: () => node.metrics(),
    httpRoutes: () => routes(sub, () => meta),
  };
  return sub;
}

/** Saves the live peers whenever their set changes, until the node stops. */
async function rememberPeers(node: GossipNode, file: LatestValueFile, saved: readonly string[]): Promise<void> {
  let last = JSON.stringify(saved);
  const save = (): void => {
    const peers = livePeers(node);
    // Never forget everyone: a node cut off sees all its peers die, and is the one that most
    // needs them again.
    if (peers.length === 0) return;
    const text = JSON.stringify(peers);
    if (text === last) return;
    last = text;
    file.save(text);
  };
  for (;;) {
    const events = node.events();
    // What the join already brought in (before this subscription) counts too.
    save();
    try {
      for await (const _event of events) save();
      return; // stopped
    } catch {
      // Fell behind the events (GOSSIP_WATCH_OVERFLOW): subscribe again and catch up.
    }
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  sendJson(res, status, { error: { code, message } }, true);
}

function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_HTTP_BODY_BYTES) {
        reject(new GossipError('GOSSIP_META_TOO_LARGE', `request body over ${MAX_HTTP_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (!text.trim()) return resolve({});
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(new GossipError('GOSSIP_META_INVALID', 'request body is not valid JSON'));
      }
    });
    req.on('error', reject);
  });
}

function query(req: IncomingMessage): URLSearchParams {
  return new URL(req.url ?? '/', 'http://localhost').searchParams;
}

function flag(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  return v !== null && v !== '0' && v !== 'false';
}

/** TCP keepalive on a members watch's connection. */
const MEMBERS_WATCH_KEEPALIVE_MS = 30_000;

/** GET /v1/agent/members?watch=1: one JSON line per membership event while the client stays and keeps reading. */
export function watchMembers(sub: Pick<GossipSubsystem, 'events'>, req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
  res.flushHeaders();
  // A watcher that vanished without a FIN (a board powered off) is found by TCP keepalive.
  req.socket.setKeepAlive(true, MEMBERS_WATCH_KEEPALIVE_MS);
  const it = sub.events();
  let open = true;
  const close = (): void => {
    if (!open) return;
    open = false;
    void it.return?.();
  };
  req.on('close', close);
  res.on('close', close);
  void (async () => {
    try {
      for (;;) {
        const r = await it.next();
        if (r.done || !open) break;
        // A client that stops reading is waited for, not buffered for: the event queue's own
        // bound then ends its watch with GOSSIP_WATCH_OVERFLOW.
        if (!res.write(JSON.stringify(r.value) + '\n')) await new Promise<void>((resolve) => {
          const done = (): void => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    } catch (err) {
      const e = err as GossipError;
      if (open) res.write(JSON.stringify({ error: { code: e.code ?? 'GOSSIP_WATCH_OVERFLOW', message: e.message } }) + '\n');
    }
    close();
    res.end();
  })();
}

function keyringHandler(sub: GossipSubsystem, op: Exclude<KeyringOpName, 'list'>): HttpRoute['handler'] {
  return (req, res) => {
    void (async () => {
      try {
        const body = (await readBody(req)) as { key?: unknown };
        if (typeof body.key !== 'string') return sendError(res, 400, 'GOSSIP_KEY_INVALID', 'body must be {"key": "<base64 key>"}');
        parseKey(body.key);
        const local = flag(query(req), 'local');
        const result = await sub.keyring[op](body.key, { local });
        sendJson(res, 200, result, true);
      } catch (err) {
        const e = err as GossipError;
        sendError(res, 400, e.code ?? 'GOSSIP_KEY_INVALID', e.message);
      }
    })();
  };
}

function routes(sub: GossipSubsystem, currentMeta: () => Meta): HttpRoute[] {
  return [
    {
      method: 'GET',
      path: '/v1/agent/members',
      handler: (req, res) => {
        if (flag(query(req), 'watch')) return watchMembers(sub, req, res);
        sendJson(res, 200, sub.members(), true);
      },
    },
    {
      method: 'GET',
      path: '/v1/agent/keyring',
      // The keys themselves: whoever holds one reads and writes the cluster's gossip.
      localOnly: true,
      handler: (req, res) => {
        sub.keyring
          .list({ local: flag(query(req), 'local') })
          .then((r) => sendJson(res, 200, r, true))
          .catch((e: GossipError) => sendError(res, 500, e.code ?? 'GOSSIP_STREAM_FAILED', e.message));
      },
    },
    { method: 'POST', path: '/v1/agent/keyring/install', handler: keyringHandler(sub, 'install') },
    { method: 'POST', path: '/v1/agent/keyring/use', handler: keyringHandler(sub, 'use') },
    { method: 'POST', path: '/v1/agent/keyring/remove', handler: keyringHandler(sub, 'remove') },
    {
      // Runtime tags, like `serf tags -set k=v -delete k`: {"set": {...}, "delete": [...]}.
      method: 'PUT',
      path: '/v1/agent/tags',
      handler: (req, res) => {
        void (async () => {
          try {
            const body = (await readBody(req)) as { set?: unknown; delete?: unknown };
            const meta = { ...currentMeta() };
            const tags = { ...((typeof meta.tags === 'object' && meta.tags !== null && !Array.isArray(meta.tags) ? meta.tags : {}) as Meta) };
            if (body.set !== undefined) {
              if (typeof body.set !== 'object' || body.set === null || Array.isArray(body.set)) throw new GossipError('GOSSIP_META_INVALID', '"set" must be an object');
              Object.assign(tags, body.set);
            }
            if (body.delete !== undefined) {
              if (!Array.isArray(body.delete)) throw new GossipError('GOSSIP_META_INVALID', '"delete" must be an array of tag names');
              for (const k of body.delete) delete tags[String(k)];
            }
            meta.tags = tags;
            sub.updateMeta(meta);
            sendJson(res, 200, { meta }, true);
          } catch (err) {
            const e = err as GossipError;
            sendError(res, 400, e.code ?? 'GOSSIP_META_INVALID', e.message);
          }
        })();
      },
    },
    {
      method: 'GET',
      path: '/v1/agent/gossip/metrics',
      handler: (_req, res) => sendJson(res, 200, sub.metrics(), true),
    },
  ];
}
