/**
 * A manager: one voter (or learner) of the Raft group that replicates the KV store. Wires
 * core/raft (through RaftDriver), core/storage (Raft log + MVCC state on LevelDB), core/kv
 * (the state machine, watches, lease timers) and core/net (authenticated peer transport,
 * join handshake). Answers the etcd API through ./etcd-backend.ts.
 *
 * Membership: every conf change entry carries the member's name and addresses (JSON in its
 * context), so every node derives the same member table from the log. Joiners enter as
 * learners and the leader promotes them once they have caught up.
 */
import { ensurePrivateDir } from '../storage/private-dir.js';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { totalmem } from 'node:os';
import { getHeapStatistics } from 'node:v8';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  ConfChange,
  ConfChangeType,
  ConfState,
  Entry,
  HardState,
  NodeId,
  ProgressState,
  RaftError,
  RawNodeConfig,
  Role,
  Snapshot,
  SnapshotMetadata,
  Storage,
  bootstrapEntries,
} from '../raft/index.js';
import type { TornTail } from '../storage/level-log-tail.js';
import { RaftLogStore, type RaftLogStoreStats, type WriteObserver } from '../storage/raft-log-store.js';
import { MvccBackend } from '../storage/mvcc-backend.js';
import { StorageError } from '../storage/errors.js';
import { writeFileDurablySync } from '../storage/durable-file.js';
import { RESTORED_MARKER, RESTORING_MARKER } from './snapshot-restore.js';
import {
  AutoCompactor,
  DEFAULT_AUTO_COMPACTION,
  KvError,
  KvRequest,
  KvResponse,
  KvStore,
  LeaseTimers,
  SpaceAlarm,
  WatchHub,
  decodeKvRequest,
  clusterQuota,
  defaultQuotaBytes,
  encodeKvRequest,
  maxQuotaBytes,
  validQuota,
  PROGRESS_NOTIFY_INTERVAL_MS,
  QUOTA_HEAP_FRACTION,
  QUOTA_MEMORY_MAX_FRACTION,
  readSnapshot,
  type AutoCompactionConfig,
  type InstallableState,
  type MemoryLimits,
} from '../kv/index.js';
import { PeerTransport } from '../net/peer-transport.js';
import type { DuplicateNotice } from '../net/duplicate-member.js';
import { defaultAdvertiseAddress, isWildcard } from '../net/advertise.js';
import { JoinMember, JoinRefusedError, JoinServer, MAX_JOIN_MEMBERS, joinCluster } from '../net/join.js';
import { MAX_CONF_MEMBERS } from '../net/raft-codec.js';
import { clientAddress } from '../net/etcd/client-tls.js';
import { MAX_PUBLISHED_CERT_CHARS, recordedClientCert } from '../net/etcd/member-cert.js';
import { derivePeerKey, formatToken, generateToken, parseToken, tokenDigest } from '../net/token.js';
import { type PromotionRefusal, promotionRefusal } from './promotion-check.js';
import { RaftDriver, RaftDriverError, RaftPersistence, SnapshotRefusedError, type Requester } from './raft-driver.js';
import { DEFAULT_SNAPSHOT_EVERY_ENTRIES, LOG_ENTRIES_KEPT_AFTER_SNAPSHOT } from './snapshot-policy.js';

export interface ManagerNodeOptions {
  name: string;
  dataDir: string;
  bindAddr: string;
  /** Address other nodes use to reach this one (defaults to bindAddr, or 127.0.0.1 for 0.0.0.0). */
  advertiseAddr?: string;
  clientPort: number;
  /** The client port serves TLS: the member record says https:// (client-tls.ts). */
  clientTls?: boolean;
  /**
   * The client-port certificate (PEM) this member publishes in its record, so members
   * forwarding to it trust it (--auto-tls: core/net/etcd/member-cert.ts). Asked again at each
   * look at the record, so a renewed certificate is published; absent or undefined: none.
   */
  publishedClientCert?: () => string | undefined;
  peerPort: number;
  /**
   * The join handshake listens here (DESIGN.md: the gossip port) — unless `externalJoin`,
   * when the gossip listener hands join connections to joinConnection().
   */
  joinPort: number;
  externalJoin?: boolean;
  bootstrap: boolean;
  join: string[];
  token?: string;
  tickMs: number;
  electionTicks: number;
  logger: Logger;
  /**
   * This board's id (agent/board-id.ts). A data dir records the board it runs on and refuses to start
   * on another (a copy: an SD card image flashed onto a second board), unless `newBoard`.
   * Undefined: not checked.
   */
  board?: string;
  /**
   * The board the data dir last ran on, said by the user (its card was moved to this board for
   * good, or this machine's id changed): take the data dir over from that board.
   */
  newBoard?: string;
  /** Compact the Raft log every this many applied entries (etcd's --snapshot-count). */
  snapshotEveryEntries?: number;
  /** Entries kept behind a compaction for lagging followers (etcd's snapshot catch-up entries). */
  snapshotCatchUpEntries?: number;
  requestTimeoutMs?: number;
  /**
   * This member's space quota of the retained history (etcd's --quota-backend-bytes); default
   * from its memory (quota.ts). One above what its memory can hold is refused (QUOTA_TOO_LARGE).
   */
  quotaBytes?: number;
  /** The memory that bounds the quota; default measured (measuredMemoryLimits). */
  memoryLimits?: MemoryLimits;
  /** How long an etcd auth token lasts after its last use here (etcd's --auth-token-ttl; default 300 s). */
  authTokenTtlSeconds?: number;
  /** How often progress_notify watchers that heard nothing get the revision (etcd's default: 10 minutes). */
  watchProgressNotifyIntervalMs?: number;
  /** Automatic compaction on the leader; default DEFAULT_AUTO_COMPACTION (keep one hour). */
  autoCompaction?: AutoCompactionConfig;
  /**
   * This member was removed from the cluster (it applied its own removal, or a member told it
   * so). The node has stopped taking part; the embedder should stop it (etcd exits).
   * `markError` is set when the data dir could not be marked as removed: a restart from it
   * would try to take part again (and be told again), so the embedder should report a failure.
   */
  onRemoved?: (markError?: Error) => void;
  /**
   * Writing to the data dir failed (a full or failing disk, as SD cards do): this member has
   * stopped taking part and reports not ready; the embedder should stop it and exit with an
   * error, as etcd does. Restarted once the disk has room, it recovers from what it wrote.
   */
  onFatal?: (err: Error) => void;
  /**
   * Another live process is this member too and started first (its data dir was copied: an SD
   * card image of a running manager flashed onto another board). This one has stopped taking
   * part (two processes of one member break Raft's safety); the embedder should stop it and
   * exit with an error. The error's message says what happened and what to do.
   */
  onDuplicate?: (err: Error) => void;
}

/** Codes of errors from writing to the disk (full, failing, read-only): LevelDB's, the OS's, the log store's refusal after one. */
const DISK_ERROR_CODES = new Set(['LEVEL_IO_ERROR', 'ENOSPC', 'EIO', 'EROFS', 'EDQUOT', 'ERR_STORE_FAILED']);
/** LevelDB puts the OS's reason only in its message. */
const DISK_ERROR_MESSAGE = /No space left|Input\/output error|Read-only file system/;

/** An error from writing to the disk, as opposed to a bug; the reason may be wrapped as a cause. */
function isDiskError(err: unknown): boolean {
  let e = err as { code?: unknown; errno?: unknown; message?: unknown; cause?: unknown } | null | undefined;
  for (let depth = 0; e !== null && e !== undefined && depth < 5; depth++, e = e.cause as typeof e) {
    if (DISK_ERROR_CODES.has(String(e.code)) || typeof e.errno === 'number' || DISK_ERROR_MESSAGE.test(String(e.message))) return true;
  }
  return false;
}

export interface Member {
  id: NodeId;
  name: string;
  peerAddr: string;
  clientAddr: string;
  /** The client-port certificate it published (member-cert.ts), as recorded: not checked. */
  clientCert?: string;
  isLearner: boolean;
  /** The member's own space quota (absent in records made before quotas were recorded, until the member records it). */
  quotaBytes?: number;
  /** Added with `etcdctl member add --learner`: the operator promotes it (`member promote`), never the leader by itself. */
  operatorPromotes?: boolean;
  /**
   * The join request that added it. Carried in the conf change's context, so every member that
   * applies the change knows it, and kept in the persisted member table and in snapshots, so a
   * retry that reaches a member restarted since (or caught up from a snapshot) still gets the
   * member its first attempt added rather than a new one.
   */
  joinId?: string;
}

interface Identity {
  id: NodeId;
  name: string;
  clusterId: number;
  /** The board the data dir runs on (board-id.ts); absent in data dirs made before it was recorded. */
  board?: string;
}

/** What conf change contexts carry. */
interface MemberContext {
  name: string;
  peerAddr: string;
  clientAddr: string;
  /** The member's own space quota: the cluster holds to its members' smallest (core/kv/quota.ts). */
  quotaBytes?: number;
  /** Its published client-port certificate; '' takes it away, absent keeps the one on record (recordedClientCert). */
  clientCert?: string;
  /** An address update's op id (`member update` waits to see its own applied). */
  op?: string;
  /** A learner added by `etcdctl member add --learner` (see Member.operatorPromotes). */
  operatorPromotes?: boolean;
  /** The join request that added it (see JoinRequest.joinId). */
  joinId?: string;
}

/** Persisted beside the applied state: the configuration and member table as of applied. */
interface AppliedMembership {
  conf: ConfState;
  members: Array<MemberContext & { id: NodeId }>;
  /** Members removed from the cluster: their peer connections are told so (etcd keeps this set too). */
  removed?: NodeId[];
  /** The member that wrote it: whose Raft log, term and vote this data dir holds (absent in older data dirs). */
  self?: NodeId;
}

/** Written to the data dir when this member learns it was removed; start refuses such a dir. */
const REMOVED_MARKER = 'removed';

