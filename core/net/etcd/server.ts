/**
 * The etcd v3 gRPC API on the client port (KV, Watch, Lease, Cluster, Maintenance, Auth), served
 * with @grpc/grpc-js from proto/etcd (etcd 3.4's names and field numbers), answering through
 * an EtcdBackend. This layer owns what is about the wire and the connection: decoding and
 * validating requests (convert.ts), etcd's request size limit, the watch stream protocol
 * (watch ids, created/canceled responses, per-connection watcher limit, a bounded send buffer
 * that cancels a slow consumer with a clear reason), keep-alive streams, and the snapshot
 * framing etcdctl checks. Everything about data and consensus is the backend's.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { ETCD_SERVICE_NAMES, etcdService, type EtcdServiceDefinition, type EtcdServiceName } from './grpc-definitions.js';
import * as cv from './convert.js';
import { EtcdError, isEtcdError, watchRefusalReason } from './errors.js';
import type { CallContext, EtcdAuthBackend, EtcdBackend, LeaseKeepAliveResponse, ResponseHeader, WatchEvent, WatchHandle, WatchSink } from './service.js';
import { framedSnapshotBytes, snapshotTrailer } from './snapshot-file.js';
import { encodeEventsFrames, eventsResponseBytes, fragmentEvents, type EventsResponse } from './watch-encoding.js';
import { DEFAULT_SORTING_TIMEOUTS, REWRITTEN_CERT_USER_HEADER, REWRITTEN_PEER_HEADER, SortingListener } from './client-port-listener.js';
import type { ConnectionCap } from '../connection-cap.js';
import { GATEWAY_HEADERS_TIMEOUT_MS, JsonGateway } from './json-gateway.js';
import { certificateUser, serverTlsOptions, tlsSource, type ClientTls, type ClientTlsSource } from './client-tls.js';
import type { PeerCertificate, TlsOptions } from 'node:tls';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { EagerFrames, EagerMessage, eagerSendInterceptor } from './eager-send.js';
import { learnerServesUnary } from './learner-rpcs.js';
import { DirectCall, clampGrpcTimeout, directMethod, dropStream, hookGrpcStreams, type DirectMethod, type GrpcStreamHandler } from './direct-unary.js';
import { advertiseAcceptedEncodings, compressionRefusal, refuseCompressed } from './request-encoding.js';
import { boundUnreadChunks } from './stream-chunks.js';
import { MAX_HELD_REQUEST_BYTES, MAX_HELD_REQUEST_BYTES_PER_CONNECTION, MAX_WAITING_REQUEST_STREAMS, MIN_REQUEST_BYTES_PER_SEC, MIN_REQUEST_DEADLINE_MS, RequestBytesBudget } from './request-bytes.js';
import { MAX_REQUEST_BYTES } from '../../kv/limits.js';
import { watchRangeRefusal } from '../../kv/watch.js';

/** etcd's --max-request-bytes default: the store's own bound (one constant, in kv/limits). */
export { MAX_REQUEST_BYTES } from '../../kv/limits.js';
/** gRPC's own receive limit sits above it by etcd's margin, so our check answers first. */
export const GRPC_OVERHEAD_BYTES = 512 * 1024;
/** Room for a JSON gateway body's names and quoting beyond its base64 payload. */
export const JSON_OVERHEAD_BYTES = 512 * 1024;
/** What /version answers when the embedder says nothing (the etcd API we serve). */
const DEFAULT_GATEWAY_VERSION = { etcdserver: '3.4.0', etcdcluster: '3.4.0' };
/** Watchers on one client connection (all its watch streams together). */
export const MAX_WATCHERS_PER_CONNECTION = 10_000;
/** Bytes of watch responses not yet taken by the client before the stream's watchers are cancelled. */
export const MAX_WATCH_STREAM_BUFFER_BYTES = 8 * 1024 * 1024;
/**
 * Bytes of watch responses not yet taken, all streams together. Past half of it, every stream
 * holding more than WATCH_STREAM_SHARE_BYTES pauses its watchers (they catch up from the history
 * once it drains), so many slow streams cannot hold MAX_WATCH_STREAM_BUFFER_BYTES each: one
 * connection with 500 unread watch streams held 1.6 GB of a member before (etcd 3.4: ~0.3 GB).
 */
export const MAX_WATCH_BUFFERS_BYTES = 64 * 1024 * 1024;
/** A stream's share while the watch buffers together are past half their bound. */
export const WATCH_STREAM_SHARE_BYTES = 64 * 1024;
/** Keep-alive requests waiting on one stream; beyond it the stream stops being read until they are answered. */
export const MAX_PENDING_KEEPALIVES = 1_024;
/** HTTP/2 streams per connection. */
export const MAX_CONCURRENT_STREAMS = 4_096;
/** Blob size of Maintenance.Snapshot messages (etcd sends 32 KiB). */
export const SNAPSHOT_CHUNK_BYTES = 32 * 1024;

export interface EtcdServerLimits {
  maxRequestBytes: number;
  maxWatchersPerConnection: number;
  maxWatchStreamBufferBytes: number;
  /** All watch streams' unsent bytes together (MAX_WATCH_BUFFERS_BYTES). */
  maxWatchBuffersBytes: number;
  /** The JSON gateway's deadline for a request's headers (GATEWAY_HEADERS_TIMEOUT_MS). */
  gatewayHeadersTimeoutMs: number;
  /** Announced bytes of gRPC request messages not yet whole, all connections (request-bytes.ts). */
  maxHeldRequestBytes: number;
  /** The same, one connection (raised to one largest message). */
  maxHeldRequestBytesPerConnection: number;
  /** Request streams stopped until their message fits; a further one is reset (RESOURCE_EXHAUSTED). */
  maxWaitingRequestStreams: number;
  /** How fast a reserved request must arrive (MIN_REQUEST_BYTES_PER_SEC). */
  minRequestBytesPerSec: number;
  /** The least time a reserved request has (MIN_REQUEST_DEADLINE_MS). */
  minRequestDeadlineMs: number;
}

export const DEFAULT_ETCD_SERVER_LIMITS: Readonly<EtcdServerLimits> = Object.freeze({
  maxRequestBytes: MAX_REQUEST_BYTES,
  maxWatchersPerConnection: MAX_WATCHERS_PER_CONNECTION,
  maxWatchStreamBufferBytes: MAX_WATCH_STREAM_BUFFER_BYTES,
  maxWatchBuffersBytes: MAX_WATCH_BUFFERS_BYTES,
  gatewayHeadersTimeoutMs: GATEWAY_HEADERS_TIMEOUT_MS,
  maxHeldRequestBytes: MAX_HELD_REQUEST_BYTES,
  maxHeldRequestBytesPerConnection: MAX_HELD_REQUEST_BYTES_PER_CONNECTION,
  maxWaitingRequestStreams: MAX_WAITING_REQUEST_STREAMS,
  minRequestBytesPerSec: MIN_REQUEST_BYTES_PER_SEC,
  minRequestDeadlineMs: MIN_REQUEST_DEADLINE_MS,
});

export interface EtcdServerOptions {
  backend: EtcdBackend;
  port: number;
  host?: string;
  limits?: Partial<EtcdServerLimits>;
  /** A backend failure that was not an EtcdError (sent to the client as INTERNAL). */
  onInternalError?: (err: unknown, method: string) => void;
  /** What the JSON gateway's GET /version answers. */
  version?: { etcdserver: string; etcdcluster: string };
  /** Prometheus text for GET /metrics on the client port (etcd serves it there too); 404 without. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** Serve the port over TLS (client-tls.ts): fixed, or files read again when they change; plain when absent. */
  tls?: ClientTls | ClientTlsSource;
  /** At most this many client connections open at once (the process's open files budget). */
  connections?: ConnectionCap;
  /** Unary calls answered on their HTTP/2 streams (direct-unary.ts); false: all through grpc-js (tests compare the two). */
  directUnary?: boolean;
}

type Obj = Record<string, unknown>;

