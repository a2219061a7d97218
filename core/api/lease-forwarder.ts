/**
 * Lease keep-alives and time-to-live questions on a follower: lease time lives on the leader
 * only, so a follower forwards each keep-alive over one LeaseKeepAlive stream, and each
 * LeaseTimeToLive as a call, to the leader's client port (etcd forwards both). Learner
 * promotions go the same way: only the leader knows whether the learner has caught up. Not responsible
 * for choosing the leader: it is told. With auth enabled the calls carry the client's own token,
 * so the leader checks them as the client's.
 */
import * as grpc from '@grpc/grpc-js';
import { etcdPackageDefinition } from '../net/etcd/grpc-definitions.js';
import { dialTarget, memberDialCredentials, type ClientTls, type ClientTlsSource } from '../net/etcd/client-tls.js';
import { pinnedCert, pinnedDialCredentials } from '../net/etcd/member-cert.js';

/**
 * The leader to forward to: its client address, and the certificate it published in its
 * member record (member-cert.ts), if any. A bare address: nothing published.
 */
export type ForwardTarget = string | { clientAddr: string; clientCert?: string };

/** How long a forwarded keep-alive or time-to-live may wait for the leader's answer. */
export const FORWARD_TIMEOUT_MS = 5_000;
/** Keep-alives waiting for an answer at once; more are refused (bounded memory). */
export const MAX_PENDING_FORWARDED_KEEPALIVES = 4_096;

interface KeepAliveResponse {
  ID: string;
  TTL: string;
}

type LeaseClient = grpc.Client & {
  LeaseKeepAlive(md: grpc.Metadata): grpc.ClientDuplexStream<{ ID: string }, KeepAliveResponse>;
  LeaseTimeToLive(req: { ID: string }, md: grpc.Metadata, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, resp: KeepAliveResponse) => void): void;
};

type ClusterClient = grpc.Client & {
  MemberPromote(req: { ID: string }, md: grpc.Metadata, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null) => void): void;
};

type ClientCtor<C> = new (addr: string, creds: grpc.ChannelCredentials, options?: grpc.ClientOptions) => C;

interface ClientCtors {
  Lease: ClientCtor<LeaseClient>;
  Cluster: ClientCtor<ClusterClient>;
}

let ctors: ClientCtors | undefined;

function clientCtors(): ClientCtors {
  if (ctors) return ctors;
  const pkg = grpc.loadPackageDefinition(etcdPackageDefinition()) as unknown as { etcdserverpb: ClientCtors };
  ctors = { Lease: pkg.etcdserverpb.Lease, Cluster: pkg.etcdserverpb.Cluster };
  return ctors;
}

/** One LeaseKeepAlive stream to the leader, for one caller's token (or none). */
interface ForwardStream {
  stream: grpc.ClientDuplexStream<{ ID: string }, KeepAliveResponse>;
  /** Keep-alives waiting for their answer, by lease id. */
  pending: Map<string, Waiter[]>;
  lastUsed: number;
}