export { DEFAULT_SNAPSHOT_EVERY_ENTRIES, LOG_ENTRIES_KEPT_AFTER_SNAPSHOT } from './snapshot-policy.js';
/** A learner within this many entries of the leader's log is promoted. */
export const LEARNER_CATCH_UP_ENTRIES = 100;
export const LEASE_TICK_MS = 500;
/** How often a member compares its addresses and quota with the cluster's record of them. */
export const OWN_RECORD_CHECK_MS = 1_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 7_000;
/** The applied state is written at most this long after a change (etcd's backend batch interval is 100 ms). */
export const PERSIST_INTERVAL_MS = 100;
/** ...or once this many Ready cycles applied entries, whichever comes first. */
export const PERSIST_MAX_READIES = 64;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The most members a cluster holds (see ManagerNode.membersFull). */
export const MAX_MEMBERS = Math.min(MAX_CONF_MEMBERS, MAX_JOIN_MEMBERS);

export class NodeError extends Error {
  constructor(
    readonly code: 'NAME_CONFLICT' | 'MEMBER_IS_VOTER' | 'PEER_ADDR_IN_USE' | 'NOT_BOOTSTRAPPED' | 'JOIN_FAILED' | 'BAD_TOKEN' | 'STATE_BEHIND_LOG' | 'MEMBER_REMOVED' | 'DUPLICATE_MEMBER' | 'DATA_DIR_NAME' | 'DATA_DIR_DAMAGED' | 'IDENTITY_MISMATCH' | 'OTHER_BOARD' | 'QUOTA_TOO_LARGE' | 'HISTORY_TOO_LARGE' | 'TOO_MANY_MEMBERS',
    message: string,
  ) {
    super(message);
    this.name = 'NodeError';
  }
}

/** This process's memory limits: the machine's memory (or its container's limit, when smaller) and its heap limit. */
export function measuredMemoryLimits(): MemoryLimits {
  const constrained = process.constrainedMemory?.() ?? 0;
  const machine = totalmem();
  return { memoryBytes: constrained > 0 ? Math.min(constrained, machine) : machine, heapLimitBytes: getHeapStatistics().heap_size_limit };
}

const MIB = 1024 * 1024;

/** This member's own quota: the one asked for if its memory can hold it, else the default for its memory. */
function ownQuotaBytes(opts: ManagerNodeOptions): number {
  const limits = opts.memoryLimits ?? measuredMemoryLimits();
  if (opts.quotaBytes === undefined) return defaultQuotaBytes(limits);
  const max = maxQuotaBytes(limits);
  if (opts.quotaBytes <= max) return opts.quotaBytes;
  const asked = `--quota-backend-bytes ${opts.quotaBytes} is more than this member can hold: the history lives in memory (a snapshot from the leader is decoded beside it, so it can be there twice)`;
  const lower = `Lower --quota-backend-bytes to at most ${max} (${Math.floor(max / MIB)} MiB)`;
  const memoryNeeded = Math.ceil(opts.quotaBytes / QUOTA_MEMORY_MAX_FRACTION / MIB);
  if (opts.quotaBytes > limits.memoryBytes * QUOTA_MEMORY_MAX_FRACTION) {
    throw new NodeError(
      'QUOTA_TOO_LARGE',
      `${asked}; it needs at least ${memoryNeeded} MiB of memory (three times the quota) and this machine (or its container) has ${Math.floor(limits.memoryBytes / MIB)} MiB. ${lower}`,
    );
  }
  const heapNeeded = Math.ceil(opts.quotaBytes / QUOTA_HEAP_FRACTION / MIB);
  throw new NodeError(
    'QUOTA_TOO_LARGE',
    `${asked}; it needs a JavaScript heap limit of at least ${heapNeeded} MiB (three times the quota) and this process has ${Math.floor(limits.heapLimitBytes / MIB)} MiB. ` +
      `${lower}, or start with NODE_OPTIONS=--max-old-space-size=${heapNeeded}`,
  );
}