/** A unary method's handler; `sizeChecked`: etcd's request size limit applies to it. */
interface UnaryMethod {
  fn: (req: Obj, ctx: CallContext) => Promise<Obj>;
  sizeChecked: boolean;
}

/** Where a gateway stream's encoded responses go (json-gateway.ts writes them as JSON lines). */
export interface GatewayStreamOutput {
  /**
   * `sent`: once the bytes have left (the stream's flow control counts until then). False when
   * the client is not taking them fast enough: GatewayStream.drained() says when it is again.
   */
  write(bytes: Buffer, sent: () => void): boolean;
  end(): void;
  fail(status: { code: number; details: string }): void;
}

/** Who a JSON gateway request comes from (what a gRPC call's context holds). */
export interface GatewayCaller {
  /** host:port of the client. */
  peer: string;
  token?: string;
  /** The user its verified client certificate names (client-tls.ts certUser). */
  certUser?: string;
  /**
   * The member's own check (the gateway's /health), not a client's: it passes the learner gate,
   * as etcd's /health reads its server directly rather than through the client interceptors.
   */
  self?: boolean;
  /** False once the HTTP client has left: a write still waiting for a leader is then dropped. */
  wanted?(): boolean;
}

/** The bidirectional streams the JSON gateway serves. */
export type GatewayStreamMethod = 'Watch' | 'LeaseKeepAlive';

export interface GatewayStream {
  /**
   * The body's requests, pulled one at a time (encoded then; undefined: no more) as a gRPC
   * call's requests are read, while its answers are taken. Once per stream.
   */
  requests(next: () => Uint8Array | undefined): void;
  /** The client sent its last request. */
  endRequests(): void;
  /** The output takes writes again after one returned false. */
  drained(): void;
  close(): void;
}
const REQUEST_BYTES = Symbol('requestBytes');
/** Requests of a gateway stream's body read in one turn (~a DATA frame of small gRPC requests). */
const GATEWAY_FEED_BATCH = 512;

let serverServices: Map<string, EtcdServiceDefinition> | undefined;

/**
 * The etcd services as this server serves them: each request's encoded size recorded on the
 * decoded object, and Watch responses that arrive already encoded (watch-encoding.ts) sent as
 * they are. Copies: the shared definitions (grpc-definitions.ts) stay as a client needs them.
 */
function etcdServices(): Map<string, EtcdServiceDefinition> {
  if (serverServices !== undefined) return serverServices;
  serverServices = new Map();
  for (const name of ETCD_SERVICE_NAMES) {
    const def: EtcdServiceDefinition = {};
    for (const [method, shared] of Object.entries(etcdService(name))) {
      const decode = shared.requestDeserialize;
      const encode = shared.responseSerialize;
      def[method] = {
        ...shared,
        requestDeserialize: (buf: Buffer) => {
          const o = decode(buf) as Obj;
          Object.defineProperty(o, REQUEST_BYTES, { value: buf.length });
          return o;
        },
        ...(name === 'Watch' ? { responseSerialize: (v: object) => (Buffer.isBuffer(v) ? v : encode(v)) } : {}),
      };
    }
    serverServices.set(name, def);
  }
  return serverServices;
}

function service(name: EtcdServiceName): grpc.ServiceDefinition {
  return etcdServices().get(name)! as grpc.ServiceDefinition;
}

/** The TLS server's options for each new connection: new ones only when the source's TLS changed. */
function serverTlsProvider(source: ClientTlsSource): () => TlsOptions {
  let tls: ClientTls | undefined;
  let options: TlsOptions | undefined;
  return () => {
    const now = source.current();
    if (now !== tls) {
      tls = now;
      options = serverTlsOptions(now, DEFAULT_SORTING_TIMEOUTS.settingsAckMs);
    }
    return options!;
  };
}

/** What grpc-js's getAuthContext() tells of a call's TLS peer (its AuthContext, not exported). */
interface CallAuth {
  transportSecurityType?: string;
  sslPeerCertificate?: PeerCertificate;
}

/** What callContext reads of a gRPC call (grpc-js's, a DirectCall, or the JSON gateway's stand-in for one). */
interface CallLike {
  getPeer(): string;
  metadata: Pick<grpc.Metadata, 'get'>;
  getAuthContext?(): CallAuth;
  cancelled?: boolean;
  getDeadline?(): Date | number;
}

/**
 * A call's context, its peer and certificate user worked out only when asked (few handlers
 * need them). A class, so that a call costs one object and no closures. The peer string is built
 * from the socket on each getPeer(). A connection the client port rewrites has no socket grpc-js
 * can see ("unknown"); its requests carry the address (and a client certificate's user) in
 * headers the rewriter sets (and removes from what the client sent).
 */
class GrpcCallContext implements CallContext {
  readonly requireLeader: boolean;
  readonly token?: string;
  private seenPeer: string | undefined;
  /** null: asked, and none. */
  private seenCertUser: string | null | undefined;

  /**
   * `clientCerts`: the port requires client certificates (--client-cert-auth); only then does a
   * certificate, or the header standing for one, name the caller.
   */
  constructor(
    private readonly call: CallLike,
    private readonly clientCerts: boolean,
    readonly stream: boolean,
  ) {
    this.requireLeader = call.metadata.get('hasleader')[0] === 'true';
    // clientv3 sends "token"; grpc-gateway passes an HTTP Authorization header as "authorization".
    const token = metadataString(call.metadata, 'token') ?? metadataString(call.metadata, 'authorization');
    if (token !== undefined) this.token = token;
  }

  get peer(): string {
    if (this.seenPeer === undefined) {
      const seen = this.call.getPeer();
      this.seenPeer = seen === 'unknown' ? (metadataString(this.call.metadata, REWRITTEN_PEER_HEADER) ?? seen) : seen;
    }
    return this.seenPeer;
  }

  wanted(): boolean {
    const call = this.call;
    if (call.cancelled === true) return false;
    const deadline = call.getDeadline?.() ?? Infinity;
    return Date.now() < (deadline instanceof Date ? deadline.getTime() : deadline);
  }

  get certUser(): string | undefined {
    if (!this.clientCerts) return undefined;
    if (this.seenCertUser === undefined) {
      // grpc-js gives a TLS peer's certificate only once Node has verified it.
      const fromTls = certificateUser(this.call.getAuthContext?.().sslPeerCertificate);
      this.seenCertUser = fromTls ?? (this.call.getPeer() === 'unknown' ? metadataString(this.call.metadata, REWRITTEN_CERT_USER_HEADER) : undefined) ?? null;
    }
    return this.seenCertUser ?? undefined;
  }
}

function callContext(call: CallLike, clientCerts: boolean, stream = false): CallContext {
  return new GrpcCallContext(call, clientCerts, stream);
}

function metadataString(md: CallLike['metadata'], key: string): string | undefined {
  const v = md.get(key)[0];
  return typeof v === 'string' ? v : undefined;
}

function requestBytes(o: unknown): number {
  return ((o as Record<symbol, number>)[REQUEST_BYTES] as number | undefined) ?? 0;
}

export class EtcdGrpcServer {
  private readonly limits: EtcdServerLimits;
  private readonly backend: EtcdBackend;
  /** Watchers per client connection (grpc peer string). */
  private readonly watchersByPeer = new Map<string, number>();
  private readonly streams = new Set<WatchStream>();
  /** Open watch streams that require a leader, and the check that runs while there are any. */
  private leaderWatchers = 0;
  private leaderCheck: NodeJS.Timeout | undefined;
  private leaderlessChecks = 0;
  private listener: SortingListener | undefined;
  private gateway: JsonGateway | undefined;
  /** Unary methods by name (they are unique across the etcd services), for invokeUnary. */
  private readonly unaryMethods = new Map<string, UnaryMethod>();
  /** @internal Unary calls answered by direct-unary.ts rather than grpc-js (tests check the path is taken). */
  directCalls = 0;
  /** @internal The bound on request bytes held for unfinished messages (request-bytes.ts). */
  requestBytes: RequestBytesBudget | undefined;

  /** @internal The port requires client certificates: they name callers (callContext). */
  readonly clientCerts: boolean;

