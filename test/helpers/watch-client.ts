/**
 * etcd watchers for fault tests, resuming as clientv3 does: when a stream breaks (member killed,
 * "no leader", canceled), the watch is opened again at the revision after the last one it got, on
 * the next member. Every response is recorded for the checks in watch-check.ts.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';
import type { WatchEv, WatchRecord, WatchResp, WatchSpec } from './watch-check.js';

type Obj = Record<string, any>;
type WatchClient = grpc.Client & { Watch: (md: grpc.Metadata) => grpc.ClientDuplexStream<Obj, Obj> };

let etcdserverpb: any;
function watchService(): new (addr: string, creds: grpc.ChannelCredentials, opts?: grpc.ChannelOptions) => WatchClient {
  if (!etcdserverpb) {
    const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true });
    etcdserverpb = (grpc.loadPackageDefinition(def) as any).etcdserverpb;
  }
  return etcdserverpb.Watch;
}

/** A stream that is not created within this is given up (its member may be stopped). */
const CREATE_TIMEOUT_MS = 2_000;
/** Pause before reopening, as clientv3's backoff. */
const RETRY_MS = 100;
/** How often a watcher with progressNotify asks for progress (the server's own notify is every 10 min). */
const PROGRESS_REQUEST_MS = 250;

const str = (b: Buffer | Uint8Array | undefined): string => Buffer.from(b ?? []).toString();

function toEvent(e: Obj): WatchEv {
  const kv = e.kv as Obj;
  const prev = e.prevKv as Obj | null | undefined;
  return {
    type: e.type === 'DELETE' ? 'DELETE' : 'PUT',
    key: str(kv.key),
    value: str(kv.value),
    modRev: Number(kv.modRevision),
    prev: prev ? { value: str(prev.value), modRev: Number(prev.modRevision) } : null,
  };
}

function createRequest(spec: WatchSpec, startRevision: number): Obj {
  return {
    createRequest: {
      key: Buffer.from(spec.key),
      ...(spec.rangeEnd === undefined ? {} : { rangeEnd: Buffer.from(spec.rangeEnd) }),
      startRevision: String(startRevision),
      prevKv: spec.prevKv === true,
      progressNotify: spec.progressNotify === true,
      fragment: spec.fragment === true,
    },
  };
}

export class ResumingWatcher {
  readonly record: WatchRecord;
  /** Why each stream ended, and where. */
  readonly breaks: Array<{ member: string; reason: string; at: number }> = [];
  /** The revision a reopened stream starts at (0: "now", until the first created response). */
  private nextRev: number;
  private running = true;
  private session = 0;
  private current: grpc.ClientDuplexStream<Obj, Obj> | undefined;
  private readonly clients: WatchClient[];
  private readonly loop: Promise<void>;
  private firstCreated!: () => void;
  /** Settles once a stream has been created. */
  readonly created = new Promise<void>((r) => (this.firstCreated = r));