/** A member table entry from a persisted or received record (its quota checked: the record may be older, or damaged). */
function memberEntry(m: JoinMember & { operatorPromotes?: boolean; joinId?: unknown; clientCert?: unknown }, isLearner: boolean): Member {
  const entry: Member = { id: m.id, name: m.name, peerAddr: m.peerAddr, clientAddr: m.clientAddr, quotaBytes: validQuota(m.quotaBytes), isLearner };
  const clientCert = recordedClientCert(m.clientCert, undefined);
  if (clientCert !== undefined) entry.clientCert = clientCert;
  if (m.operatorPromotes === true) entry.operatorPromotes = true;
  if (typeof m.joinId === 'string') entry.joinId = m.joinId;
  return entry;
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Hands RawNode the configuration as of the applied index (kept with the MVCC state). */
class AppliedConfStorage implements Storage {
  constructor(
    private readonly log: RaftLogStore,
    private readonly conf: ConfState,
    private readonly minCommit: number,
  ) {}
  initialState(): { hardState: HardState; confState: ConfState } {
    const { hardState } = this.log.initialState();
    // The applied state may have been fsynced after a commit index that was not: entries up
    // to applied were committed, so the commit index is at least that.
    const commit = Math.max(hardState.commit, Math.min(this.minCommit, this.log.lastIndex()));
    return { hardState: { ...hardState, commit }, confState: this.conf };
  }
  entries(lo: number, hi: number, maxBytes?: number): Entry[] {
    return this.log.entries(lo, hi, maxBytes);
  }
  term(i: number): number {
    return this.log.term(i);
  }
  firstIndex(): number {
    return this.log.firstIndex();
  }
  lastIndex(): number {
    return this.log.lastIndex();
  }
  snapshot(): Snapshot {
    return this.log.snapshot();
  }
}

export class ManagerNode {
  readonly members = new Map<NodeId, Member>();
  readonly watchHub: WatchHub;
  readonly leaseTimers: LeaseTimers;
  /** For leaseTimers.afterApply, made once: it runs for every applied entry. */
  private readonly leaseExists = (id: number): boolean => this.store.hasLease(id);
  readonly spaceAlarm: SpaceAlarm;
  /** The member whose own quota the cluster holds to now (refreshQuota). */
  private quotaMember: NodeId;
  private readonly autoCompactor: AutoCompactor;
  private compactionInFlight = false;
  /** leaderDuties' leader check (a ReadIndex round) is in flight. */
  private leaseCheckInFlight = false;
  driver!: RaftDriver;
  private transport!: PeerTransport;
  private joinServer: JoinServer | undefined;
  private timers: NodeJS.Timeout[] = [];
  private updatingOwnRecord = false;
  /** The op id of the last UpdateNode applied per member (for `member update` to see its own applied). */
  private readonly addressUpdates = new Map<NodeId, string>();
  private conf: ConfState = { voters: [], learners: [] };
  /** Ids removed from the cluster (applied RemoveNode changes), persisted with the membership. */
  private readonly removedMembers = new Set<NodeId>();
  /** This member learnt it was removed. */
  private removed = false;
  /** Set once writing to the data dir failed (failStorage). */
  private storageFailure: Error | undefined;
  /** Set once a peer said another process is this member and started first (duplicateFound). */
  private duplicate: Error | undefined;
  /** A snapshot from the leader, decoded before its install and waiting for restoreSnapshot. */
  private receivedSnapshot: { meta: SnapshotMetadata; state: InstallableState } | undefined;
  private appliedSinceSnapshot = 0;
  private persistInFlight = false;
  private persistWanted = false;
  private persistTimer: NodeJS.Timeout | undefined;
  /** Ready cycles that applied entries since the applied state was last written. */
  private appliedSincePersist = 0;
  /** The member table changed since it was last written beside the applied state. */
  private membershipDirty = true;
  private snapshotting = false;
  private compacting = false;
  private stopped = false;
  lead: NodeId = 0;
  role: Role = Role.Follower;
  private memberListeners: Array<() => void> = [];

  private constructor(
    readonly opts: ManagerNodeOptions,
    readonly identity: Identity,
    readonly token: string,
    private readonly logStore: RaftLogStore,
    private readonly backend: MvccBackend,
    /** This member's own space quota (ownQuotaBytes). */
    readonly ownQuotaBytes: number,
  ) {
    this.watchHub = new WatchHub(backend.store);
    this.leaseTimers = new LeaseTimers({ clock: { nowMs: () => performance.now() } });
    this.spaceAlarm = new SpaceAlarm(ownQuotaBytes);
    this.quotaMember = identity.id;
    this.autoCompactor = new AutoCompactor(opts.autoCompaction ?? DEFAULT_AUTO_COMPACTION);
  }

  /** True while the NOSPACE alarm is raised on this member (see core/kv/quota.ts). */
  get noSpace(): boolean {
    return this.spaceAlarm.update(this.store.retainedBytes);
  }

  /** The quota the cluster holds to (its members' smallest) and the member whose it is. */
  get clusterQuota(): { id: NodeId; quotaBytes: number } {
    return { id: this.quotaMember, quotaBytes: this.spaceAlarm.quotaBytes };
  }

  /** After the member table changed: the smallest quota may be another member's now. */
  private refreshQuota(): void {
    const q = clusterQuota({ id: this.id, quotaBytes: this.ownQuotaBytes }, this.members.values());
    if (q.id !== this.quotaMember || q.quotaBytes !== this.spaceAlarm.quotaBytes) {
      const name = q.id === this.id ? this.opts.name : this.members.get(q.id)?.name || q.id.toString(16);
      this.opts.logger.info({ quotaBytes: q.quotaBytes, member: q.id.toString(16) }, `the cluster's space quota is now member ${name}'s (the smallest)`);
    }
    this.quotaMember = q.id;
    this.spaceAlarm.setQuota(q.quotaBytes);
  }

  /** The member table changed: the quota follows, then whoever waits for a change is told. */
  private membersChanged(): void {
    this.refreshQuota();
    for (const fn of this.memberListeners) fn();
  }

  get id(): NodeId {
    return this.identity.id;
  }

  get store(): KvStore {
    return this.backend.store;
  }

  get clusterId(): number {
    return this.identity.clusterId;
  }

  static async start(opts: ManagerNodeOptions): Promise<ManagerNode> {
    const log = opts.logger;
    const advertise = opts.advertiseAddr ?? (isWildcard(opts.bindAddr) ? defaultAdvertiseAddress() : opts.bindAddr);
    const quotaBytes = ownQuotaBytes(opts);
    const self: MemberContext = {
      name: opts.name,
      peerAddr: hostPort(advertise, opts.peerPort),
      clientAddr: clientAddress(hostPort(advertise, opts.clientPort), opts.clientTls === true),
      quotaBytes,
    };
    const wider = ensurePrivateDir(opts.dataDir); // an embedder's (the agent has seen to its own)
    if (wider !== undefined) opts.logger.warn({ dataDir: opts.dataDir, was: wider.toString(8) }, 'the data dir could be read by other accounts: made it private (0700)');
    if (existsSync(join(opts.dataDir, REMOVED_MARKER))) {
      throw new NodeError('MEMBER_REMOVED', `the member using ${opts.dataDir} was removed from the cluster: remove the data dir, then join again (picloud-node agent --join HOST --token TOKEN)`);
    }
    const identityPath = join(opts.dataDir, 'identity.json');
    const tokenPath = join(opts.dataDir, 'token');
    // The members a joiner was told of: until it has applied and persisted the membership
    // itself, they are the only peers it knows (a restart in between would know none).
    const joinMembersPath = join(opts.dataDir, 'join-members.json');
    let identity: Identity | undefined;
    let token: string;
    if (existsSync(identityPath)) {
      identity = readIdentity(identityPath);
      // A data dir is one member: started under another name it is most likely a copy (an SD
      // card image of a manager flashed onto another board), which must not take part as that member.
      if (identity.name !== opts.name) {
        throw new NodeError(
          'DATA_DIR_NAME',
          `the data dir ${opts.dataDir} belongs to member '${identity.name}' (${identity.id.toString(16)}), not '${opts.name}': ` +
            `start it with --name ${identity.name}, or, for a new member (a board flashed from another's SD card image), remove the data dir and start with --join HOST --token TOKEN (not --bootstrap)`,
        );
      }
      token = readTokenFile(tokenPath);
      if (opts.token && opts.token !== token) throw new NodeError('BAD_TOKEN', 'the --token given differs from the token this data dir was created with');
      checkBoard(identity, identityPath, opts, log);
    } else if (opts.bootstrap) {
      token = opts.token ? normaliseToken(opts.token) : generateToken();
    } else {
      if (opts.join.length === 0) throw new NodeError('NOT_BOOTSTRAPPED', `${opts.dataDir} holds no member: start with --bootstrap (a new cluster) or --join HOST --token TOKEN`);
      if (!opts.token) throw new NodeError('BAD_TOKEN', '--join needs --token');
      token = normaliseToken(opts.token);
    }
    const secret = parseToken(token).secret;
    const peerKey = derivePeerKey(secret);
    const clusterId = parseInt(tokenDigest(secret).slice(0, 12), 16);

    // A restore that wrote its "done" marker finished (the restoring one may still be there).
    if (identity === undefined && existsSync(join(opts.dataDir, RESTORING_MARKER)) && !existsSync(join(opts.dataDir, RESTORED_MARKER))) {
      throw new NodeError('DATA_DIR_DAMAGED', `${opts.dataDir} holds a snapshot restore that was cut short: run \`picloud-node snapshot restore FILE --data-dir ${opts.dataDir}\` again (it starts over), then start with --bootstrap`);
    }
    // With an identity both stores were written before: a missing one is damage, not a first start.
    const mustExist = identity !== undefined;
    // A write cut short by a power cut, never acknowledged: LevelDB drops it, the log says so.
    const onTornTail = (torn: TornTail): void => log.warn({ ...torn }, 'dropped the torn last record of a store\'s write-ahead log (a write cut short by a power cut or crash)');
    const logStore = await RaftLogStore.open(join(opts.dataDir, 'raft'), { mustExist, onTornTail });
    const backend = await MvccBackend.open(join(opts.dataDir, 'kv'), {}, { mustExist, onTornTail });
    const restoredMarker = join(opts.dataDir, RESTORED_MARKER);
    try {
      checkDataDirState(opts, identity, logStore, backend, existsSync(restoredMarker));
    } catch (err) {
      await Promise.all([logStore.close(), backend.close()]);
      throw err;
    }
    let joinedMembers: JoinMember[] = [];
    if (!identity) {
      if (opts.bootstrap && existsSync(restoredMarker)) {
        // A restored snapshot (core/api/snapshot-restore): found a new one-member cluster
        // whose Raft log starts with a snapshot at the image's applied index.
        const index = backend.store.appliedIndex;
        const stored = logStore.snapshotMetadata();
        // A first start killed after saving that snapshot (before identity.json) finds it
        // stored: it keeps the member id it named rather than saving another (which the log
        // store refuses as not newer, at every start).
        const resumed = stored.index === index && stored.term === 1 && stored.conf.voters.length === 1 && stored.conf.learners.length === 0;
        identity = { id: resumed ? stored.conf.voters[0]! : randomInt(1, 2 ** 47), name: opts.name, clusterId };
        const conf: ConfState = { voters: [identity.id], learners: [] };
        if (!resumed) {
          const chunks: Uint8Array[] = [];
          for await (const c of backend.store.snapshot()) chunks.push(c);
          await logStore.save({ snapshot: { metadata: { index, term: 1, conf }, data: Buffer.concat(chunks) }, hardState: { term: 1, vote: 0, commit: index } }, { sync: true });
        }
        const membership: AppliedMembership = { conf, members: [{ id: identity.id, ...self }], self: identity.id };
        await backend.persist({ confState: enc.encode(JSON.stringify(membership)), sync: true });
        log.info({ id: identity.id.toString(16), index, revision: backend.store.revision }, 'bootstrapped a new cluster from a restored snapshot');
      } else if (opts.bootstrap) {
        identity = { id: randomInt(1, 2 ** 47), name: opts.name, clusterId };
        const { entries, hardState } = bootstrapEntries([{ nodeId: identity.id, context: enc.encode(JSON.stringify(self)) }]);
        await logStore.save({ entries, hardState }, { sync: true });
        log.info({ id: identity.id.toString(16) }, 'bootstrapped a new cluster');
      } else {
        const result = await joinWithRetry(opts, peerKey, self, log);
        identity = { id: result.memberId, name: opts.name, clusterId };
        joinedMembers = result.members;
        log.info({ id: identity.id.toString(16), members: result.members.length }, 'joined the cluster as a learner');
      }
      // identity.json last: its presence means the other two are whole.
      if (joinedMembers.length > 0) writeFileDurablySync(joinMembersPath, JSON.stringify(joinedMembers) + '\n');
      writeFileDurablySync(tokenPath, token + '\n', 0o600);
      if (opts.board !== undefined) identity.board = opts.board;
      writeFileDurablySync(identityPath, JSON.stringify(identity) + '\n');
      rmSync(restoredMarker, { force: true });
      rmSync(join(opts.dataDir, RESTORING_MARKER), { force: true });
    } else if (existsSync(joinMembersPath)) {
      joinedMembers = readJsonFile(joinMembersPath, (v): v is JoinMember[] => Array.isArray(v));
    }
    const node = new ManagerNode(opts, identity, token, logStore, backend, quotaBytes);
    await node.run(peerKey, joinedMembers, self);
    return node;
  }

  private async run(peerKey: Uint8Array, joinedMembers: JoinMember[], self: MemberContext): Promise<void> {
    const log = this.opts.logger;
    const persistedMembership = this.backend.confState ? (JSON.parse(dec.decode(this.backend.confState)) as AppliedMembership) : undefined;
    if (persistedMembership) {
      this.conf = persistedMembership.conf;
      for (const id of persistedMembership.removed ?? []) this.removedMembers.add(id);
      for (const m of persistedMembership.members) {
        this.members.set(m.id, memberEntry(m, this.conf.learners.includes(m.id)));
      }
    }
    // What the join told us counts only until the membership we applied was persisted (it may
    // since have removed some of those members).
    if (!persistedMembership) {
      for (const m of joinedMembers) {
        if (!this.members.has(m.id)) this.members.set(m.id, memberEntry(m, m.id === this.id));
      }
    }
    if (!this.members.has(this.id)) this.members.set(this.id, { id: this.id, ...self, isLearner: false });
    this.refreshQuota();
    await this.catchUpWithStoredSnapshot();

    this.transport = new PeerTransport({
      nodeId: this.id,
      peerKey,
      onMessage: (m) => this.driver.step(m),
      onUnreachable: (peer) => this.driver.node.reportUnreachable(peer),
      onReject: (reason) => log.warn({ reason }, 'peer connection rejected'),
      isRemoved: (peer) => this.removedMembers.has(peer),
      onRemoved: (by) => this.removedFromCluster(`member ${by.toString(16)} says so`),
      onDuplicate: (by, notice) => this.duplicateFound(by, notice),
      advertise: self.peerAddr,
      onPeerMoved: (peer, address, previous, source) => log.info({ peer: peer.toString(16), address, previous, source }, 'a member is at a new peer address; dialing it there'),
    });
    await this.transport.listen(this.opts.peerPort, this.opts.bindAddr);
    for (const m of this.members.values()) if (m.id !== this.id) this.transport.addPeer(m.id, m.peerAddr);

    // Raft asks for a snapshot only for a follower behind the log's start; made off its call stack.
    this.logStore.onSnapshotNeeded(() => setImmediate(() => void this.takeSnapshot()));
    this.logStore.checkIncomingSnapshots((meta, data) => this.decodeIncomingSnapshot(meta, data));
    const persistence: RaftPersistence = {
      storage: this.logStore,
      save: (batch, sync) => this.logStore.save(batch, { sync }).catch((e: unknown) => {
        if (!(e instanceof StorageError && e.code === 'ERR_SNAPSHOT_REFUSED')) throw e;
        log.error({ err: e }, 'refused a snapshot from the leader; Raft state reloaded from disk, the leader sends it again');
        throw new SnapshotRefusedError(e.message, { cause: e });
      }),
      readSnapshotChunk: (of, offset, length) => this.logStore.readSnapshotChunk(offset, length, of),
    };
    this.driver = new RaftDriver(
      this.raftConfig(),
      persistence,
      { send: (msgs) => this.transport.send(msgs), flushNow: () => this.transport.flushNow() },
      {
        apply: (e, payload) => this.applyEntry(e, payload),
        applyConfChange: (cc, conf) => this.applyConfChange(cc, conf),
        noteApplied: (e) => this.store.noteApplied(e.index, e.term),
        skippedConfChange: (e, reason) => this.opts.logger.warn({ index: e.index, reason }, 'a committed membership change cannot be made: skipped'),
        restore: (snap) => this.restoreSnapshot(snap),
        afterApply: () => this.afterApply(),
      },
      {
        tickMs: this.opts.tickMs,
        requestTimeoutMs: this.opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
        reloadConfig: () => this.raftConfig(),
        onFatal: (err) => this.failStorage(err, 'the Raft log'),
      },
    );
    this.driver.onLeaderChange((lead, role) => this.onLeaderChange(lead, role));
    this.driver.start();

    const joinOpts = {
      peerKey,
      onJoin: (req: MemberContext & { remoteAddress: string }) => this.handleJoin(req),
      onReject: (reason: string) => log.warn({ reason }, 'join rejected'),
    };
    this.joinServer = this.opts.externalJoin
      ? JoinServer.detached(joinOpts)
      : await JoinServer.listen({ ...joinOpts, port: this.opts.joinPort, host: this.opts.bindAddr });
    this.timers.push(setInterval(() => void this.leaderDuties(), LEASE_TICK_MS));
    this.timers.push(setInterval(() => void this.recordOwnMember(self), OWN_RECORD_CHECK_MS));
    this.timers.push(setInterval(() => this.watchHub.progressTick(), this.opts.watchProgressNotifyIntervalMs ?? PROGRESS_NOTIFY_INTERVAL_MS));
  }

  /** Raft's configuration as of the durable log and the applied state (at start, and after a refused snapshot). */
  private raftConfig(): RawNodeConfig {
    const applied = this.store.appliedIndex;
    return {
      id: this.id,
      storage: new AppliedConfStorage(this.logStore, this.conf, applied),
      applied: applied > 0 ? Math.min(applied, this.logStore.lastIndex()) : undefined,
      random: { next: Math.random, int: (n: number) => Math.floor(Math.random() * n) },
      electionTicks: this.opts.electionTicks,
      heartbeatTicks: 1,
      // A snapshot from the leader goes to a spool file chunk by chunk, never whole in memory.
      spoolIncomingSnapshots: true,
    };
  }

  // ------------------------------------------------------------------------- applying

  private applyEntry(e: Entry, payload: Uint8Array): KvResponse {
    let req: KvRequest;
    try {
      req = decodeKvRequest(payload);
    } catch (err) {
      // Cannot come from a correct proposer; apply as an error so every member agrees.
      this.store.noteApplied(e.index, e.term);
      return { error: err instanceof KvError ? err : new KvError('MALFORMED_REQUEST', String(err)) };
    }
    const resp = this.store.apply(req, { index: e.index, term: e.term });
    this.appliedSinceSnapshot++;
    this.leaseTimers.afterApply(req, resp, this.leaseExists);
    return resp;
  }

  private applyConfChange(cc: ConfChange, conf: ConfState): void {
    this.conf = conf;
    if (cc.type === ConfChangeType.RemoveNode) {
      this.members.delete(cc.nodeId);
      this.removedMembers.add(cc.nodeId);
      if (cc.nodeId !== this.id) this.transport.removePeer(cc.nodeId);
      else this.removedFromCluster('applied its own removal');
    } else {
      let ctx: MemberContext | undefined;
      try {
        ctx = cc.context && cc.context.length > 0 ? (JSON.parse(dec.decode(cc.context)) as MemberContext) : undefined;
      } catch {
        ctx = undefined;
      }
      const prev = this.members.get(cc.nodeId);
      if (cc.type === ConfChangeType.UpdateNode) {
        // New addresses for a member (it moved, or `etcdctl member update`); unknown ids change nothing.
        if (prev === undefined) return;
        if (typeof ctx?.op === 'string') this.addressUpdates.set(cc.nodeId, ctx.op);
        // A name is given once: to a member added by address (`member add`) when it first runs.
        const moved: Member = { ...prev, name: prev.name || (typeof ctx?.name === 'string' ? ctx.name : ''), peerAddr: ctx?.peerAddr || prev.peerAddr, clientAddr: ctx?.clientAddr || prev.clientAddr, quotaBytes: validQuota(ctx?.quotaBytes) ?? prev.quotaBytes };
        const clientCert = recordedClientCert(ctx?.clientCert, prev.clientCert);
        if (clientCert === undefined) delete moved.clientCert;
        else moved.clientCert = clientCert;
        this.members.set(cc.nodeId, moved);
        // The transport keeps an address the member announced itself over this record.
        if (cc.nodeId !== this.id && moved.peerAddr !== prev.peerAddr) this.transport.addPeer(cc.nodeId, moved.peerAddr);
        this.membershipDirty = true;
        const certificate = moved.clientCert === prev.clientCert ? undefined : moved.clientCert === undefined ? 'withdrawn' : 'published';
        this.opts.logger.info({ node: cc.nodeId.toString(16), peerAddr: moved.peerAddr, clientAddr: moved.clientAddr, quotaBytes: moved.quotaBytes, clientCertificate: certificate }, 'member record updated');
        this.membersChanged();
        return;
      }
      const member: Member = {
        id: cc.nodeId,
        name: ctx?.name ?? prev?.name ?? '',
        peerAddr: ctx?.peerAddr ?? prev?.peerAddr ?? '',
        clientAddr: ctx?.clientAddr ?? prev?.clientAddr ?? '',
        isLearner: cc.type === ConfChangeType.AddLearner,
        quotaBytes: validQuota(ctx?.quotaBytes) ?? prev?.quotaBytes,
      };
      const clientCert = recordedClientCert(ctx?.clientCert, prev?.clientCert);
      if (clientCert !== undefined) member.clientCert = clientCert;
      if (ctx?.operatorPromotes === true || (ctx === undefined && prev?.operatorPromotes === true)) member.operatorPromotes = true;
      if (typeof ctx?.joinId === 'string') member.joinId = ctx.joinId;
      else if (ctx === undefined && prev?.joinId !== undefined) member.joinId = prev.joinId; // a promotion
      this.members.set(cc.nodeId, member);
      if (cc.nodeId !== this.id && member.peerAddr && !this.transport.hasPeer(cc.nodeId)) this.transport.addPeer(cc.nodeId, member.peerAddr);
    }
    this.membershipDirty = true;
    this.opts.logger.info({ change: ConfChangeType[cc.type], node: cc.nodeId.toString(16), voters: conf.voters.length, learners: conf.learners.length }, 'membership changed');
    this.membersChanged();
  }

  private membershipBytes(): Uint8Array {
    const m: AppliedMembership = {
      conf: this.conf,
      members: [...this.members.values()].map(({ id, name, peerAddr, clientAddr, clientCert, quotaBytes, operatorPromotes, joinId }) => ({ id, name, peerAddr, clientAddr, clientCert, quotaBytes, operatorPromotes, joinId })),
      removed: [...this.removedMembers],
      self: this.id,
    };
    return enc.encode(JSON.stringify(m));
  }

  private afterApply(): void {
    this.appliedSincePersist += 1;
    this.schedulePersist();
    const every = this.opts.snapshotEveryEntries ?? DEFAULT_SNAPSHOT_EVERY_ENTRIES;
    if (this.appliedSinceSnapshot >= every && !this.compacting) void this.compactLog();
  }

  /**
   * Persist the applied state off the Ready loop, in batches, as etcd's backend does (its
   * batch interval is 100 ms): changes applied within PERSIST_INTERVAL_MS, or until
   * PERSIST_MAX_READIES Ready cycles have applied entries, go out as one LevelDB batch, so a
   * busy node writes a few batches a second instead of one per Ready. Not fsynced: the Raft
   * log is, so a crash re-applies from the last durable applied index; nothing a client saw
   * depends on this write.
   */
  private schedulePersist(): void {
    if (this.stopped) return;
    this.persistWanted = true;
    if (this.persistInFlight) return;
    if (this.appliedSincePersist < PERSIST_MAX_READIES) {
      this.persistTimer ??= setTimeout(() => {
        this.persistTimer = undefined;
        this.persistNow();
      }, PERSIST_INTERVAL_MS);
      return;
    }
    this.persistNow();
  }

  private persistNow(): void {
    if (this.persistTimer) clearTimeout(this.persistTimer);
    this.persistTimer = undefined;
    if (this.persistInFlight || !this.persistWanted || this.stopped) return;
    this.persistInFlight = true;
    this.persistWanted = false;
    this.appliedSincePersist = 0;
    const confState = this.membershipDirty ? this.membershipBytes() : undefined;
    this.membershipDirty = false;
    this.backend
      .persist({ confState, sync: false })
      .catch((e: unknown) => this.failStorage(e, 'the applied state'))
      .finally(() => {
        this.persistInFlight = false;
        if (this.persistWanted && !this.stopped) this.schedulePersist();
      });
  }

  /**
   * Compacts the Raft log as etcd does: fsync the applied state, then drop the log up to
   * LOG_ENTRIES_KEPT_AFTER_SNAPSHOT entries behind it. No image of the state is written: that
   * costs time in proportion to the whole state, so it is made only when a follower needs one
   * (takeSnapshot, called through the log store's onSnapshotNeeded).
   */
  private async compactLog(): Promise<void> {
    this.compacting = true;
    try {
      await this.backend.persist({ confState: this.membershipBytes(), sync: true });
      this.appliedSinceSnapshot = 0;
      const compactTo = this.backend.durableAppliedIndex - (this.opts.snapshotCatchUpEntries ?? LOG_ENTRIES_KEPT_AFTER_SNAPSHOT);
      if (compactTo > this.logStore.firstIndex()) await this.logStore.compact(compactTo);
    } catch (e) {
      if (this.backend.failure !== undefined) this.failStorage(e, 'the applied state');
      else if (isDiskError(e)) this.failStorage(e, 'the Raft log');
      else this.opts.logger.warn({ err: e }, 'log compaction failed');
    } finally {
      this.compacting = false;
    }
  }

  /** Writes a snapshot of the applied state for Raft to send to a follower behind the log's start. */
  private async takeSnapshot(): Promise<void> {
    if (this.snapshotting || this.stopped) return;
    this.snapshotting = true;
    try {
      const index = this.store.appliedIndex;
      if (index <= this.logStore.snapshotMetadata().index) return;
      const started = performance.now();
      // The member table (addresses, removed ids) goes with the image: a follower that catches
      // up from it learns of members added, moved or removed in the entries it skips.
      const meta = await this.logStore.createSnapshot(index, this.conf, this.store.snapshot(undefined, this.membershipBytes()));
      this.opts.logger.info({ index: meta.index, bytes: this.logStore.snapshotSizeBytes(), ms: Math.round(performance.now() - started) }, 'snapshot made for a follower behind the log');
    } catch (e) {
      if (isDiskError(e)) this.failStorage(e, 'a snapshot');
      else this.opts.logger.warn({ err: e }, 'snapshot failed');
    } finally {
      this.snapshotting = false;
    }
  }

  /**
   * Checks a snapshot received from the leader before it replaces the log: decodes the spooled
   * image (which verifies its checksum and structure) and keeps the result for restoreSnapshot,
   * which follows the save that installs it. A snapshot that fails is refused, never installed.
   */
  private async decodeIncomingSnapshot(meta: SnapshotMetadata, data: AsyncIterable<Uint8Array>): Promise<void> {
    this.receivedSnapshot = undefined;
    const state = await readSnapshot(data);
    if (state.appliedIndex !== meta.index) throw new Error(`the image holds the state at index ${state.appliedIndex}, not ${meta.index}`);
    this.receivedSnapshot = { meta, state };
  }

  private async restoreSnapshot(snap: Snapshot): Promise<void> {
    const received = this.receivedSnapshot;
    this.receivedSnapshot = undefined;
    if (received === undefined || received.meta.index !== snap.metadata.index || received.meta.term !== snap.metadata.term) {
      throw new Error(`snapshot ${snap.metadata.term}/${snap.metadata.index} was installed without being decoded first`);
    }
    const started = performance.now();
    await this.restoreFromSnapshotFile(snap.metadata, received.state);
    this.opts.logger.info({ index: snap.metadata.index, bytes: this.logStore.snapshotSizeBytes(), restoreMs: Math.round(performance.now() - started) }, 'installed a snapshot received from the leader');
  }

  /**
   * At start: a crash between installing a snapshot from the leader and persisting the state
   * restored from it leaves the applied state behind the log's start. Restore it from the
   * stored snapshot file (etcd opens its snapshot db when the backend is behind it); Raft then
   * re-applies the log after it. Without this Raft would start past entries never applied.
   */
  private async catchUpWithStoredSnapshot(): Promise<void> {
    const stored = this.logStore.snapshotMetadata();
    const applied = this.store.appliedIndex;
    if (stored.index > applied) {
      const started = performance.now();
      await this.restoreFromSnapshotFile(stored);
      this.opts.logger.warn({ index: stored.index, appliedBefore: applied, restoreMs: Math.round(performance.now() - started) }, 'restored the applied state from the stored snapshot: it was behind the Raft log (a crash while installing a snapshot)');
    }
    const first = this.logStore.firstIndex();
    if (this.store.appliedIndex < first - 1) {
      throw new NodeError('STATE_BEHIND_LOG', `the applied state (index ${this.store.appliedIndex}) is behind the Raft log's start (${first}) and no snapshot covers the gap; remove this member and add it again`);
    }
  }

  /**
   * Replaces the applied state with the stored snapshot `meta` (already decoded as `state`, or
   * streamed from its file) and adopts its configuration.
   */
  private async restoreFromSnapshotFile(meta: SnapshotMetadata, state?: InstallableState): Promise<void> {
    const current = this.logStore.snapshotMetadata();
    if (current.index !== meta.index || current.term !== meta.term) {
      throw new Error(`snapshot ${meta.term}/${meta.index} to restore is not the stored one (${current.term}/${current.index})`);
    }
    let context: Uint8Array | undefined;
    if (state !== undefined) {
      this.store.restoreState(state);
      context = state.context;
    } else {
      context = await this.store.restore(this.logStore.openSnapshotStream());
    }
    if (this.store.appliedIndex !== meta.index) throw new Error(`snapshot ${meta.term}/${meta.index} holds the state at index ${this.store.appliedIndex}`);
    this.conf = meta.conf;
    this.adoptSnapshotMembers(context);
    const inConf = new Set([...this.conf.voters, ...this.conf.learners]);
    for (const id of [...this.members.keys()]) if (!inConf.has(id)) this.members.delete(id);
    for (const m of this.members.values()) m.isLearner = this.conf.learners.includes(m.id);
    this.membersChanged();
    await this.backend.persist({ confState: this.membershipBytes(), sync: true });
  }

  /**
   * The member table a snapshot carries (the writer's at the snapshot's index): members added or
   * moved in the entries this member skipped get their addresses, removed ones stay removed.
   * A snapshot without one (written before it was carried) leaves what we know.
   */
  private adoptSnapshotMembers(context: Uint8Array | undefined): void {
    if (context === undefined) return;
    let table: AppliedMembership;
    try {
      table = JSON.parse(dec.decode(context)) as AppliedMembership;
      if (!Array.isArray(table.members)) throw new Error('no member list');
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message }, 'the snapshot\'s member table is unreadable; keeping the one we have');
      return;
    }
    for (const id of table.removed ?? []) {
      this.removedMembers.add(id);
      this.members.delete(id);
      if (id !== this.id) this.transport?.removePeer(id);
    }
    for (const m of table.members) {
      if (this.removedMembers.has(m.id)) continue;
      this.members.set(m.id, memberEntry(m, this.conf.learners.includes(m.id)));
      // An address the member announced itself still wins in the transport.
      if (m.id !== this.id && m.peerAddr && this.transport !== undefined) this.transport.addPeer(m.id, m.peerAddr);
    }
  }

  /**
   * A write to the data dir failed. Raft must not go on without its log (nothing may be
   * acknowledged that is not durable) and the applied state cannot be written past a gap, so
   * the member stops taking part, as etcd does on a failed WAL or backend write. Nothing
   * acknowledged is lost: a restart recovers what was written and the rest from the leader.
   */
  private failStorage(err: unknown, what: string): void {
    if (this.storageFailure !== undefined || this.stopped) return;
    this.storageFailure = err instanceof Error ? err : new Error(String(err));
    const code = (err as { code?: unknown }).code;
    if (isDiskError(err)) {
      this.opts.logger.fatal(
        { err, code, dataDir: this.opts.dataDir },
        `writing ${what} failed (${this.storageFailure.message}); this member stops taking part. Free space or replace the disk, then start it again: it recovers what it wrote and the rest from the leader`,
      );
    } else {
      // Not the disk: a bug. Stop all the same (the loop that failed cannot be trusted).
      this.opts.logger.fatal({ err, code }, `internal error while handling ${what} (${this.storageFailure.message}); this member stops taking part`);
    }
    setImmediate(() => this.opts.onFatal?.(this.storageFailure!));
  }

  /**
   * This member is no longer in the cluster: mark the data dir so a restart does not take part
   * with a stale identity, report not ready, and tell the embedder, which stops the node (etcd
   * exits). A removed member never hears its own removal commit when the leader stops sending
   * to it first, so a peer's authenticated notice (REMOVED_NOTICE) counts as well.
   */
  private removedFromCluster(how: string): void {
    if (this.removed || this.stopped) return;
    this.removed = true;
    this.opts.logger.error({ how }, 'this member was removed from the cluster; stopping (remove the data dir to join again)');
    let markError: Error | undefined;
    try {
      writeFileDurablySync(join(this.opts.dataDir, REMOVED_MARKER), `removed from cluster ${this.clusterId.toString(16)}: ${how}\n`);
    } catch (e) {
      markError = e instanceof Error ? e : new Error(String(e));
      this.opts.logger.error({ err: e, dataDir: this.opts.dataDir }, 'could not mark the data dir as removed: remove it by hand before starting this node again');
    }
    // A `member remove` of this member, made through this member, waits for it: answered now,
    // before the stop that follows closes the client port.
    for (const fn of this.memberListeners) fn();
    // Not from inside Raft's apply or the transport's callback.
    setImmediate(() => this.opts.onRemoved?.(markError));
  }

  /** This member learnt it was removed from the cluster (it may not have applied the removal yet). */
  get wasRemoved(): boolean {
    return this.removed;
  }

  /**
   * A peer says another live process is this member and started first (core/net/
   * duplicate-member.ts): stop sending and receiving Raft messages at once, and tell the
   * embedder, which stops the node. The other process goes on as the member.
   */
  private duplicateFound(by: NodeId, notice: DuplicateNotice): void {
    if (this.duplicate !== undefined || this.stopped || this.removed) return;
    this.duplicate = new NodeError(
      'DUPLICATE_MEMBER',
      `another process is running as this member (${this.id.toString(16)}, data dir ${this.opts.dataDir}) and started first: ` +
        `member ${by.toString(16)} hears it from ${notice.otherRemote}, up ${Math.round(notice.otherUptimeMs / 1000)} s. ` +
        'Its data dir and this one are copies (an SD card image of a running manager flashed onto another board?); two processes of one member would break Raft, so this one stops. ' +
        'To add this board as a new member, remove this data dir and start it with its own --name and --join HOST --token TOKEN (not --bootstrap).',
    );
    this.opts.logger.fatal({ by: by.toString(16), other: notice.otherRemote }, this.duplicate.message);
    // Raft stops here, not when the embedder gets to stopping the node: no tick, no campaign,
    // no term or vote written by the process that is not the member.
    this.driver.stop();
    void this.transport.close();
    setImmediate(() => this.opts.onDuplicate?.(this.duplicate!));
  }

  // ------------------------------------------------------------------------- leadership

  private onLeaderChange(lead: NodeId, role: Role): void {
    const wasLeader = this.role === Role.Leader;
    this.lead = lead;
    this.role = role;
    if (role === Role.Leader && !wasLeader) {
      // etcd: a new leader extends every live lease by its full TTL rather than expiring it early.
      this.leaseTimers.becomeLeader(this.store.leases(), this.opts.tickMs * this.opts.electionTicks);
      this.opts.logger.info({ term: this.driver.node.status().term }, 'became leader');
    } else if (role !== Role.Leader && wasLeader) {
      this.leaseTimers.stepDown();
      this.autoCompactor.reset();
    }
  }

  /** Every LEASE_TICK_MS on the leader: expire leases (after confirming leadership) and promote learners. */
  private async leaderDuties(): Promise<void> {
    if (this.stopped || this.duplicate !== undefined || this.role !== Role.Leader) return;
    // One leader check at a time: runs started while one waits (a slow disk holds the round's
    // apply for seconds) would each take a full round's share of revokes after it.
    if (!this.leaseCheckInFlight) {
      const t = this.leaseTimers.tick();
      // Confirmed after they expired, by a round before this one: proposed now, before any wait
      // (after one, leadership may have been lost and won again, and the lease extended).
      this.proposeRevokes(t.revoke);
      if (t.needConfirm) {
        this.leaseCheckInFlight = true;
        try {
          this.leaseTimers.confirmLeadership(await this.driver.readBarrier());
          // As etcd's expiry loop: what expired before the round started is revoked as soon as
          // the round confirms leadership, not a tick later. A step-down meanwhile cleared the
          // timers: nothing comes back.
          this.proposeRevokes(this.leaseTimers.tick(this.leaseTimers.maxRevokesPerTick - t.revoke.length).revoke);
        } catch {
          // not confirmed: leases stay; a new leader will extend them
        } finally {
          this.leaseCheckInFlight = false;
        }
      }
    }
    this.promoteCaughtUpLearners();
    this.autoCompact();
  }

  private proposeRevokes(ids: readonly number[]): void {
    for (const id of ids) this.propose({ leaseRevoke: { ID: id } }).catch(() => this.leaseTimers.revokeFailed(id));
  }

  /** Propose the compaction the auto-compactor asks for (one at a time; failures wait for the next tick). */
  private autoCompact(): void {
    if (this.compactionInFlight) return;
    const rev = this.autoCompactor.tick(performance.now(), this.store.revision, this.store.compactRevision);
    if (rev === undefined) return;
    this.compactionInFlight = true;
    this.propose({ compaction: { revision: rev, physical: false } })
      .then((r) => {
        if ('error' in r) this.opts.logger.debug({ revision: rev, err: r.error.message }, 'auto-compaction refused');
        else this.opts.logger.info({ revision: rev, retainedBytes: this.store.retainedBytes }, 'auto-compacted');
      })
      .catch((err: Error) => this.opts.logger.debug({ revision: rev, err: err.message }, 'auto-compaction not committed'))
      .finally(() => {
        this.compactionInFlight = false;
      });
  }

  /**
   * Learners that joined through --join become voters once caught up; one added with
   * `etcdctl member add --learner` stays a learner until `etcdctl member promote`, as in etcd
   * (its operator may want it a learner, a read replica or a standby).
   */
  private promoteCaughtUpLearners(): void {
    const st = this.driver.node.status();
    if (!st.progress) return;
    for (const id of st.conf.learners) {
      const pr = st.progress[String(id)];
      if (!pr || pr.state !== ProgressState.Replicate || pr.match + LEARNER_CATCH_UP_ENTRIES < st.lastIndex) continue;
      if (this.members.get(id)?.operatorPromotes === true || this.promotionRefusal(id) !== undefined) continue;
      try {
        this.driver.proposeConfChange({ type: ConfChangeType.AddVoter, nodeId: id });
        this.opts.logger.info({ node: id.toString(16) }, 'promoting caught-up learner');
      } catch (e) {
        if (!(e instanceof RaftError)) throw e;
      }
      return; // one change at a time
    }
  }

  // ------------------------------------------------------------------------- requests

  /** Replicate a KV request through Raft and return the state machine's response. */
  /** `requester`: the client's call; a proposal still waiting for a leader when it gives up is dropped. */
  async propose(req: KvRequest, requester?: Requester): Promise<KvResponse> {
    // Checked where the request enters, never at apply: every entry in the log is applied
    // the same way on every member.
    if (!this.spaceAlarm.admits(req, this.store.retainedBytes)) throw new KvError('NO_SPACE');
    const data = encodeKvRequest(req);
    return (await this.driver.propose(data, requester)) as KvResponse;
  }

  /** A follower waits at least this long after its leader's last message before it campaigns. */
  get electionTimeoutMs(): number {
    return this.opts.tickMs * this.opts.electionTicks;
  }

  /**
   * Wait until this member has applied everything committed before the call (ReadIndex);
   * resolves with the instant its round started (RaftDriver.readBarrier).
   */
  linearizableBarrier(): Promise<number> {
    return this.driver.readBarrier();
  }

  /** etcd's defrag: both LevelDB stores compacted, in their own thread (this member keeps serving). */
  async defragment(): Promise<void> {
    await Promise.all([this.backend.defragment(), this.logStore.defragment()]);
  }

  get isLeader(): boolean {
    return this.role === Role.Leader;
  }

  /** A learner in the applied configuration (a member not yet in it is none, as in etcd). */
  get isLearner(): boolean {
    return this.conf.learners.includes(this.id);
  }

  /**
   * Asks Raft to hand leadership to `to` (it catches `to` up, then tells it to campaign at
   * once) and waits until this member sees `to` as leader; false if that took longer than
   * timeoutMs (Raft itself gives up after an election timeout).
   */
  async transferLeadership(to: NodeId, timeoutMs = this.opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS): Promise<boolean> {
    if (this.lead === to) return true;
    // Only a leader hands over (a follower drops the request): no wait for what cannot come.
    if (!this.isLeader) return false;
    // Monotonic: a Pi's wall clock steps forward when NTP first syncs after boot.
    const deadline = performance.now() + timeoutMs;
    this.driver.transferLeadership(to);
    while (this.lead !== to) {
      if (performance.now() > deadline || this.stopped) return false;
      await new Promise((r) => setTimeout(r, this.opts.tickMs));
    }
    return true;
  }

  private async handOffLeadership(): Promise<void> {
    const st = this.driver.node.status();
    let best: { id: NodeId; match: number } | undefined;
    for (const id of st.conf.voters) {
      const match = st.progress?.[String(id)]?.match ?? -1;
      if (id !== this.id && (best === undefined || match > best.match)) best = { id, match };
    }
    if (best === undefined) return;
    const started = performance.now();
    const ok = await this.transferLeadership(best.id, this.opts.tickMs * this.opts.electionTicks).catch(() => false);
    const to = best.id.toString(16);
    if (ok) this.opts.logger.info({ to, ms: Math.round(performance.now() - started) }, 'handed leadership over before stopping');
    else this.opts.logger.warn({ to }, 'leadership handoff before stopping did not finish; stopping anyway');
  }

  /**
   * A member started at other addresses than the cluster has on record (a new DHCP lease, other
   * ports), or with another quota (more memory, another --quota-backend-bytes), or with no
   * quota on record (recorded before quotas were), or with another client-port certificate to
   * publish (--auto-tls made or renewed one, or is no longer given): the others already dial it
   * where its handshake said; this records it through Raft, so `member list`, a restarted
   * member, every member's quota and members forwarding to it (member-cert.ts) see it.
   */
  private async recordOwnMember(addresses: MemberContext): Promise<void> {
    const rec = this.members.get(this.id);
    if (this.updatingOwnRecord || this.stopped || this.removed || this.duplicate !== undefined || this.lead === 0 || rec === undefined) return;
    // One too long to record is not published (it would be recorded as none, and asked again forever).
    const published = this.opts.publishedClientCert?.() ?? '';
    const self: MemberContext = { ...addresses, clientCert: published.length <= MAX_PUBLISHED_CERT_CHARS ? published : '' };
    const onRecord = (m: Member | undefined): boolean =>
      m !== undefined && m.name !== '' && m.peerAddr === self.peerAddr && m.clientAddr === self.clientAddr && m.quotaBytes === self.quotaBytes && (m.clientCert ?? '') === self.clientCert;
    if (onRecord(rec)) return;
    if (!this.conf.voters.includes(this.id) && !this.conf.learners.includes(this.id)) return;
    this.updatingOwnRecord = true;
    const certificate = (rec.clientCert ?? '') === self.clientCert ? undefined : self.clientCert === '' ? 'withdrawn' : 'published';
    const previous = { peerAddr: rec.peerAddr, clientAddr: rec.clientAddr, quotaBytes: rec.quotaBytes };
    this.opts.logger.info({ peerAddr: self.peerAddr, clientAddr: self.clientAddr, quotaBytes: self.quotaBytes, clientCertificate: certificate, previous }, 'recording this member\'s addresses and quota');
    try {
      const context = enc.encode(JSON.stringify({ name: rec.name || self.name, peerAddr: self.peerAddr, clientAddr: self.clientAddr, quotaBytes: self.quotaBytes, clientCert: self.clientCert }));
      await this.changeMembership({ type: ConfChangeType.UpdateNode, nodeId: this.id, context }, () => {
        const now = this.members.get(this.id);
        return now === undefined || onRecord(now);
      });
      this.opts.logger.info({ peerAddr: self.peerAddr, clientAddr: self.clientAddr, quotaBytes: self.quotaBytes, clientCertificate: certificate }, 'recorded this member\'s addresses and quota');
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message }, 'recording this member\'s addresses and quota failed; retrying');
    } finally {
      this.updatingOwnRecord = false;
    }
  }

  /**
   * On the leader: why learner `id` may not become a voter now (core/api/promotion-check.ts), or
   * undefined. Not the leader: LEARNER_NOT_READY, as etcd answers (only the leader knows how far
   * the learner's log has come).
   */
  promotionRefusal(id: NodeId): PromotionRefusal | undefined {
    const st = this.driver.node.status();
    const pr = st.progress?.[String(id)];
    if (pr === undefined) return 'LEARNER_NOT_READY';
    const voters = st.conf.voters.map((v) => ({ started: (this.members.get(v)?.name ?? '') !== '', reached: v === this.id || this.reachesPeer(v) }));
    return promotionRefusal(voters, { match: pr.match, reached: this.reachesPeer(id) }, st.lastIndex);
  }

  /** This member has an open peer connection to member `id` (etcd's transport ActiveSince). */
  reachesPeer(id: NodeId): boolean {
    return this.transport?.stats().peers[String(id)]?.connected === true;
  }

  /** The op id carried by the last address update (UpdateNode) of member `id` applied here. */
  lastAddressUpdate(id: NodeId): string | undefined {
    return this.addressUpdates.get(id);
  }

  /** Propose a membership change and wait until it is applied here. */
  /**
   * No member can be added: the peer codec (MAX_CONF_MEMBERS) and a joiner (MAX_JOIN_MEMBERS)
   * refuse a configuration or member list larger, so one more would stop every later join and
   * snapshot (found by a crash hunt: 1,025 joins and the 1,026th failed for good).
   */
  get membersFull(): boolean {
    return this.members.size >= MAX_MEMBERS;
  }

  async changeMembership(cc: ConfChange, done: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = performance.now() + timeoutMs; // monotonic, as above
    while (!done()) {
      if (performance.now() > deadline) throw new RaftDriverError('TIMEOUT', 'membership change timed out');
      try {
        this.driver.proposeConfChange(cc);
      } catch (e) {
        if (!(e instanceof RaftError)) throw e;
      }
      await this.waitMembersChange(1000);
    }
  }

  /** Resolves true once `done()` holds (looked at after each membership change), false after `timeoutMs`. */
  async membersSettle(done: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (!done()) {
      const left = deadline - performance.now();
      if (left <= 0) return false;
      await this.waitMembersChange(Math.min(1000, left));
    }
    return true;
  }

  private waitMembersChange(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(finish, timeoutMs);
      const listener = (): void => finish();
      this.memberListeners.push(listener);
      function finish(this: void): void {
        clearTimeout(timer);
        resolve();
      }
      setTimeout(() => {
        this.memberListeners = this.memberListeners.filter((l) => l !== listener);
      }, timeoutMs + 1);
    });
  }

  private async handleJoin(req: MemberContext & { remoteAddress: string }): Promise<{ memberId: number; members: JoinMember[] }> {
    // etcd's way to add a member: `etcdctl member add NAME --peer-urls URL` records it
    // unstarted (no name), and the member started at that address takes that id. Looked up
    // before the barrier and nothing committed: a voter added so counts toward the quorum, and
    // with it absent there may be none (one member plus one added). It records its name once it runs.
    const unstarted = (): Member | undefined => [...this.members.values()].find((m) => m.name === '' && m.peerAddr === req.peerAddr);
    const added = unstarted();
    const named = (): boolean => [...this.members.values()].some((m) => m.name === req.name);
    if (added !== undefined && !named()) return { memberId: added.id, members: this.memberList() };
    // The member table as of every change committed before the join came in: a removal just
    // made through another member must be seen here, or its member is given its old id back.
    await this.driver.readBarrier();
    refuseSharedPeerAddr(this.members.values(), req);
    // A retry of a join already done (its answer lost): the member it added.
    const earlier = this.memberAddedBy(req);
    if (earlier !== undefined) return { memberId: earlier.id, members: this.memberList() };
    const existing = [...this.members.values()].find((m) => m.name === req.name);
    if (existing) {
      const remove = `etcdctl member remove ${existing.id.toString(16)}`;
      if (existing.peerAddr !== req.peerAddr) {
        throw new NodeError(
          'NAME_CONFLICT',
          `a member named ${req.name} already exists at ${existing.peerAddr}: start this one with another --name, or, if it replaces that member, remove that one first (${remove})`,
        );
      }
      // A voter joining again lost its data dir, with its vote and its log: as itself it could
      // elect a leader lacking committed writes.
      if (!existing.isLearner) {
        throw new NodeError(
          'MEMBER_IS_VOTER',
          `${req.name} (${existing.id.toString(16)}) is already a voter of this cluster: a voter cannot join again, as its data dir holds its vote and its log. If the data dir was lost, remove the member first (${remove}), then start it again with --join`,
        );
      }
      // A learner joining again lost what it had applied (or never started): under its old id
      // the leader would count entries as on it that its empty log lacks, and never catch it
      // up. It joins afresh, under a new id.
      await this.changeMembership({ type: ConfChangeType.RemoveNode, nodeId: existing.id }, () => !this.members.has(existing.id));
      this.opts.logger.info({ name: req.name, old: existing.id.toString(16) }, 'a learner joined again: its old id removed');
    }
    const addedMeanwhile = unstarted();
    if (addedMeanwhile !== undefined) return { memberId: addedMeanwhile.id, members: this.memberList() };
    const quotaBytes = validQuota(req.quotaBytes);
    // It would have to hold the whole history at once (from a snapshot) and bound the cluster
    // below what it already holds.
    if (quotaBytes !== undefined && this.store.retainedBytes >= quotaBytes) {
      throw new NodeError(
        'HISTORY_TOO_LARGE',
        `the cluster's history already takes ${this.store.retainedBytes} bytes, and ${req.name}'s space quota (what its memory can hold) is ${quotaBytes} bytes: ` +
          `compact the history first (etcdctl compact REV), or give ${req.name} a larger --quota-backend-bytes if its memory allows`,
      );
    }
    if (this.membersFull) {
      throw new NodeError('TOO_MANY_MEMBERS', `the cluster has ${this.members.size} members, the most it can hold (${MAX_MEMBERS}): remove one first`);
    }
    const id = randomInt(1, 2 ** 47);
    const context = enc.encode(JSON.stringify({ name: req.name, peerAddr: req.peerAddr, clientAddr: req.clientAddr, quotaBytes, joinId: req.joinId }));
    await this.changeMembership({ type: ConfChangeType.AddLearner, nodeId: id, context }, () => this.members.has(id));
    // Retries of one join handled at once (here or through another member) each add a learner:
    // every one answers with the first applied, and the later ones are removed again.
    const first = this.memberAddedBy(req);
    if (first !== undefined && first.id !== id) {
      await this.changeMembership({ type: ConfChangeType.RemoveNode, nodeId: id }, () => !this.members.has(id));
      this.opts.logger.info({ name: req.name, kept: first.id.toString(16), removed: id.toString(16) }, 'a join retried while it ran: one member kept');
      return { memberId: first.id, members: this.memberList() };
    }
    return { memberId: id, members: this.memberList() };
  }

  /**
   * The first member (in the order applied: the table keeps it) that join `req` added, by its
   * join id, at its name and address; none for joiners that send no join id.
   */
  private memberAddedBy(req: MemberContext): Member | undefined {
    if (req.joinId === undefined) return undefined;
    return [...this.members.values()].find((m) => m.joinId === req.joinId && m.name === req.name && m.peerAddr === req.peerAddr);
  }

  /**
   * Gossip says member `id` runs at `peerAddr` (host:port): if we cannot reach it where we dial
   * it, try there (see PeerTransport.peerSeenAt).
   */
  peerSeenAt(id: NodeId, peerAddr: string): void {
    if (id === this.id || !this.members.has(id) || this.transport === undefined) return;
    this.transport.peerSeenAt(id, peerAddr);
  }

  /** A join connection accepted by another listener (the gossip port's TCP side). */
  joinConnection(socket: import('node:net').Socket, onAuthenticated?: () => void): void {
    this.joinServer?.handleConnection(socket, onAuthenticated);
  }

  memberList(): JoinMember[] {
    return [...this.members.values()].map(({ id, name, peerAddr, clientAddr, quotaBytes }) => ({ id, name, peerAddr, clientAddr, quotaBytes }));
  }

  readiness(): { ok: boolean; reason: string } {
    if (this.removed) return { ok: false, reason: 'removed from the cluster' };
    if (this.storageFailure !== undefined) return { ok: false, reason: `writing to the data dir failed: ${this.storageFailure.message}` };
    if (this.duplicate !== undefined) return { ok: false, reason: 'another process is running as this member' };
    if (this.lead === 0) return { ok: false, reason: 'no leader' };
    if (!this.conf.voters.includes(this.id) && !this.conf.learners.includes(this.id)) return { ok: false, reason: 'not yet a member' };
    return { ok: true, reason: `leader ${this.lead.toString(16)}` };
  }

  /** Durations of Raft log writes (`sync`: with fsync) and of applied-state batches, for metrics. */
  observeDisk(onLogWrite: WriteObserver, onStateWrite: WriteObserver): void {
    this.logStore.observeWrites(onLogWrite);
    this.backend.observeWrites(onStateWrite);
  }

  /** Counters of the Raft log store (batches, fsyncs, bytes). */
  logStoreStats(): RaftLogStoreStats {
    return this.logStore.stats();
  }

  tokenString(): string {
    return this.token;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    // As etcd does on a clean stop: hand leadership to the most caught-up voter first, so
    // clients wait for a transfer (a round trip or two) rather than an election timeout.
    // (Not after a failed write: the Ready loop that would carry the transfer has stopped.)
    if (this.isLeader && !this.removed && this.storageFailure === undefined && this.duplicate === undefined) await this.handOffLeadership();
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    if (this.persistTimer) clearTimeout(this.persistTimer);
    this.driver?.stop();
    await this.joinServer?.close().catch(() => undefined);
    await this.transport?.close().catch(() => undefined);
    // A clean stop leaves the applied state durable, so the next start replays nothing.
    await this.backend.persist({ confState: this.membershipBytes(), sync: true }).catch(() => undefined);
    await this.backend.close().catch(() => undefined);
    await this.logStore.close().catch(() => undefined);
  }
}