  private constructor(
    private readonly server: grpc.Server,
    private readonly opts: EtcdServerOptions,
  ) {
    this.backend = opts.backend;
    this.clientCerts = opts.tls !== undefined && tlsSource(opts.tls).current().clientCertAuth;
    this.limits = { ...DEFAULT_ETCD_SERVER_LIMITS, ...opts.limits };
  }

  /** Binds and serves. Port 0 picks a free port (see `port`). */
  static async start(opts: EtcdServerOptions): Promise<EtcdGrpcServer & { port: number }> {
    const limits = { ...DEFAULT_ETCD_SERVER_LIMITS, ...opts.limits };
    const server = new grpc.Server({
      'grpc.max_receive_message_length': limits.maxRequestBytes + GRPC_OVERHEAD_BYTES,
      'grpc.max_send_message_length': -1,
      'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
      // Per-call channelz bookkeeping costs CPU on every request; nothing here reads it.
      'grpc.enable_channelz': 0,
      // A watch fan-out leaves in one HTTP/2 write per stream, not one per watcher.
      interceptors: [eagerSendInterceptor([WATCH_METHOD_PATH])],
    });
    const s = new EtcdGrpcServer(server, opts);
    s.register();
    // Our own listener instead of bindAsync: it sorts each connection first (client-port-listener.ts).
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const maxMessageBytes = limits.maxRequestBytes + GRPC_OVERHEAD_BYTES;
    const methods = opts.directUnary === false ? new Map<string, DirectMethod>() : s.directMethods();
    const singleRequest = EtcdGrpcServer.singleRequestPaths();
    const route = (path: string): DirectMethod | undefined => methods.get(path);
    const maxGatewayBodyBytes = Math.ceil((limits.maxRequestBytes * 4) / 3) + JSON_OVERHEAD_BYTES;
    const budget = (s.requestBytes = new RequestBytesBudget(
      {
        memberBytes: limits.maxHeldRequestBytes,
        connectionBytes: limits.maxHeldRequestBytesPerConnection,
        waitingStreams: limits.maxWaitingRequestStreams,
        minBytesPerSec: limits.minRequestBytesPerSec,
        minDeadlineMs: limits.minRequestDeadlineMs,
      },
      maxMessageBytes,
      maxGatewayBodyBytes,
    ));
    const dispatch = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, grpcHandler: GrpcStreamHandler): void => {
      // Before any byte is read: grpc-js would inflate it unbounded by `budget` (request-encoding.ts).
      const refusal = compressionRefusal(headers);
      if (refusal !== undefined) return refuseCompressed(stream, refusal);
      boundUnreadChunks(stream);
      budget.watch(stream, singleRequest.has(String(headers[':path'])));
      const method = directMethod(headers, route);
      if (method === undefined) {
        clampGrpcTimeout(headers);
        advertiseAcceptedEncodings(stream);
        grpcHandler(stream, headers, flags);
      }
      else new DirectCall(stream, headers, method, maxMessageBytes).start();
    };
    const hooked = hookGrpcStreams(server, (stream, headers, flags, grpcHandler) => {
      try {
        dispatch(stream, headers, flags, grpcHandler);
      } catch (err) {
        // Whatever a client sent, a throw here must not end the process: the stream goes, the member serves on.
        opts.onInternalError?.(err, 'dispatch');
        dropStream(stream);
      }
    });
    if (!hooked) {
      opts.onInternalError?.(new Error("grpc-js's HTTP/2 server was not found: unary calls take grpc-js's path, request bytes are not bounded"), 'direct-unary');
    }
    // etcd serves its JSON gateway on the client port too (json-gateway.ts).
    s.gateway = new JsonGateway(s, maxGatewayBodyBytes, opts.version ?? DEFAULT_GATEWAY_VERSION, opts.metrics, (err) => opts.onInternalError?.(err, 'gateway'), limits.gatewayHeadersTimeoutMs, budget);
    const tls = opts.tls === undefined ? undefined : serverTlsProvider(tlsSource(opts.tls));
    s.listener = await SortingListener.listen(opts.host ?? '127.0.0.1', opts.port, injector, DEFAULT_SORTING_TIMEOUTS, s.gateway, (err) => opts.onInternalError?.(err, 'accept'), tls, opts.connections);
    return Object.assign(s, { port: s.listener.port });
  }

  /** Watchers currently registered through this server. */
  get watcherCount(): number {
    let n = 0;
    for (const v of this.watchersByPeer.values()) n += v;
    return n;
  }

  /**
   * A Watch stream. One whose client requires a leader (clientv3's WithRequireLeader, which
   * etcdctl watch uses) is refused with NO_LEADER while this member knows none, and ended with it
   * once the member has known none for NO_LEADER_CHECKS checks in a row: as etcd does, so the
   * client learns it is cut off instead of waiting on a silent stream.
   */
  private startWatchStream(call: WatchCall): void {
    const s = new WatchStream(this, call, this.backend, this.limits);
    const needsLeader = s.requireLeader && this.backend.hasLeader !== undefined;
    if (needsLeader && this.backend.hasLeader?.() === false) {
      s.fail(new EtcdError('NO_LEADER'));
      return;
    }
    this.streams.add(s);
    call.on('close', () => {
      this.streams.delete(s);
      if (needsLeader) this.leaderWatchers--;
    });
    if (needsLeader && this.leaderWatchers++ === 0 && this.leaderCheck === undefined) {
      this.leaderlessChecks = 0;
      this.leaderCheck = setInterval(() => this.checkLeader(), NO_LEADER_CHECK_MS);
      this.leaderCheck.unref();
    }
  }

  private checkLeader(): void {
    if (this.leaderWatchers === 0) {
      clearInterval(this.leaderCheck);
      this.leaderCheck = undefined;
      return;
    }
    if (this.backend.hasLeader?.() !== false) {
      this.leaderlessChecks = 0;
      return;
    }
    if (++this.leaderlessChecks < NO_LEADER_CHECKS) return;
    for (const s of this.streams) if (s.requireLeader) s.fail(new EtcdError('NO_LEADER'));
  }

  /** Ends watch streams, lets unary calls finish for up to graceMs, then drops everything. */
  async close(graceMs = 2_000): Promise<void> {
    clearInterval(this.leaderCheck);
    this.leaderCheck = undefined;
    this.listener?.close();
    this.gateway?.close();
    for (const s of this.streams) s.shutdown();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // ---------------------------------------------------------------- plumbing

  /** @internal */
  toStatus(err: unknown, method: string): grpc.ServerErrorResponse {
    if (isEtcdError(err)) return Object.assign(new Error(err.message), { code: err.grpcCode, details: err.message });
    this.opts.onInternalError?.(err, method);
    return Object.assign(new Error('picloud: internal error'), { code: grpc.status.INTERNAL, details: 'picloud: internal error' });
  }

  private unary(method: string, fn: (req: Obj, ctx: CallContext) => Promise<Obj>, sizeChecked = false): grpc.handleUnaryCall<Obj, Obj> {
    const m = { fn, sizeChecked };
    this.unaryMethods.set(method, m);
    return (call, callback) => {
      let pending: Promise<Obj>;
      try {
        pending = this.runUnary(method, m, call.request, call);
      } catch (err) {
        pending = Promise.reject(err);
      }
      pending.then(
        (resp) => callback(null, resp),
        (err: unknown) => callback(this.toStatus(err, method)),
      );
    };
  }

  /**
   * What every unary call goes through, whichever way it came (grpc-js, direct-unary.ts, the
   * JSON gateway's `who`): the learner gate, etcd's size limit, clientv3's WithRequireLeader
   * (refused at once while this member knows no leader, as etcd's unary interceptor does,
   * rather than waiting for one), then the method. Throws or rejects with what to answer.
   */
  private runUnary(method: string, m: UnaryMethod, req: Obj, call: CallLike | GatewayCaller): Promise<Obj> {
    const gateway = !('getPeer' in call);
    if (!gateway || call.self !== true) this.refuseOnLearner(method, req);
    if (m.sizeChecked && requestBytes(req) > this.limits.maxRequestBytes) throw new EtcdError('REQUEST_TOO_LARGE');
    const ctx = gateway ? this.gatewayContext(call) : callContext(call, this.clientCerts);
    if (ctx.requireLeader && this.backend.hasLeader?.() === false) throw new EtcdError('NO_LEADER');
    return m.fn(req, ctx);
  }

  /** The unary methods served on their HTTP/2 streams (direct-unary.ts), by gRPC path. */
  /** Paths of the methods whose request is one message (unary and server-streaming): held until the half-close. */
  private static singleRequestPaths(): Set<string> {
    const paths = new Set<string>();
    for (const def of etcdServices().values()) {
      for (const d of Object.values(def)) if (!d.requestStream) paths.add(d.path);
    }
    return paths;
  }

  private directMethods(): Map<string, DirectMethod> {
    const methods = new Map<string, DirectMethod>();
    for (const def of etcdServices().values()) {
      for (const [method, d] of Object.entries(def)) {
        const m = this.unaryMethods.get(method);
        if (m === undefined || d.requestStream || d.responseStream) continue;
        methods.set(d.path, {
          decode: (message) => {
            try {
              return d.requestDeserialize(message) as Obj;
            } catch {
              throw { code: grpc.status.INTERNAL, details: 'Error deserializing request' };
            }
          },
          run: async (req, call) => {
            this.directCalls++;
            try {
              return d.responseSerialize(await this.runUnary(method, m, req as Obj, call));
            } catch (err) {
              throw this.toStatus(err, method);
            }
          },
        });
      }
    }
    return methods;
  }

  /**
   * etcd 3.4's interceptors: a learner answers only Status and serializable Ranges
   * (learner-rpcs.ts), and no stream (`request` undefined). Every client call passes here first,
   * gRPC and JSON gateway alike, so a learner once promoted serves everything from its next call.
   */
  private refuseOnLearner(method: string, request: Obj | undefined): void {
    if (this.backend.isLearner?.() !== true) return;
    if (request !== undefined && learnerServesUnary(method, request)) return;
    throw new EtcdError('NOT_SUPPORTED_FOR_LEARNER');
  }

  /**
   * A stream method's handler, behind the learner gate: a refused stream ends with the status at
   * once, before any message, as etcd's stream interceptor ends it.
   */
  private stream<C extends grpc.ServerWritableStream<Obj, unknown> | grpc.ServerDuplexStream<Obj, unknown>>(method: string, handler: (call: C) => void): (call: C) => void {
    return (call) => {
      try {
        this.refuseOnLearner(method, undefined);
      } catch (err) {
        call.emit('error', this.toStatus(err, method));
        return;
      }
      handler(call);
    };
  }

  /**
   * Calls a unary method of `service` with an encoded request, as its gRPC call would (same
   * decoding, limits and handler), and returns the encoded response; for the JSON gateway.
   * Rejects with the gRPC status the call would have ended with.
   */
  async invokeUnary(service: string, method: string, request: Uint8Array, who: GatewayCaller): Promise<Buffer> {
    const def = etcdServices().get(service)?.[method];
    const m = this.unaryMethods.get(method);
    if (def === undefined || m === undefined) throw this.toStatus(new EtcdError('UNSUPPORTED', `${service}.${method}`), method);
    let resp: Obj;
    try {
      resp = await this.runUnary(method, m, def.requestDeserialize(Buffer.from(request)) as Obj, who);
    } catch (err) {
      throw this.toStatus(err, method);
    }
    return def.responseSerialize(resp);
  }

  /** A gateway request's call context; a certificate names its user only with --client-cert-auth. */
  private gatewayContext(who: GatewayCaller): CallContext {
    const { certUser, self: _self, ...rest } = who;
    return { requireLeader: false, ...rest, ...(this.clientCerts && certUser !== undefined ? { certUser } : {}) };
  }

  /**
   * A Watch or LeaseKeepAlive stream for the JSON gateway, served by the same code a gRPC call
   * gets (for a watch: ids, limits, cancellation, slow-consumer handling), through a stand-in
   * for the gRPC call: encoded requests go in, encoded responses come out to `out`.
   * `endRequests` is the client's half-close.
   */
  openGatewayStream(method: GatewayStreamMethod, who: GatewayCaller, out: GatewayStreamOutput): GatewayStream {
    try {
      this.refuseOnLearner(method, undefined);
    } catch (err) {
      const refusal = this.toStatus(err, method);
      out.fail({ code: refusal.code ?? grpc.status.INTERNAL, details: refusal.details ?? refusal.message });
      return { requests: () => undefined, endRequests: () => undefined, drained: () => undefined, close: () => undefined };
    }
    const service = method === 'Watch' ? 'Watch' : 'Lease';
    const def = etcdServices().get(service)![method]!;
    const metadata = new grpc.Metadata();
    if (who.token !== undefined) metadata.set('token', who.token);
    const { certUser } = this.gatewayContext(who);
    // A body's requests are read as a gRPC call's are: not while the stream has paused its call
    // (keep-alives pending), nor while the client leaves answers untaken. Handed over all at
    // once, a 1.8 MiB body of keep-alives had ~73,000 renewals and their answers in flight at
    // once: +170 MiB RSS for one request, after its body's reservation was returned.
    let source: (() => Uint8Array | undefined) | undefined;
    let endQueued = false;
    let paused = false;
    let outputFull = false;
    let closed = false;
    const feed = (): void => {
      // A turn's worth at a time, as gRPC's requests come a DATA frame at a time: answers made
      // meanwhile (watch progress) are written, and can stop the feed, before the next ones.
      for (let n = 0; !closed && !paused && !outputFull && source !== undefined; n++) {
        if (n === GATEWAY_FEED_BATCH) return feedSoon();
        const bytes = source();
        if (bytes === undefined) source = undefined;
        else call.emit('data', def.requestDeserialize(Buffer.from(bytes)));
      }
      if (source === undefined && endQueued && !closed && !paused) {
        endQueued = false;
        call.emit('end');
      }
    };
    let feedScheduled = false;
    const feedSoon = (): void => {
      if (feedScheduled) return;
      feedScheduled = true;
      setImmediate(() => {
        feedScheduled = false;
        feed();
      });
    };
    const call = Object.assign(new EventEmitter(), {
      metadata,
      getPeer: () => who.peer,
      getAuthContext: (): CallAuth => (certUser === undefined ? {} : { transportSecurityType: 'ssl', sslPeerCertificate: { subject: { CN: certUser } } as PeerCertificate }),
      write: (m: unknown): boolean => {
        let taken = true;
        if (m instanceof EagerFrames) {
          const messages = m.messages();
          messages.forEach((b, i) => (taken = out.write(b, i === messages.length - 1 ? m.sent : () => undefined) && taken));
        } else {
          const msg = m instanceof EagerMessage ? m : new EagerMessage(m, () => undefined);
          taken = out.write(def.responseSerialize(msg.message as object), msg.sent);
        }
        if (!taken) outputFull = true;
        return taken;
      },
      end: () => out.end(),
      pause: () => void (paused = true),
      resume: () => {
        paused = false;
        feedSoon();
      },
    });
    call.on('error', (status: grpc.ServerErrorResponse) => out.fail({ code: status.code ?? grpc.status.INTERNAL, details: status.details ?? status.message }));
    let onClose = (): void => undefined;
    if (method === 'Watch') {
      const s = new WatchStream(this, call as unknown as WatchCall, this.backend, this.limits);
      this.streams.add(s);
      onClose = () => this.streams.delete(s);
    } else {
      this.keepAliveStream(call as unknown as grpc.ServerDuplexStream<Obj, Obj>);
    }
    return {
      requests: (next) => {
        if (closed) return;
        source = next;
        feedSoon();
      },
      endRequests: () => {
        endQueued = true;
        feedSoon();
      },
      drained: () => {
        outputFull = false;
        call.emit('drain');
        feedSoon();
      },
      close: () => {
        if (closed) return;
        closed = true;
        onClose();
        call.emit('cancelled');
        call.emit('close');
      },
    };
  }

  /** @internal All watch streams' responses not yet written (MAX_WATCH_BUFFERS_BYTES). */
  readonly watchBuffers = { bytes: 0 };

  /** @internal */
  adjustWatchers(peer: string, delta: number): void {
    const n = (this.watchersByPeer.get(peer) ?? 0) + delta;
    if (n <= 0) this.watchersByPeer.delete(peer);
    else this.watchersByPeer.set(peer, n);
  }

  /** @internal */
  watchersOf(peer: string): number {
    return this.watchersByPeer.get(peer) ?? 0;
  }

  private register(): void {
    const b = this.backend;
    this.server.addService(service('KV'), {
      Range: this.unary('Range', async (r, ctx) => cv.rangeResponse(await b.range(cv.rangeRequest(r), ctx))),
      Put: this.unary('Put', async (r, ctx) => cv.putResponse(await b.put(cv.putRequest(r), ctx)), true),
      DeleteRange: this.unary('DeleteRange', async (r, ctx) => cv.deleteRangeResponse(await b.deleteRange(cv.deleteRangeRequest(r), ctx)), true),
      Txn: this.unary('Txn', async (r, ctx) => cv.txnResponse(await b.txn(cv.txnRequest(r), ctx)), true),
      Compact: this.unary('Compact', async (r, ctx) => {
        const resp = await b.compact({ revision: cv.int64(r.revision), physical: r.physical === true }, ctx);
        return { header: cv.header(resp.header) };
      }),
    });

    this.server.addService(service('Watch'), {
      Watch: this.stream('Watch', (call: WatchCall) => this.startWatchStream(call)),
    });

    this.server.addService(service('Lease'), {
      LeaseGrant: this.unary('LeaseGrant', async (r, ctx) => {
        const resp = await b.leaseGrant(cv.leaseGrantRequest(r), ctx);
        return { header: cv.header(resp.header), ID: resp.id, TTL: resp.ttlSeconds, error: '' };
      }),
      LeaseRevoke: this.unary('LeaseRevoke', async (r, ctx) => ({ header: cv.header((await b.leaseRevoke(cv.id64(r.ID), ctx)).header) })),
      LeaseKeepAlive: this.stream('LeaseKeepAlive', (call: grpc.ServerDuplexStream<Obj, Obj>) => this.keepAliveStream(call)),
      LeaseTimeToLive: this.unary('LeaseTimeToLive', async (r, ctx) => {
        const resp = await b.leaseTimeToLive(cv.id64(r.ID), r.keys === true, ctx);
        // A lease ID picloud cannot hold (at or above 2^53) is no lease: echoed as asked, as etcd does.
        const id = cv.isSafeInt64(r.ID) ? resp.id : r.ID;
        return { header: cv.header(resp.header), ID: id, TTL: resp.ttlSeconds, grantedTTL: resp.grantedTtlSeconds, keys: resp.keys };
      }),
      LeaseLeases: this.unary('LeaseLeases', async (_r, ctx) => {
        const resp = await b.leaseLeases(ctx);
        return { header: cv.header(resp.header), leases: resp.ids.map((id) => ({ ID: id })) };
      }),
    });

    const members = (resp: { header: ResponseHeader; members: Parameters<typeof cv.member>[0][] }): Obj => ({
      header: cv.clusterHeader(resp.header),
      members: resp.members.map(cv.member),
    });
    this.server.addService(service('Cluster'), {
      MemberAdd: this.unary('MemberAdd', async (r, ctx) => {
        const resp = await b.memberAdd(cv.stringList(r.peerURLs), r.isLearner === true, ctx);
        return { ...members(resp), member: cv.member(resp.member) };
      }),
      MemberRemove: this.unary('MemberRemove', async (r, ctx) => members(await b.memberRemove(cv.id64(r.ID), ctx))),
      MemberUpdate: this.unary('MemberUpdate', async (r, ctx) => members(await b.memberUpdate(cv.id64(r.ID), cv.stringList(r.peerURLs), ctx))),
      MemberList: this.unary('MemberList', async (_r, ctx) => members(await b.memberList(ctx))),
      MemberPromote: this.unary('MemberPromote', async (r, ctx) => members(await b.memberPromote(cv.id64(r.ID), ctx))),
    });

    this.server.addService(service('Maintenance'), {
      Alarm: this.unary('Alarm', async (r, ctx) => cv.alarmResponse(await b.alarm(cv.alarmRequest(r), ctx))),
      Status: this.unary('Status', async (_r, ctx) => cv.statusResponse(await b.status(ctx))),
      // etcd 3.4 answers Defragment and MoveLeader with an empty response (no header).
      Defragment: this.unary('Defragment', async (_r, ctx) => (await b.defragment(ctx), {})),
      // etcd hashes its whole backend file; picloud's answer is this member's key-space hash at
      // the current revision (HashKV's), which tells members apart just as well.
      Hash: this.unary('Hash', async (_r, ctx) => {
        if (b.hashKV === undefined) throw new EtcdError('UNSUPPORTED', 'Hash');
        const resp = await b.hashKV(0, ctx);
        return { header: cv.header(resp.header), hash: resp.hash >>> 0 };
      }),
      HashKV: this.unary('HashKV', async (r, ctx) => {
        if (b.hashKV === undefined) throw new EtcdError('UNSUPPORTED', 'HashKV');
        const resp = await b.hashKV(cv.int64(r.revision), ctx);
        return { header: cv.header(resp.header), hash: resp.hash >>> 0, compactRevision: resp.compactRevision };
      }),
      MoveLeader: this.unary('MoveLeader', async (r, ctx) => {
        if (b.moveLeader === undefined) throw new EtcdError('UNSUPPORTED', 'MoveLeader');
        await b.moveLeader(cv.id64(r.targetID), ctx);
        return {};
      }),
      Snapshot: this.stream('Snapshot', (call: grpc.ServerWritableStream<Obj, Obj>) => {
        this.snapshotStream(call).catch((err: unknown) => {
          if (!call.cancelled) call.emit('error', this.toStatus(err, 'Snapshot'));
        });
      }),
    });

    this.registerAuth();
  }

  private registerAuth(): void {
    const auth = (): EtcdAuthBackend => {
      if (this.backend.auth === undefined) throw new EtcdError('UNSUPPORTED', 'Auth');
      return this.backend.auth;
    };
    const headerOnly = async (p: Promise<{ header: ResponseHeader }>): Promise<Obj> => ({ header: cv.header((await p).header) });
    const str = (v: unknown): string => (typeof v === 'string' ? v : '');
    this.server.addService(service('Auth'), {
      AuthEnable: this.unary('AuthEnable', (_r, ctx) => headerOnly(auth().authEnable(ctx))),
      AuthDisable: this.unary('AuthDisable', (_r, ctx) => headerOnly(auth().authDisable(ctx))),
      AuthStatus: this.unary('AuthStatus', async (_r, ctx) => {
        const s = await auth().authStatus(ctx);
        return { header: cv.header(s.header), enabled: s.enabled, authRevision: s.authRevision };
      }),
      Authenticate: this.unary('Authenticate', async (r, ctx) => {
        const a = await auth().authenticate(str(r.name), str(r.password), ctx);
        return { header: cv.header(a.header), token: a.token };
      }),
      UserAdd: this.unary('UserAdd', (r, ctx) => headerOnly(auth().userAdd(str(r.name), str(r.password), (r.options as Obj | null)?.noPassword === true, ctx))),
      UserGet: this.unary('UserGet', async (r, ctx) => {
        const u = await auth().userGet(str(r.name), ctx);
        return { header: cv.header(u.header), roles: u.roles };
      }),
      UserList: this.unary('UserList', async (_r, ctx) => {
        const l = await auth().userList(ctx);
        return { header: cv.header(l.header), users: l.users };
      }),
      UserDelete: this.unary('UserDelete', (r, ctx) => headerOnly(auth().userDelete(str(r.name), ctx))),
      UserChangePassword: this.unary('UserChangePassword', (r, ctx) => headerOnly(auth().userChangePassword(str(r.name), str(r.password), ctx))),
      UserGrantRole: this.unary('UserGrantRole', (r, ctx) => headerOnly(auth().userGrantRole(str(r.user), str(r.role), ctx))),
      UserRevokeRole: this.unary('UserRevokeRole', (r, ctx) => headerOnly(auth().userRevokeRole(str(r.name), str(r.role), ctx))),
      RoleAdd: this.unary('RoleAdd', (r, ctx) => headerOnly(auth().roleAdd(str(r.name), ctx))),
      RoleGet: this.unary('RoleGet', async (r, ctx) => {
        const g = await auth().roleGet(str(r.role), ctx);
        return { header: cv.header(g.header), perm: g.perm };
      }),
      RoleList: this.unary('RoleList', async (_r, ctx) => {
        const l = await auth().roleList(ctx);
        return { header: cv.header(l.header), roles: l.roles };
      }),
      RoleDelete: this.unary('RoleDelete', (r, ctx) => headerOnly(auth().roleDelete(str(r.role), ctx))),
      RoleGrantPermission: this.unary('RoleGrantPermission', (r, ctx) => headerOnly(auth().roleGrantPermission(str(r.name), cv.permission(r.perm), ctx))),
      RoleRevokePermission: this.unary('RoleRevokePermission', (r, ctx) => headerOnly(auth().roleRevokePermission(str(r.role), cv.bytes(r.key), cv.bytes(r.rangeEnd), ctx)), true),
    });
  }

  private keepAliveStream(call: grpc.ServerDuplexStream<Obj, Obj>): void {
    const ctx = callContext(call, this.clientCerts, true);
    // Keep-alives renewed and not yet answered.
    let pending = 0;
    let done = false;
    // The client half-closed: answer what it sent before, then end (etcd's loop reads to EOF).
    let ended = false;
    // A burst (a client renewing thousands of leases at once) is held back, not dropped: with
    // the stream paused grpc-js stops reading it and HTTP/2 flow control stalls the client.
    let paused = false;
    // Answers the client has not taken yet fill grpc-js's buffer: requests stop being read until
    // they drain, as etcd's loop blocks in Send. Without this a client that sent keep-alives
    // and never read the answers grew a member by ~20 bytes for each byte it sent, without end
    // (8 MiB of keep-alives: +166 MiB RSS).
    let draining = false;
    const holdBack = (): void => {
      if (paused) return;
      paused = true;
      call.pause();
    };
    const readOn = (): void => {
      if (!paused || pending >= MAX_PENDING_KEEPALIVES || draining) return;
      paused = false;
      call.resume();
    };
    const send = (response: Obj): void => {
      if (call.write(response) || draining) return;
      draining = true;
      holdBack();
      void writableOrGone(call).then(() => {
        draining = false;
        readOn();
      });
    };
    const answer = (raw: unknown, r: PromiseSettledResult<LeaseKeepAliveResponse>): void => {
      pending--;
      if (!done) {
        if (r.status === 'fulfilled') {
          send({ header: cv.header(r.value.header), ID: r.value.id, TTL: r.value.ttlSeconds });
        } else if (isEtcdError(r.reason, 'LEASE_NOT_FOUND')) {
          // etcd answers an unknown lease on this stream with TTL 0, not an error.
          send({ header: cv.header(this.backend.header()), ID: raw, TTL: 0 });
        } else {
          done = true;
          call.emit('error', this.toStatus(r.reason, 'LeaseKeepAlive'));
        }
      }
      readOn();
      if (ended && pending === 0) finish();
    };
    call.on('data', (req: Obj) => {
      if (done) return;
      // Each keep-alive is renewed as it comes and answered once renewed: those that arrive
      // together still share one confirmation round on the leader (the driver's ReadIndex
      // rounds take every read that waits), and one that waits long (an expired lease's waits
      // for its revoke, as etcd's) holds back no other lease's answer: a follower forwards all
      // of its clients' keep-alives on one stream.
      const raw = req.ID;
      const id = cv.id64(req.ID);
      pending++;
      if (pending >= MAX_PENDING_KEEPALIVES) holdBack();
      const renewed = id === cv.UNREPRESENTABLE_ID ? Promise.reject(new EtcdError('LEASE_NOT_FOUND')) : Promise.resolve().then(() => this.backend.leaseKeepAlive(id, ctx));
      renewed.then(
        (value) => answer(raw, { status: 'fulfilled', value }),
        (reason: unknown) => answer(raw, { status: 'rejected', reason }),
      );
    });
    const finish = (): void => {
      if (done) return;
      done = true;
      call.end();
    };
    call.on('end', () => {
      ended = true;
      if (pending === 0) finish();
    });
    call.on('cancelled', () => (done = true));
    call.on('error', () => (done = true));
  }

  private async snapshotStream(call: grpc.ServerWritableStream<Obj, Obj>): Promise<void> {
    const ctx = callContext(call, this.clientCerts);
    const snap = await this.backend.snapshot(ctx);
    try {
      const hdr = cv.header(snap.header);
      const total = framedSnapshotBytes(snap.sizeBytes);
      const hash = createHash('sha256');
      let dataSent = 0;
      let sent = 0;
      /** False once the client is gone: nothing more is read or sent. */
      const send = async (blob: Uint8Array): Promise<boolean> => {
        sent += blob.length;
        if (!call.write({ header: hdr, remainingBytes: total - sent, blob })) await writableOrGone(call);
        return !call.cancelled;
      };
      for await (const piece of snap.data) {
        if (call.cancelled) return;
        hash.update(piece);
        dataSent += piece.length;
        if (dataSent > snap.sizeBytes) throw new Error(`snapshot longer than its announced ${snap.sizeBytes} bytes`);
        for (let off = 0; off < piece.length; off += SNAPSHOT_CHUNK_BYTES) if (!(await send(piece.subarray(off, off + SNAPSHOT_CHUNK_BYTES)))) return;
      }
      if (dataSent !== snap.sizeBytes) throw new Error(`snapshot has ${dataSent} bytes, announced ${snap.sizeBytes}`);
      const { tail, digest } = snapshotTrailer(dataSent, hash);
      if (!(await send(tail)) || !(await send(digest))) return;
      call.end();
    } finally {
      // Whatever ended the stream (the client cancelling mid-way too): its spool file goes.
      await snap.release?.();
    }
  }
}

