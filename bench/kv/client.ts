/**
 * The benchmark's client at the etcd v3 gRPC API level, used unchanged against picloud and
 * etcd: KV Put/Range, Watch streams, Maintenance Status and Cluster MemberList, over several
 * channels (each its own TCP connection) to one endpoint, a deadline per call and no retries,
 * so every number is what the server did. Not a general-purpose client.
 */
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import protobuf from 'protobufjs';
import * as protoLoader from '@grpc/proto-loader';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO, etcdType } from '../../core/net/proto-files.js';
import { GRPC_MESSAGE_PREFIX_BYTES } from '../../core/net/etcd/eager-send.js';

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

/** The CA of the systems' client ports when they serve TLS (PICLOUD_BENCH_TLS); plain when undefined. */
let tlsCa: Buffer | undefined;

/** Every client made from now on talks TLS to servers whose certificates `ca` signed. */
export function useTls(ca: Buffer): void {
  tlsCa = ca;
}

function credentials(): grpc.ChannelCredentials {
  return tlsCa === undefined ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(tlsCa);
}

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
  const c = new Auth(endpoint, credentials(), CHANNEL_OPTIONS);
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
    for (let i = 0; i < Math.max(1, channels); i++) this.kv.push(new KV(endpoint, credentials(), CHANNEL_OPTIONS));
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
  const c = new Maintenance(endpoint, credentials(), CHANNEL_OPTIONS);
  try {
    const r = await unary(c, 'Status', {}, deadlineMs);
    return { memberId: String(r.header?.memberId ?? '0'), leader: String(r.leader ?? '0'), raftIndex: String(r.raftIndex ?? '0') };
  } finally {
    c.close();
  }
}

export async function memberList(endpoint: string, deadlineMs = 2_000): Promise<MemberInfo[]> {
  const { Cluster } = loadServices();
  const c = new Cluster(endpoint, credentials(), CHANNEL_OPTIONS);
  try {
    const r = await unary(c, 'MemberList', {}, deadlineMs);
    return (r.members as Obj[]).map((m) => ({ id: String(m.ID), name: String(m.name), isLearner: m.isLearner === true, clientUrls: m.clientURLs as string[] }));
  } finally {
    c.close();
  }
}

/** A watch event as the benchmark sees it: which watch, which revision, when it arrived. */
export type WatchEventSink = (watchId: number, modRevision: number, arrivedMs: number) => void;

/** What the benchmark reads of a WatchResponse. */
export interface WatchReply {
  watchId: number;
  created: boolean;
  canceled: boolean;
  cancelReason: string;
  /** mod_revision of each PUT event. */
  puts: number[];
}

const WatchRequestProto = etcdType('etcdserverpb.WatchRequest');
const PUT_EVENT = 0;
const WATCH_PATH = '/etcdserverpb.Watch/Watch';
const MAX_WATCH_MESSAGE_BYTES = 64 * 1024 * 1024;
/**
 * HTTP/2 receive window of a watch stream and its connection. The default 64 KiB holds two
 * puts' worth of 100 responses, so a sender would stall on WINDOW_UPDATEs from this busy
 * process; etcd's Go clients grow their windows to megabytes (grpc-go's BDP estimation).
 */
const WATCH_WINDOW_BYTES = 4 * 1024 * 1024;

/** One reader, pointed at each message in turn: the decode allocates nothing per message. */
const replyReader = protobuf.Reader.create(Buffer.alloc(0));

/**
 * Reads only the fields the benchmark needs from the message in buf[start, end), walking it with
 * protobufjs' Reader rather than decoding it whole, into `into` (reused by the watch streams,
 * whose caller reads it before the next message). 1,000 full decodes per put (headers,
 * key/value copies, a Long per 64-bit field) made this client collect garbage every few puts,
 * and its pauses showed up as delivery latency of whichever system was measured; so did, less,
 * an object, two strings and a Buffer view per message. Revisions and watch ids are read as
 * 32-bit varints (exact below 2^32, which a benchmark run never reaches; -1 stays -1).
 */
export function decodeWatchReply(buf: Uint8Array, start = 0, end = buf.length, into?: WatchReply): WatchReply {
  const reply = into ?? { watchId: 0, created: false, canceled: false, cancelReason: '', puts: [] };
  reply.watchId = 0;
  reply.created = false;
  reply.canceled = false;
  reply.cancelReason = '';
  reply.puts.length = 0;
  const r = replyReader;
  // A Buffer view: the reader is protobufjs' BufferReader, whose string() needs Buffer methods.
  r.buf = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  r.pos = start;
  r.len = end;
  try {
    while (r.pos < r.len) {
      const tag = r.uint32();
      switch (tag >>> 3) {
        case 2:
          reply.watchId = r.uint32() | 0;
          break;
        case 3:
          reply.created = r.bool();
          break;
        case 4:
          reply.canceled = r.bool();
          break;
        case 6:
          reply.cancelReason = r.string();
          break;
        case 11: {
          const rev = putEventRevision(r, r.uint32());
          if (rev >= 0) reply.puts.push(rev);
          break;
        }
        default:
          r.skipType(tag & 7);
      }
    }
  } finally {
    r.buf = EMPTY; // not to keep the caller's buffer alive
  }
  return reply;
}