/** A JSON file of the data dir, refused with its name when it is not what it should be. */
function readJsonFile<T>(path: string, valid: (v: unknown) => v is T): T {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new NodeError('DATA_DIR_DAMAGED', `${path} is damaged (${(err as Error).message}): restore it from a backup, or remove the data dir and join the cluster again`);
  }
  if (!valid(v)) throw new NodeError('DATA_DIR_DAMAGED', `${path} is damaged (not what picloud wrote): restore it from a backup, or remove the data dir and join the cluster again`);
  return v;
}

/** The data dir's token file, refused with its name when missing or not a token. */
function readTokenFile(path: string): string {
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
    parseToken(token);
  } catch (err) {
    throw new NodeError('DATA_DIR_DAMAGED', `${path} is missing or damaged (${(err as Error).message}): write the cluster's token into it (picloud-node token on another manager prints it)`);
  }
  return token;
}

function readIdentity(path: string): Identity {
  return readJsonFile(path, (v): v is Identity => {
    const i = v as Partial<Identity> | null;
    return (
      typeof i === 'object' && i !== null && Number.isSafeInteger(i.id) && (i.id as number) > 0 && typeof i.name === 'string' &&
      Number.isSafeInteger(i.clusterId) && (i.board === undefined || typeof i.board === 'string')
    );
  });
}