interface WatcherState {
  id: number;
  handle: WatchHandle | undefined;
  /** Sink calls made before the "created" response went out. */
  early: (() => void)[] | undefined;
  lastHeader: ResponseHeader;
  done: boolean;
  /** Created with fragment=true: a large response is split (etcd's sendFragments). */
  fragment: boolean;
  /** The revision before its start: a client resuming here has seen through it (0: from now). */
  seenThrough: number;
}

/**
 * Resolves once `call` takes writes again, or never will: a cancelled call emits no 'drain',
 * and a snapshot stream waiting for one held its spool file open for good.
 */
function writableOrGone(call: grpc.ServerWritableStream<Obj, Obj> | grpc.ServerDuplexStream<Obj, Obj>): Promise<void> {
  if (call.cancelled || call.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const events = ['drain', 'cancelled', 'close', 'error'] as const;
    const done = (): void => {
      for (const e of events) call.off(e, done);
      resolve();
    };
    for (const e of events) call.on(e, done);
  });
}

/** How often a member with leader-requiring watch streams looks for its leader (etcd: each election timeout). */
export const NO_LEADER_CHECK_MS = 1_000;
/** Checks in a row without a leader before those streams end with NO_LEADER (etcd's maxNoLeaderCnt). */
export const NO_LEADER_CHECKS = 3;