  /** Watches through endpoints[preferred] first, then the next ones in turn. */
  constructor(
    private readonly endpoints: string[],
    private index: number,
    readonly spec: WatchSpec,
  ) {
    this.nextRev = spec.startRevision ?? 0;
    this.record = { ...spec, responses: [], firstRev: spec.startRevision };
    // Connections of its own, as each clientv3 client has: not a channel shared with other
    // watchers and still backing off from a member's restart.
    this.clients = endpoints.map((e) => new (watchService())(e, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
    this.loop = this.run();
  }

  /** Streams opened so far (the current one's number). */
  get sessions(): number {
    return this.session;
  }

  /** The highest event revision received. */
  get lastEventRev(): number {
    let rev = 0;
    for (const r of this.record.responses) for (const e of r.events) rev = Math.max(rev, e.modRev);
    return rev;
  }

  private async run(): Promise<void> {
    while (this.running) {
      const reason = await this.stream(this.index);
      this.breaks.push({ member: this.endpoints[this.index]!, reason, at: Date.now() });
      this.index = (this.index + 1) % this.endpoints.length;
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }

  /** One stream on endpoints[i], until it breaks: why it ended. */
  private stream(i: number): Promise<string> {
    const md = new grpc.Metadata();
    if (this.spec.requireLeader === true) md.set('hasleader', 'true');
    const s = this.clients[i]!.Watch(md);
    this.current = s;
    const session = ++this.session;
    const member = this.endpoints[i]!;
    return new Promise((resolve) => {
      let createdYet = false;
      const timers: NodeJS.Timeout[] = [];
      const done = (reason: string): void => {
        for (const t of timers) clearTimeout(t), clearInterval(t);
        s.removeAllListeners('data');
        s.on('error', () => undefined);
        s.cancel();
        resolve(reason);
      };
      timers.push(setTimeout(() => createdYet || done('not created in time'), CREATE_TIMEOUT_MS));
      if (this.spec.progressNotify === true) timers.push(setInterval(() => createdYet && s.write({ progressRequest: {} }), PROGRESS_REQUEST_MS));
      s.on('data', (r: Obj) => {
        const resp = this.toResp(r, member, session);
        if (resp.kind === 'canceled') return done(`canceled: ${String(r.cancelReason)}`);
        if (resp.kind === 'created') {
          createdYet = true;
          this.firstCreated();
        }
        this.take(resp);
      });
      s.on('error', (e: grpc.ServiceError) => done(e.details ?? e.message));
      s.on('end', () => done('ended'));
      s.write(createRequest(this.spec, this.nextRev));
    });
  }

  private toResp(r: Obj, member: string, session: number): WatchResp {
    const events = (r.events as Obj[]).map(toEvent);
    const kind = r.canceled ? 'canceled' : r.created ? 'created' : events.length > 0 ? 'events' : 'progress';
    return { kind, headerRev: Number(r.header?.revision ?? 0), events, fragment: r.fragment === true, member, session };
  }

  /** Records a response and moves the resume point past what it covers (clientv3's nextRev). */
  private take(resp: WatchResp): void {
    this.record.responses.push(resp);
    if (resp.kind === 'created' && this.nextRev === 0) {
      this.nextRev = resp.headerRev + 1;
      this.record.firstRev ??= this.nextRev;
    } else if (resp.kind === 'events' && !resp.fragment) {
      this.nextRev = resp.events[resp.events.length - 1]!.modRev + 1;
    } else if (resp.kind === 'progress') {
      this.nextRev = Math.max(this.nextRev, resp.headerRev + 1);
    }
  }

  async close(): Promise<void> {
    this.running = false;
    this.current?.cancel();
    await this.loop;
    for (const c of this.clients) c.close();
  }
}

/**
 * The whole event history from revision 1 to `endRev` (with prev_kv), read once through one
 * member: the reference the watchers are checked against.
 */
export function readHistory(endpoint: string, endRev: number, timeoutMs = 15_000): Promise<WatchEv[]> {
  const client = new (watchService())(endpoint, grpc.credentials.createInsecure());
  const s = client.Watch(new grpc.Metadata());
  const events: WatchEv[] = [];
  return new Promise<WatchEv[]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`history to ${endRev}: only to ${events.at(-1)?.modRev} within ${timeoutMs} ms`)), timeoutMs);
    s.on('data', (r: Obj) => {
      if (r.canceled) reject(new Error(`history watch canceled: ${String(r.cancelReason)}`));
      for (const e of r.events as Obj[]) events.push(toEvent(e));
      if ((events.at(-1)?.modRev ?? 0) >= endRev) {
        clearTimeout(timer);
        resolve(events);
      }
    });
    s.on('error', (e) => reject(e));
    s.write(createRequest({ name: 'reference', key: '\0', rangeEnd: '\0', prevKv: true }, 1));
  }).finally(() => {
    s.on('error', () => undefined);
    s.cancel();
    client.close();
  });
}