/**
 * What is in the stores must fit identity.json. Without an identity a data dir holds nothing
 * yet, or a restored snapshot (its marker), or a first bootstrap killed before identity.json
 * (its one conf-change entry); anything else is a member's data whose identity is lost (a new
 * one would split it off as a second cluster), or a data dir from elsewhere given to --join
 * (it would take part with state the cluster never had). With an identity, an applied state
 * without the Raft log that led to it means the log (and the member's term and vote) is lost.
 */
function checkDataDirState(opts: ManagerNodeOptions, identity: Identity | undefined, logStore: RaftLogStore, backend: MvccBackend, restored: boolean): void {
  const applied = backend.store.appliedIndex;
  const logLast = Math.max(logStore.lastIndex(), logStore.snapshotMetadata().index);
  const dir = opts.dataDir;
  const fresh = `remove the data dir and join the cluster again (picloud-node agent --join HOST --token TOKEN), or restore a snapshot into a new one`;
  if (identity !== undefined) {
    if (applied > 0 && logLast === 0 && logStore.hardState().term === 0) {
      throw new NodeError('DATA_DIR_DAMAGED', `${dir}: the Raft log (raft/) is missing or empty while the applied state is at index ${applied}: the member's log, term and vote are lost. Not starting on it: ${fresh}`);
    }
    checkIdentityInMembership(identity, backend, dir, fresh);
    return;
  }
  if (restored) {
    if (!opts.bootstrap) throw new NodeError('DATA_DIR_DAMAGED', `${dir} holds a restored snapshot: start it with --bootstrap to found a new cluster holding the data (a restored data dir cannot join a cluster)`);
    return;
  }
  const interruptedBootstrap = opts.bootstrap && applied === 0 && logLast <= 1 && logStore.hardState().term <= 1;
  if (applied > 0 || (logLast > 0 && !interruptedBootstrap)) {
    throw new NodeError(
      'DATA_DIR_DAMAGED',
      `${dir} holds a member's data (applied index ${applied}, Raft log to ${logLast}) but no identity.json: it is damaged or not a data dir of this cluster. ` +
        `Not starting on it (a new identity would split it off as a second cluster): restore identity.json, or ${fresh}. ` +
        `A data dir made by an older picloud-node snapshot restore: restore the snapshot again.`,
    );
  }
}