const WATCH_METHOD_PATH = '/etcdserverpb.Watch/Watch';


/** How often a progress request waiting for a lagging watch looks again (besides after each write of events). */
const PROGRESS_RETRY_MS = 50;

/** Replies to a watch stream's requests held for a client not reading them, before its requests stop being read. */
export const WATCH_UNWRITTEN_REPLIES_MAX = 256;

/** The largest frames buffer a watch stream keeps between writes (a bigger one is left to the GC). */
const SPARE_FRAMES_MAX_BYTES = 64 * 1024;

/** Responses (objects to encode, or WatchResponse bytes already encoded) go out eagerly. */
type WatchCall = grpc.ServerDuplexStream<Obj, EagerMessage | EagerFrames>;

/** What a released batch slot points at until it is reused. */
const NO_EVENTS: readonly WatchEvent[] = [];

/** One Watch bidi stream: many watchers multiplexed by watch id. */
class WatchStream {
  private readonly watchers = new Map<number, WatcherState>();
  private nextId = 0;
  /** This stream's responses not yet written (also counted in the server's watchBuffers). */
  private pendingBytes = 0;
  /**
   * Events responses waiting for this turn's write: the first `batchCount` slots (reused from
   * turn to turn: a fan-out fills one per watch of the stream), and the bytes counted for them.
   */
  private readonly batch: EventsResponse[] = [];
  private batchCount = 0;
  private batchBytes = 0;
  /** A frames buffer whose write has completed, kept for the next flush. */
  private spareFrames: Buffer | undefined;
  /** A watch was told its sink is congested: resume them all once the writes drain. */
  private congested = false;
  /** Replies to requests (created, canceled, progress) handed to HTTP/2 and not yet written. */
  private unwrittenReplies = 0;
  /** Requests are not being read: the client is not taking the replies (readOnIfDrained). */
  private readingPaused = false;
  /** A progress request waiting until every watch has sent everything up to `revision`. */
  private pendingProgress: { header: ResponseHeader; timer: NodeJS.Timeout | undefined } | undefined;
  /**
   * The highest revision queued on this stream, of an event or in a header (a catch-up's events
   * response carries the store's revision, past its events): a progress answer goes no lower.
   */
  private sentThrough = 0;
  private closed = false;
  private readonly ctx: CallContext;
  private readonly peer: string;
  /** The client sent etcd's "hasleader" metadata. */
  readonly requireLeader: boolean;