interface Waiter {
  resolve(ttl: number): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class LeaseForwarder {
  private client: LeaseClient | undefined;
  /**
   * Streams by caller (user and auth revision; '' without auth): with auth enabled the leader
   * checks each forwarded keep-alive as the client's, with a token made for it here.
   */
  private readonly streams = new Map<string, ForwardStream>();
  private target = '';
  private pendingCount = 0;

  /** The member's TLS the client to the leader was made with (a renewed certificate makes a new client). */
  private dialedWith: ClientTls | undefined;
  /** The certificate the leader had published when its client was made (a renewed one makes a new client). */
  private dialedPin: string | undefined;

  /**
   * `clientTls`: this member's own client TLS, which it presents when it dials a leader that
   * serves TLS. A leader that published its certificate is trusted by it alone (member-cert.ts);
   * one that did not (it has --cert-file, or runs an older version) is checked as client-tls.ts
   * says, or, without `clientTls`, against the system's roots. `onPinRefused`: a leader's
   * published certificate cannot be used, so it is dialed as one that published none.
   */
  constructor(
    private readonly clientTls?: ClientTlsSource,
    private readonly onPinRefused: (leaderClientAddr: string, reason: string) => void = () => undefined,
  ) {}

  /** Streams open to the leader (one per caller's token). */
  get streamCount(): number {
    return this.streams.size;
  }

  /**
   * Renew lease `id` through `leader`, as `caller` (its stream's key and
   * a token for it); resolves with the TTL (0: not found).
   */
  keepAlive(leader: ForwardTarget, id: number, caller?: { key: string; token: string }): Promise<number> {
    if (this.pendingCount >= MAX_PENDING_FORWARDED_KEEPALIVES) return Promise.reject(new Error('too many forwarded keep-alives'));
    const fs = this.streamTo(leader, caller?.key ?? '', caller?.token);
    const key = String(id);
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(fs, key, (w) => w.reject(new Error('forwarded keep-alive timed out'))), FORWARD_TIMEOUT_MS);
      const list = fs.pending.get(key) ?? [];
      list.push({ resolve, reject, timer });
      fs.pending.set(key, list);
      this.pendingCount++;
      fs.stream.write({ ID: key });
    });
  }

  /** The remaining TTL of lease `id` as `leader` counts it (-1: not found). */
  timeToLive(leader: ForwardTarget, id: number, token?: string): Promise<number> {
    const client = this.clientTo(leader);
    return new Promise<number>((resolve, reject) => {
      client.LeaseTimeToLive({ ID: String(id) }, tokenMetadata(token), { deadline: Date.now() + FORWARD_TIMEOUT_MS }, (err, r) => (err ? reject(err) : resolve(Number(r.TTL))));
    });
  }

  /**
   * Promotes learner `id` through `leader`: only the leader knows how far
   * a learner's log has come, so only it can refuse one that is not caught up (etcd forwards
   * promotions to its leader as well). Rejects with the leader's gRPC error.
   */
  memberPromote(leader: ForwardTarget, id: number, token?: string): Promise<void> {
    // Never closed: it rides the Lease client's channel (closing it would close that channel)
    // and holds nothing of its own.
    const cluster = new (clientCtors().Cluster)('unused', grpc.credentials.createInsecure(), { channelOverride: this.clientTo(leader).getChannel() });
    return new Promise<void>((resolve, reject) => {
      cluster.MemberPromote({ ID: String(id) }, tokenMetadata(token), { deadline: Date.now() + FORWARD_TIMEOUT_MS }, (err) => (err ? reject(err) : resolve()));
    });
  }

  private settle(fs: ForwardStream, key: string, fn: (w: Waiter) => void): void {
    const list = fs.pending.get(key);
    if (!list) return;
    fs.pending.delete(key);
    for (const w of list) {
      clearTimeout(w.timer);
      this.pendingCount--;
      fn(w);
    }
  }

  /** The client for `leader`; a new leader (or a new certificate of its) closes the old client and streams. */
  private clientTo(leader: ForwardTarget): LeaseClient {
    const addr = typeof leader === 'string' ? leader : leader.clientAddr;
    const { hostPort, tls } = dialTarget(addr);
    const own = tls ? this.clientTls?.current() : undefined;
    const published = tls && typeof leader !== 'string' ? leader.clientCert : undefined;
    if (this.client && this.target === addr && this.dialedWith === own && this.dialedPin === published) return this.client;
    this.close();
    const Ctor = clientCtors().Lease;
    this.target = addr;
    this.dialedWith = own;
    this.dialedPin = published;
    this.client = new Ctor(hostPort, tls ? this.tlsCredentials(addr, own, published) : grpc.credentials.createInsecure());
    return this.client;
  }

  private tlsCredentials(addr: string, own: ClientTls | undefined, published: string | undefined): grpc.ChannelCredentials {
    if (published !== undefined) {
      const pin = pinnedCert(published);
      if ('pem' in pin) return pinnedDialCredentials(pin, own);
      this.onPinRefused(addr, pin.reason);
    }
    return own === undefined ? grpc.credentials.createSsl() : memberDialCredentials(own);
  }

  /** The stream for the caller `key` (its user and auth revision; '' for none), opened with `token` if new. */
  private streamTo(leader: ForwardTarget, key: string, token: string | undefined): ForwardStream {
    const client = this.clientTo(leader);
    const now = performance.now();
    this.closeIdle(now);
    const existing = this.streams.get(key);
    if (existing) {
      existing.lastUsed = now;
      return existing;
    }
    if (this.streams.size >= MAX_FORWARD_STREAMS) this.closeLeastRecentlyUsed();
    const fs: ForwardStream = { stream: client.LeaseKeepAlive(tokenMetadata(token)), pending: new Map(), lastUsed: now };
    fs.stream.on('data', (r: KeepAliveResponse) => this.settle(fs, r.ID, (w) => w.resolve(Number(r.TTL))));
    const fail = (e: Error): void => {
      // A stream replaced by one to a new leader reports its cancellation later: the
      // keep-alives waiting then were sent on the new stream and are not this one's to fail.
      if (this.streams.get(key) !== fs) return;
      this.streams.delete(key);
      this.rejectPending(fs, e);
    };
    fs.stream.on('error', fail);
    fs.stream.on('end', () => fail(new Error('leader closed the keep-alive stream')));
    this.streams.set(key, fs);
    return fs;
  }

  /** Streams of callers gone quiet (their tokens expire after as long) are closed. */
  private closeIdle(now: number): void {
    for (const [key, fs] of this.streams) {
      if (key === '' || now - fs.lastUsed < IDLE_STREAM_MS || fs.pending.size > 0) continue;
      this.streams.delete(key);
      fs.stream.cancel();
    }
  }

  /** Makes room for another caller's stream: the one used longest ago goes (an idle one first). */
  private closeLeastRecentlyUsed(): void {
    let victim: [string, ForwardStream] | undefined;
    for (const entry of this.streams) {
      const [, fs] = entry;
      const better = victim === undefined || (fs.pending.size === 0 && victim[1].pending.size > 0) || ((fs.pending.size === 0) === (victim[1].pending.size === 0) && fs.lastUsed < victim[1].lastUsed);
      if (better) victim = entry;
    }
    if (victim === undefined) return;
    this.streams.delete(victim[0]);
    victim[1].stream.cancel();
    this.rejectPending(victim[1], new Error('keep-alive stream to the leader closed for another caller'));
  }

  /** Closes the streams; keep-alives still waiting on them fail (the leader changed, or we stop). */
  close(): void {
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const fs of streams) {
      fs.stream.cancel();
      this.rejectPending(fs, new Error('keep-alive stream to the leader closed'));
    }
    this.client?.close();
    this.client = undefined;
  }

  private rejectPending(fs: ForwardStream, e: Error): void {
    for (const key of [...fs.pending.keys()]) this.settle(fs, key, (w) => w.reject(e));
  }
}

/** Callers' streams open at once to the leader (it serves 4,096 streams per connection). */
export const MAX_FORWARD_STREAMS = 256;
/** A caller's stream unused this long is closed (an auth token lives 5 minutes from its last use). */
const IDLE_STREAM_MS = 5 * 60_000;

function tokenMetadata(token: string | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token) md.set('token', token);
  return md;
}