/**
 * identity.json must name the member this data dir's applied membership knows it as (etcd keeps
 * the member ID in its WAL and refuses a member the cluster does not list the same way). An ID
 * that is another member's (the file copied from that member's data dir, or edited) would run
 * this dir's Raft log, term and vote as that member's, even take its place while it is down; an
 * ID no member has, while this name is recorded under another, would wait for ever for a
 * cluster that does not know it; an ID the cluster removed is etcd's "permanently removed".
 * The membership also names the member that wrote it (`self`), which catches a whole
 * identity.json of another member (its name too) put in this data dir. A data dir that has
 * applied no membership yet (a joiner's first start) has nothing to check.
 */
function checkIdentityInMembership(identity: Identity, backend: MvccBackend, dir: string, fresh: string): void {
  if (backend.confState === undefined) return;
  const membership = JSON.parse(dec.decode(backend.confState)) as AppliedMembership;
  const id = identity.id.toString(16);
  if (membership.removed?.includes(identity.id)) {
    throw new NodeError('MEMBER_REMOVED', `${dir}: identity.json names member ${id}, which was permanently removed from the cluster: remove the data dir, then join again (picloud-node agent --join HOST --token TOKEN)`);
  }
  const byId = membership.members.find((m) => m.id === identity.id);
  const byName = membership.members.find((m) => m.name === identity.name);
  // A member added by address (`etcdctl member add`) has no name until it first runs.
  const otherName = byId !== undefined && byId.name !== '' && byId.name !== identity.name;
  if (otherName || (byId === undefined && byName !== undefined)) {
    const known = [byId && byId.name !== '' ? `${id} as '${byId.name}'` : `no member ${id}`, byName ? `'${identity.name}' as ${byName.id.toString(16)}` : undefined].filter(Boolean).join(' and ');
    throw new NodeError(
      'IDENTITY_MISMATCH',
      `${dir}: identity.json names member '${identity.name}' ${id}, but the membership this data dir holds knows ${known}: identity.json was edited or copied from another member's data dir. ` +
        `Not starting on it (it would take part as another member with this one's Raft log, term and vote): ` +
        `${byName ? `put back this member's own identity.json (id ${byName.id.toString(16)}), or ` : ''}${fresh}`,
    );
  }
  // A whole identity.json of another member (its name and ID) put in this data dir.
  if (membership.self !== undefined && membership.self !== identity.id) {
    const owner = membership.members.find((m) => m.id === membership.self);
    throw new NodeError(
      'IDENTITY_MISMATCH',
      `${dir}: identity.json names member '${identity.name}' ${id}, but this data dir holds the Raft log, term and vote of member ${owner?.name ? `'${owner.name}' ` : ''}${membership.self.toString(16)}: identity.json was copied from another member's data dir or edited. ` +
        `Not starting on it (it would take part as '${identity.name}' with another member's log and vote): put back the data dir's own identity.json (id ${membership.self.toString(16)}), or ${fresh}`,
    );
  }
}