  constructor(
    private readonly server: EtcdGrpcServer,
    private readonly call: WatchCall,
    private readonly backend: EtcdBackend,
    private readonly limits: EtcdServerLimits,
  ) {
    this.ctx = callContext(call, server.clientCerts, true);
    this.peer = this.ctx.peer;
    this.requireLeader = this.ctx.requireLeader;
    call.on('data', (req: Obj) => this.onRequest(req));
    // A client that half-closes (a request iterator that ran out, grpc-gateway once the body is
    // read) still gets its events, as from etcd; the stream ends when the client cancels or leaves.
    call.on('cancelled', () => this.closeAll());
    call.on('error', () => this.closeAll());
    call.on('close', () => this.closeAll());
  }

  /** Ends the stream with `err` (its watchers go). */
  fail(err: unknown): void {
    if (this.closed) return;
    this.call.emit('error', this.server.toStatus(err, 'Watch'));
    this.closeAll();
  }

  /**
   * Server shutdown. What the watches were given before it is written first (a fan-out of this
   * turn still waits for the backend's pump and this stream's flush, both microtasks); then the
   * stream ends with etcd's "server stopped" (UNAVAILABLE), so clients resume their watches on
   * another member, as when etcd stops and the connection drops. An OK end would not do: to
   * clientv3 that is io.EOF, which ends the watch for good (its isHaltErr).
   */
  shutdown(): void {
    setImmediate(() => {
      this.flush();
      this.fail(new EtcdError('STOPPED'));
    });
  }

