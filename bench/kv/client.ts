/**
 * The benchmark's client at the etcd v3 gRPC API level, used unchanged against picloud and
 * etcd: KV Put/Range, Watch streams, Maintenance Status and Cluster MemberList, over several
 * channels (each its own TCP connection) to one endpoint, a deadline per call and no retries,
 * so every number is what the server did. Not a general-purpose client.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO, etcdType } from '../../core/net/proto-files.js';

/** Deadline of every unary call: long enough that a loaded server is measured, not timed out. */
export const CALL_DEADLINE_MS = 10_000;

type Obj = Record<string, any>;
type Callback = (err: grpc.ServiceError | null, res: Obj) => void;
type Unary = (req: Obj, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;
type ServiceClient = grpc.Client & Record<string, Unary>;
type Ctor<T> = new (addr: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => T;

interface Services {
  KV: Ctor<ServiceClient>;
  Maintenance: Ctor<ServiceClient>;
  Cluster: Ctor<ServiceClient>;
  Auth: Ctor<ServiceClient>;
}

let services: Services | undefined;

function loadServices(): Services {
  if (!services) {
    // longs as strings: member ids are full uint64; revisions are compared as strings.
    const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true });
    const pkg = (grpc.loadPackageDefinition(def) as any).etcdserverpb;
    services = { KV: pkg.KV, Maintenance: pkg.Maintenance, Cluster: pkg.Cluster, Auth: pkg.Auth };
  }
  return services;
}

/**
 * A private subchannel pool per channel: grpc-js otherwise shares one TCP connection among
 * every channel to the same target, and "several channels" would be one connection.
 */
const CHANNEL_OPTIONS: grpc.ChannelOptions = { 'grpc.use_local_subchannel_pool': 1, 'grpc.max_receive_message_length': 64 * 1024 * 1024 };