/**
 * The board check of a data dir that already has an identity (agent/board-id.ts): on the board
 * it records, or none recorded yet (recorded now); on another only with `newBoard` naming the
 * board it last ran on, which records this one.
 */
function checkBoard(identity: Identity, identityPath: string, opts: ManagerNodeOptions, log: Logger): void {
  const here = opts.board;
  const from = opts.newBoard;
  if (here === undefined) {
    if (from !== undefined) log.warn('--new-board given, but this board has no id to record: ignored');
    return;
  }
  if (identity.board === here) {
    if (from !== undefined) log.warn({ board: here }, '--new-board given, but this data dir already runs on this board: remove the flag');
    return;
  }
  if (identity.board !== undefined && from !== identity.board) {
    const said = from === undefined ? '' : ` (--new-board names ${from}, not that board)`;
    throw new NodeError(
      'OTHER_BOARD',
      `the data dir ${opts.dataDir} of member '${identity.name}' (${identity.id.toString(16)}) last ran on board ${identity.board}; this board reads as ${here}${said}. ` +
        'If it is a copy (an SD card image flashed onto this board), it must not run as that member: remove the data dir and start with ' +
        'this board\'s own --name and --join HOST --token TOKEN (not --bootstrap) to add it as a new member. ' +
        'If it is that member\'s card, moved here because its board is gone for good, or this machine\'s id changed (a BIOS update, ' +
        `${'PICLOUD_BOARD_ID'} set, a move into a container), start once with --new-board ${identity.board}.`,
    );
  }
  if (identity.board === undefined) log.info({ board: here }, 'recorded the board this data dir runs on');
  else log.warn({ from: identity.board, to: here }, 'this data dir now runs on this board (--new-board)');
  identity.board = here;
  writeFileDurablySync(identityPath, JSON.stringify(identity) + '\n');
}