  closeAll(): void {
    if (this.closed) return;
    this.closed = true;
    // Writes still outstanding may never report back once the stream is gone.
    this.server.watchBuffers.bytes -= this.pendingBytes;
    this.pendingBytes = 0;
    clearInterval(this.pendingProgress?.timer);
    this.pendingProgress = undefined;
    for (const w of this.watchers.values()) this.drop(w);
    this.watchers.clear();
  }

  private onRequest(req: Obj): void {
    if (this.closed) return;
    try {
      if (req.createRequest) this.create(req.createRequest as Obj);
      else if (req.cancelRequest) this.cancel(cv.int64((req.cancelRequest as Obj).watchId));
      else if (req.progressRequest) this.progress();
    } catch (err) {
      this.call.emit('error', this.server.toStatus(err, 'Watch'));
      this.closeAll();
    }
  }

  /**
   * Queues an events response: the ones produced in one turn (a fan-out reaches every watcher
   * of the stream in the same turn) are encoded together and leave as one HTTP/2 write.
   * `fragment`: the watch asked for a large response in pieces, each below the largest message
   * this server accepts (max request bytes plus gRPC overhead), where etcd cuts them too.
   */
  private sendEvents(watchId: number, header: ResponseHeader, events: readonly WatchEvent[], fragment: boolean): void {
    if (this.closed) return;
    const wasEmpty = this.pendingBytes === 0;
    if (this.batchCount === 0) queueMicrotask(() => this.flush());
    this.sentThrough = Math.max(this.sentThrough, header.revision, events[events.length - 1]?.kv.modRevision ?? 0);
    if (!fragment) this.queueEvents(watchId, header, events, false); // the fan-out's path: no array per watcher
    else {
      const runs = fragmentEvents(watchId, header, events, this.limits.maxRequestBytes + GRPC_OVERHEAD_BYTES);
      for (let i = 0; i < runs.length; i++) this.queueEvents(watchId, header, runs[i]!, i < runs.length - 1);
    }
    // One response (all its fragments) always fits an empty buffer (a revision larger than the
    // buffer is no sign of a slow client), as the watch hub accepts one revision into a
    // watcher's empty buffer.
    if (!wasEmpty && this.pendingBytes > this.limits.maxWatchStreamBufferBytes) this.tooSlow();
    this.holdBackIfBacklogged();
  }

  /** Writes the queued events responses; anything else sent must come after them. */
  private flush(): void {
    const count = this.batchCount;
    if (count === 0) return;
    const bytes = this.batchBytes;
    this.batchCount = 0;
    this.batchBytes = 0;
    if (this.closed) return this.releaseSlots(count);
    const { frames, largest, buffer } = encodeEventsFrames(this.batch, this.spareFrames, count);
    // Before the write: a response queued from inside it takes slot 0 again.
    this.releaseSlots(count);
    this.spareFrames = undefined;
    this.call.write(
      new EagerFrames(frames, count, largest, () => {
        // Written: the buffer is free for the next turn's responses.
        if (buffer.length <= SPARE_FRAMES_MAX_BYTES && (this.spareFrames === undefined || this.spareFrames.length < buffer.length)) this.spareFrames = buffer;
        this.written(bytes);
      }),
    );
    this.tryProgress();
  }

  /** Drops what the first `count` slots point at (events would otherwise live until reused). */
  private releaseSlots(count: number): void {
    for (let i = 0; i < count; i++) this.batch[i]!.events = NO_EVENTS;
  }

  /** `bytes` of responses have left: resume congested watches once half the buffer is free. */
  private written(bytes: number): void {
    if (this.closed) return; // released in closeAll
    this.pendingBytes -= bytes;
    this.server.watchBuffers.bytes -= bytes;
    this.readOnIfDrained();
    if (!this.congested || this.overShare()) return;
    this.congested = false;
    for (const w of this.watchers.values()) w.handle?.resume();
  }

  /** True (and remembered) while half the send buffer is taken. */
  private isCongested(): boolean {
    if (this.overShare()) this.congested = true;
    return this.congested;
  }

  /** Half this stream's buffer is taken, or its share of all streams' while they are past half theirs. */
  private overShare(): boolean {
    if (this.pendingBytes > this.limits.maxWatchStreamBufferBytes / 2) return true;
    return this.pendingBytes > WATCH_STREAM_SHARE_BYTES && this.server.watchBuffers.bytes > this.limits.maxWatchBuffersBytes / 2;
  }

  private charge(bytes: number): void {
    this.pendingBytes += bytes;
    this.server.watchBuffers.bytes += bytes;
  }