function unary(client: ServiceClient, method: string, req: Obj, deadlineMs = CALL_DEADLINE_MS, metadata?: grpc.Metadata): Promise<Obj> {
  return new Promise((resolve, reject) => {
    const opts = { deadline: Date.now() + deadlineMs };
    if (metadata) (client[method] as any).call(client, req, metadata, opts, (err: grpc.ServiceError | null, res: Obj) => (err ? reject(err) : resolve(res)));
    else client[method]!.call(client, req, opts, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/**
 * Switches etcd's auth on at `endpoint` the way an operator would (root with the root role, a
 * user holding read-write on every key through a role) and returns that user's token, so the
 * same workload measures what auth costs each system.
 */
export async function enableAuth(endpoint: string): Promise<string> {
  const { Auth } = loadServices();
  const c = new Auth(endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  try {
    await unary(c, 'UserAdd', { name: 'root', password: 'bench-root' });
    await unary(c, 'RoleAdd', { name: 'root' });
    await unary(c, 'UserGrantRole', { user: 'root', role: 'root' });
    await unary(c, 'RoleAdd', { name: 'bench' });
    await unary(c, 'RoleGrantPermission', { name: 'bench', perm: { permType: 'READWRITE', key: Buffer.from([0]), rangeEnd: Buffer.from([0]) } });
    await unary(c, 'UserAdd', { name: 'bench', password: 'bench-pw' });
    await unary(c, 'UserGrantRole', { user: 'bench', role: 'bench' });
    await unary(c, 'AuthEnable', {});
    const r = await unary(c, 'Authenticate', { name: 'bench', password: 'bench-pw' });
    return String(r.token);
  } finally {
    c.close();
  }
}

export interface MemberStatus {
  memberId: string;
  leader: string;
  raftIndex: string;
}

export interface MemberInfo {
  id: string;
  name: string;
  isLearner: boolean;
  clientUrls: string[];
}

/** Several KV channels to one endpoint, picked round-robin or by the caller's index. */
export class EtcdBenchClient {
  private readonly kv: ServiceClient[] = [];
  private next = 0;
  /** With auth enabled: the token sent with every call. */
  private metadata: grpc.Metadata | undefined;

  constructor(
    readonly endpoint: string,
    readonly channels = 1,
  ) {
    const { KV } = loadServices();
    for (let i = 0; i < Math.max(1, channels); i++) this.kv.push(new KV(endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS));
  }

  private pick(channel?: number): ServiceClient {
    if (channel !== undefined) return this.kv[channel % this.kv.length]!;
    this.next = (this.next + 1) % this.kv.length;
    return this.kv[this.next]!;
  }

  /** Sends `token` (etcd's auth token) with every later call. */
  useToken(token: string): void {
    this.metadata = new grpc.Metadata();
    this.metadata.set('token', token);
  }

  /** Resolves with the revision the put created. */
  put(key: Buffer, value: Buffer, channel?: number): Promise<string> {
    return unary(this.pick(channel), 'Put', { key, value }, CALL_DEADLINE_MS, this.metadata).then((r) => String(r.header?.revision ?? '0'));
  }

  /** A linearizable (default) or serializable single-key read; resolves with the number of keys found. */
  get(key: Buffer, channel?: number, serializable = false): Promise<number> {
    return unary(this.pick(channel), 'Range', { key, serializable }, CALL_DEADLINE_MS, this.metadata).then((r) => (r.kvs as unknown[]).length);
  }

  /** Opens every channel's connection now, so the first measured request does not pay for it. */
  async connect(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await Promise.all(this.kv.map((c) => new Promise<void>((resolve, reject) => c.waitForReady(deadline, (e) => (e ? reject(e) : resolve())))));
  }

  close(): void {
    for (const c of this.kv) c.close();
  }
}

/** One-off admin calls to one endpoint. */
export async function memberStatus(endpoint: string, deadlineMs = 2_000): Promise<MemberStatus> {
  const { Maintenance } = loadServices();
  const c = new Maintenance(endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  try {
    const r = await unary(c, 'Status', {}, deadlineMs);
    return { memberId: String(r.header?.memberId ?? '0'), leader: String(r.leader ?? '0'), raftIndex: String(r.raftIndex ?? '0') };
  } finally {
    c.close();
  }
}

export async function memberList(endpoint: string, deadlineMs = 2_000): Promise<MemberInfo[]> {
  const { Cluster } = loadServices();
  const c = new Cluster(endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  try {
    const r = await unary(c, 'MemberList', {}, deadlineMs);
    return (r.members as Obj[]).map((m) => ({ id: String(m.ID), name: String(m.name), isLearner: m.isLearner === true, clientUrls: m.clientURLs as string[] }));
  } finally {
    c.close();
  }
}

/** A watch event as the benchmark sees it: which watch, which revision, when it arrived. */
export type WatchEventSink = (watchId: string, modRevision: string, arrivedMs: number) => void;

/** What the benchmark reads of a WatchResponse. */
interface WatchReply {
  watchId: string;
  created: boolean;
  canceled: boolean;
  cancelReason: string;
  /** mod_revision of each PUT event. */
  puts: string[];
}

const WatchRequestProto = etcdType('etcdserverpb.WatchRequest');
const WatchResponseProto = etcdType('etcdserverpb.WatchResponse');
const PUT_EVENT = 0;

/**
 * Decodes with protobufjs' generated decoder and reads only the fields the benchmark needs:
 * proto-loader's full object mapping (longs as strings, defaults) costs the client more per
 * event than the servers spend sending it, and would be measured as delivery latency.
 */
function decodeWatchReply(buf: Buffer): WatchReply {
  const r = WatchResponseProto.decode(buf) as unknown as { watchId: unknown; created: boolean; canceled: boolean; cancelReason: string; events: { type: number; kv?: { modRevision: unknown } }[] };
  const puts: string[] = [];
  for (const ev of r.events) if (ev.type === PUT_EVENT) puts.push(String(ev.kv?.modRevision ?? '0'));
  return { watchId: String(r.watchId), created: r.created, canceled: r.canceled, cancelReason: r.cancelReason, puts };
}

function encodeWatchRequest(req: Obj): Buffer {
  return Buffer.from(WatchRequestProto.encode(WatchRequestProto.fromObject(req)).finish());
}

/**
 * One Watch stream (on its own channel) carrying many watchers of the same key. Creates
 * them one by one (as etcd requires: a create is answered before the next is sent) and
 * reports every PUT event with its arrival time.
 */
export class WatchStream {
  private readonly client: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<Obj, WatchReply>;
  private createdWaiter: ((watchId: string) => void) | undefined;
  private failure: Error | undefined;

  constructor(
    endpoint: string,
    private readonly sink: WatchEventSink,
    private readonly now: () => number,
  ) {
    this.client = new grpc.Client(endpoint, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    this.call = this.client.makeBidiStreamRequest('/etcdserverpb.Watch/Watch', encodeWatchRequest, decodeWatchReply);
    this.call.on('data', (r: WatchReply) => this.onData(r));
    this.call.on('error', (e: Error) => {
      this.failure = e;
    });
  }

  private onData(r: WatchReply): void {
    const arrived = this.now();
    if (r.created) {
      const w = this.createdWaiter;
      this.createdWaiter = undefined;
      w?.(r.watchId);
      return;
    }
    if (r.canceled) {
      this.failure = new Error(`watch ${r.watchId} canceled: ${r.cancelReason}`);
      return;
    }
    for (const rev of r.puts) this.sink(r.watchId, rev, arrived);
  }

  /** Adds `count` watchers of `key` starting at the next revision; resolves once all are created. */
  async addWatchers(key: Buffer, count: number, timeoutMs = 10_000): Promise<void> {
    for (let i = 0; i < count; i++) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`watch create timed out after ${timeoutMs} ms`)), timeoutMs);
        this.createdWaiter = () => {
          clearTimeout(timer);
          resolve();
        };
        this.call.write({ createRequest: { key, startRevision: 0 } });
      });
    }
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }
}