function normaliseToken(token: string): string {
  try {
    return formatToken(parseToken(token).secret);
  } catch (e) {
    throw new NodeError('BAD_TOKEN', (e as Error).message);
  }
}

/**
 * A joiner advertising the peer address of another member, as etcd refuses `member add` at a
 * peer URL in use ("Peer URLs already exists"): the members would dial one of the two for both.
 * Not a final refusal (retried): a member that moved away records its new address once it runs
 * there, and the address is then free.
 */
function refuseSharedPeerAddr(members: Iterable<Member>, req: MemberContext): void {
  for (const m of members) {
    if (m.name === '' || m.name === req.name || m.peerAddr !== req.peerAddr) continue;
    throw new NodeError(
      'PEER_ADDR_IN_USE',
      `peer address ${req.peerAddr} is member ${m.name}'s (${m.id.toString(16)}): two members cannot share one (etcd refuses it too: Peer URLs already exists). ` +
        `Give ${req.name} its own --advertise or --peer-port, or, if it replaces ${m.name}, remove that member first (etcdctl member remove ${m.id.toString(16)})`,
    );
  }
}

/** Join refusals that stand until someone acts (renames, removes, compacts): not retried. */
const FINAL_JOIN_REFUSALS = new Set(['NAME_CONFLICT', 'MEMBER_IS_VOTER', 'HISTORY_TOO_LARGE']);

async function joinWithRetry(opts: ManagerNodeOptions, peerKey: Uint8Array, self: MemberContext, log: Logger) {
  // One id for all the attempts: an attempt whose answer was lost left a member, and the next
  // gets that one (core/api/manager-node.ts handleJoin).
  const request = { ...self, joinId: randomBytes(8).toString('hex') };
  let lastErr: unknown;
  for (let attempt = 0; attempt < 10; attempt++) {
    for (const address of opts.join) {
      try {
        return await joinCluster({ address, peerKey, request, defaultPort: 7946 });
      } catch (e) {
        // Asking again changes nothing until someone acts: say so now.
        if (e instanceof JoinRefusedError && FINAL_JOIN_REFUSALS.has(e.reason)) throw new NodeError('JOIN_FAILED', e.message);
        lastErr = e;
        log.warn({ address, err: (e as Error).message }, 'join attempt failed');
      }
    }
    await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** attempt)));
  }
  throw new NodeError('JOIN_FAILED', `could not join via ${opts.join.join(', ')}: ${(lastErr as Error)?.message}`);
}