  private send(resp: Obj, bytes: number): void {
    if (this.closed) return;
    this.flush();
    const revision = (resp.header as { revision: number } | undefined)?.revision ?? 0;
    if (revision > this.sentThrough) this.sentThrough = revision;
    const wasEmpty = this.pendingBytes === 0;
    this.charge(bytes);
    this.unwrittenReplies++;
    this.call.write(
      new EagerMessage(resp, () => {
        this.unwrittenReplies--;
        this.written(bytes);
      }),
    );
    if (!wasEmpty && this.pendingBytes > this.limits.maxWatchStreamBufferBytes) this.tooSlow();
    this.holdBackIfBacklogged();
  }

  /**
   * A client that sends requests (progress, create, cancel: a few bytes each) and reads no
   * replies would make the member hold a reply for each without end: past a backlog of replies,
   * or of responses beyond the stream's buffer, the stream's requests stop being read (HTTP/2
   * flow control then stalls the client), as etcd's recvLoop blocks on its control channel of 16.
   */
  private holdBackIfBacklogged(): void {
    if (this.readingPaused || this.closed) return;
    if (this.unwrittenReplies < WATCH_UNWRITTEN_REPLIES_MAX && this.pendingBytes <= this.limits.maxWatchStreamBufferBytes) return;
    this.readingPaused = true;
    this.call.pause();
  }

  /** Reads requests again once the replies and responses are half drained. */
  private readOnIfDrained(): void {
    if (!this.readingPaused || this.unwrittenReplies > WATCH_UNWRITTEN_REPLIES_MAX / 2 || this.pendingBytes > this.limits.maxWatchStreamBufferBytes / 2) return;
    this.readingPaused = false;
    this.call.resume();
  }

  /** The client is not reading: cancel every watcher of the stream, saying why (never a silent drop). */
  private tooSlow(): void {
    const reason = new EtcdError('WATCH_TOO_SLOW').message;
    this.flush();
    for (const w of [...this.watchers.values()]) {
      this.drop(w);
      this.watchers.delete(w.id);
      this.call.write(new EagerMessage({ header: cv.header(w.lastHeader), watchId: w.id, canceled: true, cancelReason: reason }, () => undefined));
    }
  }

  private drop(w: WatcherState): void {
    if (w.done) return;
    w.done = true;
    w.handle?.cancel();
    this.server.adjustWatchers(this.peer, -1);
  }

  /** Puts one events response (`more`: a fragment, more of it follows) in this turn's batch. */
  private queueEvents(watchId: number, header: ResponseHeader, events: readonly WatchEvent[], more: boolean): void {
    const bytes = eventsResponseBytes(header, events, more);
    this.charge(bytes);
    this.batchBytes += bytes;
    const slot = this.batch[this.batchCount++];
    if (slot === undefined) this.batch.push({ watchId, header, events, fragment: more });
    else {
      slot.watchId = watchId;
      slot.header = header;
      slot.events = events;
      slot.fragment = more;
    }
  }

  private create(o: Obj): void {
    const requested = cv.int64(o.watchId);
    let id: number;
    if (requested !== 0) {
      id = requested;
    } else {
      while (this.watchers.has(this.nextId)) this.nextId++;
      id = this.nextId++;
    }
    // Refused in one response with watch_id -1, as etcd refuses it; an ID given out here goes
    // to the next watch instead.
    const refuse = (reason: string): void => {
      if (requested === 0) this.nextId = id;
      this.send({ header: cv.header(this.backend.header()), watchId: -1, created: true, canceled: true, cancelReason: reason }, 128);
    };
    if (requested !== 0 && this.watchers.has(requested)) return refuse('mvcc: duplicate watch ID provided on the WatchStream');
    if (this.server.watchersOf(this.peer) >= this.limits.maxWatchersPerConnection) {
      return refuse(`${new EtcdError('TOO_MANY_WATCHERS').message} (limit ${this.limits.maxWatchersPerConnection})`);
    }
    let req;
    try {
      req = cv.watchCreateRequest(o, id);
    } catch (err) {
      return refuse((err as Error).message);
    }
    const invalid = watchRangeRefusal(req);
    if (invalid !== undefined) return refuse(invalid);
    const w: WatcherState = { id, handle: undefined, early: [], lastHeader: this.backend.header(), done: false, fragment: req.fragment, seenThrough: Math.max(0, req.startRevision - 1) };
    const deliver = (f: () => void): void => {
      if (w.done || this.closed) return;
      if (w.early !== undefined) w.early.push(f);
      else f();
    };
    const sink: WatchSink = {
      events: (events, h) => {
        if (w.early !== undefined) return deliver(() => sink.events(events, h));
        if (w.done || this.closed) return;
        w.lastHeader = h;
        this.sendEvents(id, h, events, w.fragment);
      },
      progress: (h) =>
        deliver(() => {
          w.lastHeader = h;
          this.send({ header: cv.header(h), watchId: id, events: [] }, 64);
        }),
      congested: () => this.isCongested(),
      cancel: (reason, h, compactRevision) =>
        deliver(() => {
          if (this.watchers.get(id) === w) this.watchers.delete(id);
          this.drop(w);
          // A compacted start is told by compact_revision alone, as etcd tells it (no cancel_reason);
          // before any compaction that revision is -1 (a start below -1), as etcd 3.4 sends it.
          const compacted = compactRevision !== undefined && compactRevision !== 0;
          this.send({ header: cv.header(h), watchId: id, canceled: true, compactRevision: compacted ? compactRevision : 0, cancelReason: compacted ? '' : reason }, 128);
        }),
    };
    this.watchers.set(id, w);
    this.server.adjustWatchers(this.peer, 1);
    try {
      w.handle = this.backend.watch(req, sink, this.ctx);
    } catch (err) {
      this.watchers.delete(id);
      w.early = undefined;
      this.drop(w);
      if (!isEtcdError(err)) this.server.toStatus(err, 'Watch'); // report it
      return refuse(isEtcdError(err) ? watchRefusalReason(err) : 'picloud: internal error');
    }
    w.lastHeader = w.handle.header;
    this.send({ header: cv.header(w.handle.header), watchId: id, created: true }, 64);
    const early = w.early ?? [];
    w.early = undefined;
    for (const f of early) f();
  }

  private cancel(id: number): void {
    const w = this.watchers.get(id);
    if (w === undefined) return; // etcd ignores unknown ids
    this.watchers.delete(id);
    this.drop(w);
    this.send({ header: cv.header(this.backend.header()), watchId: id, canceled: true }, 64);
  }

  /**
   * etcd's progress request: the answer says everything up to its revision has been sent on this
   * stream, so it waits until every watch has (one held for its auth check, or catching up from
   * the log, lags), as etcd 3.5 defers it until its watchers are synced. Requests made meanwhile
   * share the answer, at the latest revision asked.
   */
  private progress(): void {
    this.backend.watchProgress(this.ctx).then(
      (h) => {
        if (this.closed) return;
        const p = this.pendingProgress;
        if (p === undefined) this.pendingProgress = { header: h, timer: undefined };
        else if (h.revision > p.header.revision) p.header = h;
        this.tryProgress();
      },
      () => undefined, // etcd drops a progress request it cannot answer
    );
  }

  private tryProgress(): void {
    const p = this.pendingProgress;
    if (p === undefined || this.closed) return;
    // Not below a revision sent since the request (an event's or a header's), nor below a watch's
    // start (a client resuming here from a member ahead has seen through it): either would take
    // the client back.
    let floor = this.sentThrough;
    for (const w of this.watchers.values()) floor = Math.max(floor, w.seenThrough);
    if (p.header.revision < floor) p.header = this.backend.header();
    const lagging = (w: WatcherState): boolean => w.handle !== undefined && w.handle.deliveredThrough() < p.header.revision;
    if (p.header.revision < floor || [...this.watchers.values()].some(lagging)) {
      // Looked at again after each write of events, and meanwhile every PROGRESS_RETRY_MS (a
      // watch released with nothing to send writes nothing).
      p.timer ??= setInterval(() => this.tryProgress(), PROGRESS_RETRY_MS).unref();
      return;
    }
    clearInterval(p.timer);
    this.pendingProgress = undefined;
    this.send({ header: cv.header(p.header), watchId: -1 }, 64);
  }
}
