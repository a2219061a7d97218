/**
 * A minimal etcd v3 KV client for fault tests: one gRPC channel per endpoint, a deadline
 * per call and no retries, so every outcome the test records is what the server said.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ETCD_PROTO_DIR, ETCD_RPC_PROTO } from '../../core/net/proto-files.js';

type Unary = (req: object, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: any) => void) => void;
type KvClient = grpc.Client & { Range: Unary; Put: Unary; Txn: Unary; DeleteRange: Unary };
type LeaseClient = grpc.Client & { LeaseKeepAlive: (opts: grpc.CallOptions) => grpc.ClientDuplexStream<object, { ID: string; TTL: string }> };

let etcdserverpb: any;

function service<T>(name: 'KV' | 'Lease'): new (addr: string, creds: grpc.ChannelCredentials) => T {
  if (!etcdserverpb) {
    const def = protoLoader.loadSync(ETCD_RPC_PROTO, { includeDirs: [ETCD_PROTO_DIR], longs: String, enums: String, defaults: true });
    etcdserverpb = (grpc.loadPackageDefinition(def) as any).etcdserverpb;
  }
  return etcdserverpb[name];
}

/**
 * True when a failed write provably changed nothing, so a history may record it as failed
 * rather than indeterminate: the member answered etcd's "no leader" (Raft dropped the
 * proposal before it reached any log), or the client never had a connection to send it on.
 * Every other failure (timeouts, "leader changed", a connection lost mid-call) may or may not
 * have been applied.
 */
export function writeNotApplied(err: unknown): boolean {
  const e = err as Partial<grpc.ServiceError>;
  if (e.code !== grpc.status.UNAVAILABLE || typeof e.details !== 'string') return false;
  return e.details === 'etcdserver: no leader' || e.details.startsWith('No connection established');
}

export class SimpleKv {
  private readonly client: KvClient;
  constructor(
    readonly endpoint: string,
    private readonly deadlineMs = 2_000,
  ) {
    this.client = new (service<KvClient>('KV'))(endpoint, grpc.credentials.createInsecure());
  }

  private call(method: Unary, req: object): Promise<any> {
    return new Promise((resolve, reject) => {
      method.call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + this.deadlineMs }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  /** The key's value; linearizable unless `serializable` (the member's own state, maybe stale). */
  async get(key: string, serializable = false): Promise<string | null> {
    const r = await this.call(this.client.Range, { key: Buffer.from(key), serializable });
    return r.kvs.length > 0 ? Buffer.from(r.kvs[0].value).toString() : null;
  }

  /**
   * The key's value, read by a read-only txn: etcd serves one through ReadIndex as a linearizable
   * range, or, when its ranges are all serializable, from the member's own state.
   */
  async getInTxn(key: string, serializable = false): Promise<string | null> {
    const r = await this.call(this.client.Txn, { compare: [], success: [{ requestRange: { key: Buffer.from(key), serializable } }], failure: [] });
    const kvs = r.responses[0].responseRange.kvs;
    return kvs.length > 0 ? Buffer.from(kvs[0].value).toString() : null;
  }

  /** The revision the put was given (its response header's). */
  async put(key: string, value: string): Promise<number> {
    return Number((await this.call(this.client.Put, { key: Buffer.from(key), value: Buffer.from(value) })).header.revision);
  }

  /** Set key to value iff its current value is `expected` (null: the key must not exist). */
  async cas(key: string, expected: string | null, value: string): Promise<boolean> {
    return (await this.casRevision(key, expected, value)) !== undefined;
  }

  /** cas, answering the revision of the write (undefined: the comparison failed, nothing written). */
  async casRevision(key: string, expected: string | null, value: string): Promise<number | undefined> {
    const compare =
      expected === null
        ? { key: Buffer.from(key), target: 'VERSION', result: 'EQUAL', version: 0 }
        : { key: Buffer.from(key), target: 'VALUE', result: 'EQUAL', value: Buffer.from(expected) };
    const r = await this.call(this.client.Txn, { compare: [compare], success: [{ requestPut: { key: Buffer.from(key), value: Buffer.from(value) } }], failure: [] });
    return r.succeeded === true ? Number(r.header.revision) : undefined;
  }

  /** Puts `value` under every key in one txn (one revision, one event per key): the revision. */
  async putAll(keys: string[], value: string): Promise<number> {
    const success = keys.map((k) => ({ requestPut: { key: Buffer.from(k), value: Buffer.from(value) } }));
    return Number((await this.call(this.client.Txn, { compare: [], success, failure: [] })).header.revision);
  }

  /** Deletes every key under `prefix` in one revision: the revision. */
  async deletePrefix(prefix: string): Promise<number> {
    const r = await this.call(this.client.DeleteRange, { key: Buffer.from(prefix), rangeEnd: Buffer.from(prefixEnd(prefix)) });
    return Number(r.header.revision);
  }

  /** The member's current revision (a linearizable read). */
  async revision(): Promise<number> {
    return Number((await this.call(this.client.Range, { key: Buffer.from([0]), limit: 1, countOnly: true })).header.revision);
  }

  /** `count` puts of `value` one after another over `keys` keys under `prefix`, stopping at the first failure. */
  async putsUntilFailure(prefix: string, keys: number, count: number, value: string): Promise<{ answered: number; failure: string }> {
    let answered = 0;
    let failure = '';
    for (let i = 0; i < count && failure === ''; i++) {
      await this.put(`${prefix}${i % keys}`, value).then(
        () => answered++,
        (e: Error) => (failure = e.message),
      );
    }
    return { answered, failure };
  }

  close(): void {
    this.client.close();
  }
}

/** The range end that makes a range of every key starting with `prefix`. */
export function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/** How long a keep-alive the client gave up on is still listened to. */
const LATE_ANSWER_MS = 10_000;

/** One member's Lease service for fault tests: single keep-alives with a deadline, no retries. */
export class SimpleLease {
  private readonly client: LeaseClient;
  constructor(
    readonly endpoint: string,
    private readonly deadlineMs = 1_000,
  ) {
    this.client = new (service<LeaseClient>('Lease'))(endpoint, grpc.credentials.createInsecure());
  }

  /**
   * One keep-alive of lease `id` (hex): resolves with the TTL granted (0: the lease is gone), or
   * rejects after the deadline, as a client gives up on a member and tries another. An answer
   * that still comes later (within LATE_ANSWER_MS) goes to `late`: a real client's stream would
   * take it, and count the TTL from then.
   */
  keepAliveOnce(id: string, late?: (ttl: number) => void): Promise<number> {
    return new Promise((resolve, reject) => {
      const call = this.client.LeaseKeepAlive({ deadline: Date.now() + LATE_ANSWER_MS });
      let settled = false;
      const giveUp = setTimeout(() => {
        settled = true;
        reject(new Error(`no keep-alive answer within ${this.deadlineMs} ms`));
      }, this.deadlineMs);
      call.on('data', (r: { TTL: string }) => {
        call.cancel();
        if (settled) return late?.(Number(r.TTL));
        clearTimeout(giveUp);
        settled = true;
        resolve(Number(r.TTL));
      });
      const fail = (e: Error): void => {
        if (settled) return;
        clearTimeout(giveUp);
        settled = true;
        reject(e);
      };
      call.on('error', fail);
      call.on('end', () => fail(new Error('keep-alive stream ended without an answer')));
      call.write({ ID: BigInt(`0x${id}`).toString() });
    });
  }

  close(): void {
    this.client.close();
  }
}