const EMPTY = new Uint8Array(0);
const EMPTY_BUFFER = Buffer.alloc(0);

/** An mvccpb.Event of `length` bytes at the reader's position: its kv's mod_revision if it is a PUT, else -1. */
function putEventRevision(r: protobuf.Reader, length: number): number {
  const end = r.pos + length;
  let type = PUT_EVENT;
  let rev = 0;
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag >>> 3 === 1) type = r.uint32();
    else if (tag >>> 3 === 2) {
      const kvEnd = r.uint32() + r.pos;
      while (r.pos < kvEnd) {
        const t = r.uint32();
        if (t >>> 3 === 3) rev = r.uint32();
        else r.skipType(t & 7);
      }
    } else r.skipType(tag & 7);
  }
  return type === PUT_EVENT ? rev : -1;
}

function grpcFrame(req: Obj): Buffer {
  const msg = WatchRequestProto.encode(WatchRequestProto.fromObject(req)).finish();
  const out = Buffer.allocUnsafe(GRPC_MESSAGE_PREFIX_BYTES + msg.length);
  out[0] = 0;
  out.writeUInt32BE(msg.length, 1);
  out.set(msg, GRPC_MESSAGE_PREFIX_BYTES);
  return out;
}

/**
 * One Watch stream (on its own HTTP/2 connection) carrying many watchers of the same key.
 * Creates them one by one (as etcd requires: a create is answered before the next is sent)
 * and reports every PUT event with its arrival time.
 *
 * It speaks gRPC over node:http2 itself instead of through grpc-js's client: with 1,000
 * watchers every put brings 1,000 WatchResponses, and grpc-js's client spends ~10 µs on each
 * (its stream decoder, filters, Readable streams and a microtask per message), so the last
 * event of a put was stamped "arrived" up to ~10 ms after its bytes reached this process, and
 * that time was taken from the two cores the members under test share. Here a message is
 * stamped when the socket read holding it returns, the same for etcd and picloud.
 */
export class WatchStream {
  private readonly session: http2.ClientHttp2Session;
  private readonly stream: http2.ClientHttp2Stream;
  private pending: Buffer = EMPTY_BUFFER;
  private createdWaiter: ((watchId: number) => void) | undefined;
  /** The reply being read, reused from message to message. */
  private readonly reply: WatchReply = { watchId: 0, created: false, canceled: false, cancelReason: '', puts: [] };
  private failure: Error | undefined;

  constructor(
    endpoint: string,
    private readonly sink: WatchEventSink,
    private readonly now: () => number,
  ) {
    this.session = http2.connect(`${tlsCa === undefined ? 'http' : 'https'}://${endpoint}`, { settings: { initialWindowSize: WATCH_WINDOW_BYTES }, ...(tlsCa === undefined ? {} : { ca: tlsCa }) });
    this.session.on('error', (e: Error) => {
      this.failure = e;
    });
    this.session.on('connect', () => this.session.setLocalWindowSize(WATCH_WINDOW_BYTES));
    this.stream = this.session.request({ ':method': 'POST', ':path': WATCH_PATH, 'content-type': 'application/grpc', te: 'trailers' });
    this.stream.on('data', (chunk: Buffer) => this.onChunk(chunk));
    this.stream.on('trailers', (t: http2.IncomingHttpHeaders) => {
      if (t['grpc-status'] !== '0') this.failure = new Error(`watch stream ended: grpc-status ${String(t['grpc-status'])} ${String(t['grpc-message'] ?? '')}`);
    });
    this.stream.on('error', (e: Error) => {
      this.failure = e;
    });
  }

  private onChunk(chunk: Buffer): void {
    const arrived = this.now();
    const buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    let at = 0;
    while (buf.length - at >= GRPC_MESSAGE_PREFIX_BYTES) {
      const len = buf.readUInt32BE(at + 1);
      if (buf[at] !== 0 || len > MAX_WATCH_MESSAGE_BYTES) {
        this.failure = new Error(`watch stream: unexpected gRPC frame (flag ${buf[at]}, ${len} bytes)`);
        this.stream.close();
        return;
      }
      const end = at + GRPC_MESSAGE_PREFIX_BYTES + len;
      if (buf.length < end) break;
      this.onReply(decodeWatchReply(buf, at + GRPC_MESSAGE_PREFIX_BYTES, end, this.reply), arrived);
      at = end;
    }
    this.pending = at < buf.length ? Buffer.from(buf.subarray(at)) : EMPTY_BUFFER;
  }

  private onReply(r: WatchReply, arrived: number): void {
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
    const puts = r.puts;
    for (let i = 0; i < puts.length; i++) this.sink(r.watchId, puts[i]!, arrived);
  }

  /** Adds `count` watchers of `key` starting at the next revision; resolves once all are created. */
  async addWatchers(key: Buffer, count: number, timeoutMs = 10_000): Promise<void> {
    for (let i = 0; i < count; i++) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(this.failure ?? new Error(`watch create timed out after ${timeoutMs} ms`)), timeoutMs);
        this.createdWaiter = () => {
          clearTimeout(timer);
          resolve();
        };
        this.stream.write(grpcFrame({ createRequest: { key, startRevision: 0 } }));
      });
    }
  }

  close(): void {
    this.stream.close(http2.constants.NGHTTP2_CANCEL);
    this.session.close();
  }
}
