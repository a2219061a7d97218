/**
 * Lease keep-alives and time-to-live questions on a follower: lease time lives on the leader
 * only, so a follower forwards each keep-alive over one LeaseKeepAlive stream, and each
 * LeaseTimeToLive as a call, to the leader's client port (etcd forwards both). Not responsible
 * for choosing the leader: it is told.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../net/proto-files.js';

/** How long a forwarded keep-alive or time-to-live may wait for the leader's answer. */
export const FORWARD_TIMEOUT_MS = 5_000;
/** Keep-alives waiting for an answer at once; more are refused (bounded memory). */
export const MAX_PENDING_FORWARDED_KEEPALIVES = 4_096;

interface KeepAliveResponse {
  ID: string;
  TTL: string;
}

type LeaseClient = grpc.Client & {
  LeaseKeepAlive(): grpc.ClientDuplexStream<{ ID: string }, KeepAliveResponse>;
  LeaseTimeToLive(req: { ID: string }, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, resp: KeepAliveResponse) => void): void;
};

let leaseCtor: (new (addr: string, creds: grpc.ChannelCredentials) => LeaseClient) | undefined;

function leaseClientCtor(): new (addr: string, creds: grpc.ChannelCredentials) => LeaseClient {
  if (leaseCtor) return leaseCtor;
  const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { etcdserverpb: { Lease: new (addr: string, creds: grpc.ChannelCredentials) => LeaseClient } };
  leaseCtor = pkg.etcdserverpb.Lease;
  return leaseCtor;
}

export class LeaseForwarder {
  private client: LeaseClient | undefined;
  private stream: grpc.ClientDuplexStream<{ ID: string }, KeepAliveResponse> | undefined;
  private target = '';
  private readonly pending = new Map<string, Array<{ resolve(ttl: number): void; reject(e: Error): void; timer: NodeJS.Timeout }>>();
  private pendingCount = 0;

  /** Renew lease `id` through the leader at `leaderClientAddr`; resolves with the TTL (0: not found). */
  keepAlive(leaderClientAddr: string, id: number): Promise<number> {
    if (this.pendingCount >= MAX_PENDING_FORWARDED_KEEPALIVES) return Promise.reject(new Error('too many forwarded keep-alives'));
    const stream = this.streamTo(leaderClientAddr);
    const key = String(id);
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(key, (w) => w.reject(new Error('forwarded keep-alive timed out'))), FORWARD_TIMEOUT_MS);
      const list = this.pending.get(key) ?? [];
      list.push({ resolve, reject, timer });
      this.pending.set(key, list);
      this.pendingCount++;
      stream.write({ ID: key });
    });
  }

  /** The remaining TTL of lease `id` as the leader at `leaderClientAddr` counts it (-1: not found). */
  timeToLive(leaderClientAddr: string, id: number): Promise<number> {
    const client = this.clientTo(leaderClientAddr);
    return new Promise<number>((resolve, reject) => {
      client.LeaseTimeToLive({ ID: String(id) }, { deadline: Date.now() + FORWARD_TIMEOUT_MS }, (err, r) => (err ? reject(err) : resolve(Number(r.TTL))));
    });
  }

  private settle(key: string, fn: (w: { resolve(ttl: number): void; reject(e: Error): void }) => void): void {
    const list = this.pending.get(key);
    if (!list) return;
    this.pending.delete(key);
    for (const w of list) {
      clearTimeout(w.timer);
      this.pendingCount--;
      fn(w);
    }
  }

  /** The client for the leader at `addr`; a new leader closes the old one's client and stream. */
  private clientTo(addr: string): LeaseClient {
    if (this.client && this.target === addr) return this.client;
    this.close();
    const Ctor = leaseClientCtor();
    this.target = addr;
    this.client = new Ctor(addr, grpc.credentials.createInsecure());
    return this.client;
  }

  private streamTo(addr: string): grpc.ClientDuplexStream<{ ID: string }, KeepAliveResponse> {
    const client = this.clientTo(addr);
    if (this.stream) return this.stream;
    const stream = client.LeaseKeepAlive();
    stream.on('data', (r: KeepAliveResponse) => this.settle(r.ID, (w) => w.resolve(Number(r.TTL))));
    const fail = (e: Error): void => {
      // A stream replaced by one to a new leader reports its cancellation later: the
      // keep-alives waiting then were sent on the new stream and are not this one's to fail.
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.rejectPending(e);
    };
    stream.on('error', fail);
    stream.on('end', () => fail(new Error('leader closed the keep-alive stream')));
    this.stream = stream;
    return stream;
  }

  /** Closes the stream; keep-alives still waiting on it fail (the leader changed, or we stop). */
  close(): void {
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    this.client?.close();
    this.client = undefined;
    this.rejectPending(new Error('keep-alive stream to the leader closed'));
  }

  private rejectPending(e: Error): void {
    for (const key of [...this.pending.keys()]) this.settle(key, (w) => w.reject(e));
  }
}
