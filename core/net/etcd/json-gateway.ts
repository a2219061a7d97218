/**
 * etcd's JSON gateway on the client port (etcd serves grpc-gateway beside gRPC), for curl and
 * HTTP-only tools:
 *
 *   curl -X POST http://127.0.0.1:2379/v3/kv/put -d '{"key":"Zm9v","value":"YmFy"}'
 *   curl http://127.0.0.1:2379/version      curl http://127.0.0.1:2379/health      (and /metrics)
 *
 * A request body is the method's request message in protobuf's JSON mapping (the .proto field
 * names or their lowerCamelCase forms; bytes as base64; 64-bit integers as strings or numbers); it
 * is encoded and handed to the same handler a gRPC call reaches (EtcdGrpcServer.invokeUnary), and
 * the response comes back as etcd's gateway writes it: the .proto field names, 64-bit integers
 * as strings, bytes as base64, fields at their default left out. Errors are JSON with the gRPC
 * code and etcd's message, under the HTTP status grpc-gateway maps that code to.
 *
 * `POST /v3/watch` and `POST /v3/lease/keepalive` stream as grpc-gateway does: the body holds one
 * or more requests (JSON values one after another, as Go's json.Decoder reads them), the
 * response is one `{"result": …}` per line: for a watch as long as the client stays connected,
 * for keep-alives one per request, then the response ends (so `curl -d '{"ID":"…"}'
 * …/v3/lease/keepalive` refreshes a lease). The snapshot stream is served on gRPC only.
 */
import { STATUS_CODES, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import type { RequestBytesBudget } from './request-bytes.js';
import { etcdProtoRoot } from '../proto-files.js';
import type { GatewayCaller, GatewayStream, GatewayStreamMethod, GatewayStreamOutput } from './server.js';
import { certUser } from './client-tls.js';

/** What the gateway needs of the gRPC server. */
export interface GatewayBackend {
  invokeUnary(service: string, method: string, request: Uint8Array, who: GatewayCaller): Promise<Buffer>;
  openGatewayStream(method: GatewayStreamMethod, who: GatewayCaller, out: GatewayStreamOutput): GatewayStream;
}

/** `POST /v3/<path>` → etcdserverpb service and method, as etcd 3.4's gateway routes them. */
const ROUTES: Readonly<Record<string, readonly [string, string]>> = {
  'kv/range': ['KV', 'Range'],
  'kv/put': ['KV', 'Put'],
  'kv/deleterange': ['KV', 'DeleteRange'],
  'kv/txn': ['KV', 'Txn'],
  'kv/compaction': ['KV', 'Compact'],
  'lease/grant': ['Lease', 'LeaseGrant'],
  'lease/revoke': ['Lease', 'LeaseRevoke'],
  'kv/lease/revoke': ['Lease', 'LeaseRevoke'],
  'lease/timetolive': ['Lease', 'LeaseTimeToLive'],
  'kv/lease/timetolive': ['Lease', 'LeaseTimeToLive'],
  'lease/leases': ['Lease', 'LeaseLeases'],
  'kv/lease/leases': ['Lease', 'LeaseLeases'],
  'cluster/member/add': ['Cluster', 'MemberAdd'],
  'cluster/member/remove': ['Cluster', 'MemberRemove'],
  'cluster/member/update': ['Cluster', 'MemberUpdate'],
  'cluster/member/list': ['Cluster', 'MemberList'],
  'cluster/member/promote': ['Cluster', 'MemberPromote'],
  'maintenance/alarm': ['Maintenance', 'Alarm'],
  'maintenance/status': ['Maintenance', 'Status'],
  'maintenance/defragment': ['Maintenance', 'Defragment'],
  // etcd 3.4 routes /v3/maintenance/hash to Hash; hashkv is picloud's own (etcd: Not Found).
  'maintenance/hash': ['Maintenance', 'Hash'],
  'maintenance/hashkv': ['Maintenance', 'HashKV'],
  'maintenance/transfer-leadership': ['Maintenance', 'MoveLeader'],
  'auth/enable': ['Auth', 'AuthEnable'],
  'auth/disable': ['Auth', 'AuthDisable'],
  'auth/status': ['Auth', 'AuthStatus'],
  'auth/authenticate': ['Auth', 'Authenticate'],
  'auth/user/add': ['Auth', 'UserAdd'],
  'auth/user/get': ['Auth', 'UserGet'],
  'auth/user/list': ['Auth', 'UserList'],
  'auth/user/delete': ['Auth', 'UserDelete'],
  'auth/user/changepw': ['Auth', 'UserChangePassword'],
  'auth/user/grant': ['Auth', 'UserGrantRole'],
  'auth/user/revoke': ['Auth', 'UserRevokeRole'],
  'auth/role/add': ['Auth', 'RoleAdd'],
  'auth/role/get': ['Auth', 'RoleGet'],
  'auth/role/list': ['Auth', 'RoleList'],
  'auth/role/delete': ['Auth', 'RoleDelete'],
  'auth/role/grant': ['Auth', 'RoleGrantPermission'],
  'auth/role/revoke': ['Auth', 'RoleRevokePermission'],
};
/** `POST /v3/<path>` → the bidirectional streams, served a line of JSON per response. */
const STREAM_ROUTES: Readonly<Record<string, GatewayStreamMethod>> = {
  watch: 'Watch',
  'lease/keepalive': 'LeaseKeepAlive',
};
/**
 * etcd 3.4.23 serves the gateway under these two; /v3alpha/ (etcd3gw 2.0.0's default) is a 404
 * there, so a client set up against picloud must not find it here either.
 */
const PREFIXES = ['/v3/', '/v3beta/'];
/** An HTTP/1 connection with no traffic for this long is closed (watch streams excepted). */
export const GATEWAY_IDLE_TIMEOUT_MS = 60_000;
/**
 * A connection must complete a request's headers this long after it opened or after its last
 * response ended, however slowly it dribbles them (Node's own headersTimeout never runs on a
 * server that is not listening, and the idle timeout restarts with every byte).
 */
export const GATEWAY_HEADERS_TIMEOUT_MS = 60_000;
/** TCP keepalive on a watch stream's connection. */
const WATCH_KEEPALIVE_MS = 30_000;
/** /health's quorum read gives up after this. */
export const HEALTH_TIMEOUT_MS = 3_000;

/** grpc-gateway's HTTP status for each gRPC code. */
const HTTP_STATUS: Readonly<Record<number, number>> = {
  [grpc.status.OK]: 200,
  [grpc.status.CANCELLED]: 408,
  [grpc.status.UNKNOWN]: 500,
  [grpc.status.INVALID_ARGUMENT]: 400,
  [grpc.status.DEADLINE_EXCEEDED]: 504,
  [grpc.status.NOT_FOUND]: 404,
  [grpc.status.ALREADY_EXISTS]: 409,
  [grpc.status.PERMISSION_DENIED]: 403,
  [grpc.status.RESOURCE_EXHAUSTED]: 429,
  [grpc.status.FAILED_PRECONDITION]: 412,
  [grpc.status.ABORTED]: 409,
  [grpc.status.OUT_OF_RANGE]: 400,
  [grpc.status.UNIMPLEMENTED]: 501,
  [grpc.status.INTERNAL]: 500,
  [grpc.status.UNAVAILABLE]: 503,
  [grpc.status.DATA_LOSS]: 500,
  [grpc.status.UNAUTHENTICATED]: 401,
};

class BadRequest extends Error {}

/** Field of `type` named `key` in JSON: the .proto name or its lowerCamelCase form. */
const jsonNames = new WeakMap<protobuf.Type, Map<string, protobuf.Field>>();
function fieldByJsonName(type: protobuf.Type, key: string): protobuf.Field | undefined {
  let names = jsonNames.get(type);
  if (names === undefined) {
    names = new Map();
    for (const f of type.fieldsArray) {
      names.set(f.name, f);
      names.set(protobuf.util.camelCase(f.name), f);
    }
    jsonNames.set(type, names);
  }
  return names.get(key);
}

/** Each protobuf integer type's range, and the Go type etcd's gateway names when a value is outside it. */
const INTEGER_RANGES: ReadonlyMap<string, readonly [bigint, bigint, string]> = new Map(
  (
    [
      [['int32', 'sint32', 'sfixed32'], -(2n ** 31n), 2n ** 31n - 1n, 'int32'],
      [['uint32', 'fixed32'], 0n, 2n ** 32n - 1n, 'uint32'],
      [['int64', 'sint64', 'sfixed64'], -(2n ** 63n), 2n ** 63n - 1n, 'int64'],
      [['uint64', 'fixed64'], 0n, 2n ** 64n - 1n, 'uint64'],
    ] as const
  ).flatMap(([names, min, max, go]) => names.map((n) => [n, [min, max, go] as const] as const)),
);

/** protobufjs' fromObject would quietly turn a JSON value of the wrong kind into the default. */
function checkScalar(field: protobuf.Field, x: unknown, where: string): void {
  const kind = (what: string): BadRequest => new BadRequest(`${where}: expected ${what}, got ${JSON.stringify(x)}`);
  if (field.resolvedType instanceof protobuf.Enum) {
    const values = field.resolvedType.values;
    // etcd's gateway (Go's jsonpb) names the enum by its Go type: etcd clients see that text.
    if (typeof x === 'string' && !Object.hasOwn(values, x)) throw new BadRequest(`unknown value ${JSON.stringify(x)} for enum ${goEnumName(field.resolvedType)}`);
    if (typeof x !== 'string' && !Number.isInteger(x)) throw kind(`one of ${Object.keys(values).join(', ')}`);
  } else if (field.type === 'bytes') {
    if (typeof x !== 'string') throw kind('a base64 string');
  } else if (field.type === 'string') {
    if (typeof x !== 'string') throw kind('a string');
  } else if (field.type === 'bool') {
    if (typeof x !== 'boolean') throw kind('true or false');
  } else if (INTEGER_RANGES.has(field.type)) {
    // A number past 2^53 has already lost digits in JSON.parse: such values come as strings.
    if (!(typeof x === 'number' ? Number.isSafeInteger(x) : typeof x === 'string' && /^-?\d+$/.test(x))) throw kind('an integer (a number up to 2^53, or a decimal string)');
    // protobufjs would wrap one outside the field's range (2^64 + 5 became revision 5).
    const [min, max, goType] = INTEGER_RANGES.get(field.type)!;
    const n = BigInt(x as string | number);
    if (n < min || n > max) throw new BadRequest(`json: cannot unmarshal number ${x} into Go value of type ${goType}`);
  }
}

/** An enum's Go type name, as jsonpb writes it: `.etcdserverpb.RangeRequest.SortOrder` → `etcdserverpb.RangeRequest_SortOrder`. */
function goEnumName(e: protobuf.Enum): string {
  const [pkg, ...nested] = e.fullName.replace(/^\./, '').split('.');
  return `${pkg}.${nested.join('_')}`;
}

/** A JSON value as the plain object protobufjs' fromObject takes for `type` (names mapped, nesting checked). */
function fromJson(type: protobuf.Type, value: unknown, where: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new BadRequest(`${where}: expected a JSON object for ${type.name}`);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    const field = fieldByJsonName(type, key);
    // grpc-gateway (etcd's) ignores fields it does not know, e.g. from a newer client.
    if (field === undefined) continue;
    if (v === null) continue;
    const nested = field.resolvedType instanceof protobuf.Type ? field.resolvedType : undefined;
    if (nested === undefined) for (const x of field.repeated && Array.isArray(v) ? v : [v]) checkScalar(field, x, `${where}.${key}`);
    if (field.repeated) {
      if (!Array.isArray(v)) throw new BadRequest(`${where}.${key}: expected an array`);
      out[field.name] = nested ? v.map((x, i) => fromJson(nested, x, `${where}.${key}[${i}]`)) : v;
    } else {
      out[field.name] = nested ? fromJson(nested, v, `${where}.${key}`) : v;
    }
  }
  return out;
}

/** A request body as the encoded protobuf message `type`; BadRequest with what is wrong. */
export function encodeJsonRequest(type: protobuf.Type, body: string): Uint8Array {
  let parsed: unknown;
  try {
    parsed = body.trim() === '' ? {} : JSON.parse(body);
  } catch (e) {
    throw new BadRequest(`body is not JSON: ${(e as Error).message}`);
  }
  let message: protobuf.Message;
  try {
    message = type.fromObject(fromJson(type, parsed, 'body'));
  } catch (e) {
    if (e instanceof BadRequest) throw e;
    throw new BadRequest(`body: ${(e as Error).message}`);
  }
  const invalid = type.verify(message);
  if (invalid !== null) throw new BadRequest(`body: ${invalid}`);
  return type.encode(message).finish();
}

/** An encoded response message as grpc-gateway's JSON (OrigName, defaults left out). */
export function decodeJsonResponse(type: protobuf.Type, bytes: Uint8Array): string {
  const object = type.toObject(type.decode(bytes), { longs: String, enums: String, bytes: String, defaults: false });
  return JSON.stringify(object);
}

/** Requests of a streamed body checked per turn before the stream starts. */
const GATEWAY_CHECK_SLICE = 2_000;

/**
 * A streamed body's JSON values, read one at a time without splitting the body into an array:
 * each top-level value in turn, whatever the whitespace between them (grpc-gateway reads a
 * client stream with Go's json.Decoder: values back to back, one per line, or pretty-printed).
 * A value's end is found by its brackets and strings; a bare word (a number, `true`) ends at
 * whitespace or at the next value. Whether each is valid JSON is the decoder's to say.
 */
class BodyValues {
  private at = 0;

  constructor(private readonly body: string) {}

  next(): string | undefined {
    const body = this.body;
    let i = this.at;
    while (i < body.length && isJsonSpace(body.charCodeAt(i))) i++;
    if (i >= body.length) {
      this.at = i;
      return undefined;
    }
    const start = i;
    const first = body[i];
    if (first === '{' || first === '[' || first === '"') {
      let depth = 0;
      let inString = false;
      for (; i < body.length; i++) {
        const c = body[i];
        if (inString) {
          if (c === '\\') i++;
          else if (c === '"') {
            inString = false;
            if (depth === 0) break;
          }
        } else if (c === '"') inString = true;
        else if (c === '{' || c === '[') depth++;
        else if ((c === '}' || c === ']') && --depth === 0) break;
      }
      this.at = Math.min(i + 1, body.length);
    } else {
      while (i < body.length && !isJsonSpace(body.charCodeAt(i)) && body[i] !== '{' && body[i] !== '[' && body[i] !== '"') i++;
      this.at = i;
    }
    return body.slice(start, this.at);
  }

  rewind(): void {
    this.at = 0;
  }
}

/** JSON's whitespace: space, tab, line feed, carriage return. */
function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, code: grpc.status, message: string): void {
  send(res, HTTP_STATUS[code] ?? 500, { error: message, message, code });
}

/**
 * A path or method the gateway does not serve, answered as etcd 3.4's HTTP server does (Go's
 * http.Error: a line of plain text): "404 page not found" outside the gateway's prefixes,
 * grpc-gateway's "Not Found" and "Method Not Allowed" under them.
 */
function sendPlain(res: ServerResponse, status: number, text: string): void {
  const body = `${text}\n`;
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** How a request without a valid user is refused. */
const AUTH_REFUSALS = new Set<number>([grpc.status.INVALID_ARGUMENT, grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED]);

/**
 * Who a gateway request comes from: its address, its auth token (etcd's gateway takes it from
 * the Authorization header) and the user its verified client certificate names.
 */
function caller(req: IncomingMessage, res: ServerResponse): GatewayCaller {
  // grpc-gateway passes `Grpc-Metadata-Token` on as the gRPC metadata "token" too.
  const v = req.headers.authorization ?? req.headers['grpc-metadata-token'];
  const token = typeof v === 'string' && v !== '' ? v : undefined;
  const user = certUser(req.socket);
  return {
    peer: `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? 0}`,
    ...(token === undefined ? {} : { token }),
    ...(user === undefined ? {} : { certUser: user }),
    // As etcd's gateway cancels the call when its HTTP client goes: a write not yet proposed is dropped.
    wanted: () => !res.destroyed && !req.socket.destroyed,
  };
}

/**
 * A request a web browser sent on a page's behalf (it carries an Origin header): refused. With
 * auth off (the default) any page a user opens, or one that rebinds its own name to a board's
 * address, could otherwise write and delete keys with a form-style POST that needs no CORS
 * preflight. etcd answers `Access-Control-Allow-Origin: *` by default; picloud serves no
 * browser clients on the client port (curl, etcd3gw and scripts send no Origin).
 */
function fromBrowser(req: IncomingMessage): boolean {
  return req.headers.origin !== undefined;
}

function isStatus(e: unknown): e is { code: grpc.status; details: string } {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'number' && typeof (e as { details?: unknown }).details === 'string';
}

/** Why a request body was not read. */
interface BodyRefused {
  refused: 'too large' | 'no room';
}
const TOO_LARGE: BodyRefused = { refused: 'too large' };
const NO_ROOM: BodyRefused = { refused: 'no room' };

/** The client closed its connection before its request body ended. */
class ClientGoneError extends Error {
  constructor() {
    super('client left before the request body ended');
  }
}

/** The gateway: an HTTP/1.1 server that is never listened on; the client port hands it connections. */
export class JsonGateway {
  readonly server: Server;
  private readonly root = etcdProtoRoot(true);
  private readonly sockets = new Set<Duplex>();
  /** Each connection's deadline for its next request's headers. */
  private readonly headerDeadlines = new Map<Duplex, NodeJS.Timeout>();
  /** Requests of each connection not yet answered in full (HTTP/1.1 pipelining may queue several). */
  private readonly inProgress = new Map<Duplex, number>();

  constructor(
    private readonly invoker: GatewayBackend,
    /** Largest request body accepted (base64 makes a message's bytes 4/3 larger in JSON). */
    private readonly maxBodyBytes: number,
    private readonly version: { etcdserver: string; etcdcluster: string },
    private readonly metrics?: () => Promise<{ contentType: string; body: string }>,
    onInternalError?: (err: unknown) => void,
    private readonly headersTimeoutMs = GATEWAY_HEADERS_TIMEOUT_MS,
    /** The client port's bound on request bytes held before they are whole, shared with gRPC. */
    private readonly requestBytes?: RequestBytesBudget,
  ) {
    this.server = createServer((req, res) => {
      const socket = req.socket;
      this.headersArrived(socket);
      this.inProgress.set(socket, (this.inProgress.get(socket) ?? 0) + 1);
      // The next request's headers are awaited once none is in progress: a watch pipelined
      // behind another request has its headers in already, and must not be cut when the
      // first one's response ends.
      res.once('close', () => {
        const left = (this.inProgress.get(socket) ?? 1) - 1;
        if (left > 0) this.inProgress.set(socket, left);
        else this.inProgress.delete(socket);
        if (left <= 0 && !socket.destroyed) this.awaitHeaders(socket);
      });
      this.handle(req, res).catch((e: unknown) => {
        // A client gone mid-request is nobody's error: nothing to answer, nothing to log.
        if (e instanceof ClientGoneError) {
          res.destroy();
          return;
        }
        onInternalError?.(e);
        if (!res.headersSent) sendError(res, grpc.status.INTERNAL, 'picloud: internal error');
        else res.destroy();
      });
    });
    // The server is never listened on, so Node's header and request deadlines do not run:
    // an idle or dribbling connection is closed after this (a watch turns it off for itself).
    this.server.timeout = GATEWAY_IDLE_TIMEOUT_MS;
    this.server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Takes a connection whose first bytes (already read back into it) are HTTP/1. */
  injectConnection(socket: Duplex): void {
    this.sockets.add(socket);
    this.awaitHeaders(socket);
    socket.once('close', () => {
      this.headersArrived(socket);
      this.inProgress.delete(socket);
      this.sockets.delete(socket);
    });
    this.server.emit('connection', socket);
  }

  /** Starts the deadline for `socket`'s next request headers (GATEWAY_HEADERS_TIMEOUT_MS). */
  private awaitHeaders(socket: Duplex): void {
    clearTimeout(this.headerDeadlines.get(socket));
    const timer = setTimeout(() => socket.destroy(), this.headersTimeoutMs);
    timer.unref();
    this.headerDeadlines.set(socket, timer);
  }

  private headersArrived(socket: Duplex): void {
    clearTimeout(this.headerDeadlines.get(socket));
    this.headerDeadlines.delete(socket);
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/version' && req.method === 'GET') return send(res, 200, this.version);
    if (path === '/health') return req.method === 'GET' ? this.health(res, req.socket.remoteAddress ?? '') : sendPlain(res, 405, 'Method Not Allowed');
    if (path === '/metrics' && req.method === 'GET' && this.metrics !== undefined) {
      const m = await this.metrics();
      res.writeHead(200, { 'content-type': m.contentType });
      res.end(m.body);
      return;
    }
    const prefix = PREFIXES.find((p) => path.startsWith(p));
    if (prefix === undefined) return sendPlain(res, 404, '404 page not found');
    const name = path.slice(prefix.length);
    // Own properties only: "/v3/constructor" is not a route.
    const streamed = Object.hasOwn(STREAM_ROUTES, name) ? STREAM_ROUTES[name] : undefined;
    const route = Object.hasOwn(ROUTES, name) ? ROUTES[name] : undefined;
    if (streamed === undefined && route === undefined) return sendPlain(res, 404, 'Not Found');
    if (req.method !== 'POST') return sendPlain(res, 405, 'Method Not Allowed');
    if (fromBrowser(req)) return sendError(res, grpc.status.PERMISSION_DENIED, 'picloud: requests from web pages (with an Origin header) are refused on the client port');
    if (streamed !== undefined) return this.stream(streamed, req, res);
    const body = await this.readBody(req);
    if (typeof body !== 'string') return this.refuseBody(res, body.refused);
    const [service, method] = route!;
    const methodDef = this.root.lookupService(`etcdserverpb.${service}`).methods[method]!;
    let request: Uint8Array;
    try {
      request = encodeJsonRequest(this.root.lookupType(methodDef.requestType), body);
    } catch (e) {
      if (e instanceof BadRequest) return sendError(res, grpc.status.INVALID_ARGUMENT, e.message);
      throw e;
    }
    try {
      const response = await this.invoker.invokeUnary(service, method, request, caller(req, res));
      send(res, 200, decodeJsonResponse(this.root.lookupType(methodDef.responseType), response));
    } catch (e) {
      if (!isStatus(e)) throw e;
      sendError(res, e.code, e.details);
    }
  }

  /**
   * `POST /v3/watch`: WatchRequests in, a line of JSON per WatchResponse out until the client
   * leaves. `POST /v3/lease/keepalive`: a line per keep-alive request, then the end.
   */
  private async stream(method: GatewayStreamMethod, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await this.readBody(req);
    if (typeof body !== 'string') return this.refuseBody(res, body.refused);
    const methodDef = this.root.lookupService(method === 'Watch' ? 'etcdserverpb.Watch' : 'etcdserverpb.Lease').methods[method]!;
    const requestType = this.root.lookupType(methodDef.requestType);
    const responseType = this.root.lookupType(methodDef.responseType);
    // The body's requests, one JSON value after another.
    const values = new BodyValues(body);
    // Watchers this body creates: the response ends once every one of them is cancelled.
    let live = 0;
    try {
      // Each checked now (a malformed one is refused before any is sent), a slice per turn: a
      // body of ~870,000 lines took ~2 s of one turn. Encoded again as the stream reads it, so
      // neither the encoded requests nor the lines are all held at once.
      for (let n = 1, v = values.next(); v !== undefined; n++, v = values.next()) {
        const r = encodeJsonRequest(requestType, v);
        if (method === 'Watch' && (requestType.decode(r) as unknown as { create_request?: unknown }).create_request != null) live++;
        if (n % GATEWAY_CHECK_SLICE === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    } catch (e) {
      if (e instanceof BadRequest) return sendError(res, grpc.status.INVALID_ARGUMENT, e.message);
      throw e;
    }
    if (res.destroyed || req.socket.destroyed) return; // the client left meanwhile
    values.rewind();
    const watch = method === 'Watch';
    // An HTTP client cannot add watchers once its body is sent: when the last one is cancelled
    // (compacted start, too slow, refused), the response ends.
    // Once the response has ended nothing more may be written (Node would emit an error on
    // `res`): a later watcher's answer, or an event racing the end, is dropped.
    const ended = (): boolean => res.writableEnded || res.destroyed;
    const stream = this.invoker.openGatewayStream(method, caller(req, res), {
      write: (bytes, sent) => {
        if (ended()) {
          sent();
          return true;
        }
        const json = decodeJsonResponse(responseType, bytes);
        const taken = res.write(`{"result":${json}}\n`, () => sent());
        if (!watch) return taken;
        const r = JSON.parse(json) as { canceled?: boolean };
        if (r.canceled === true && --live <= 0) {
          res.end();
          stream.close();
        }
        return taken;
      },
      end: () => {
        if (!ended()) res.end();
      },
      fail: (status) => {
        if (ended()) return;
        const httpCode = HTTP_STATUS[status.code] ?? 500;
        // A stream refused before it began (a learner's) gets its status, as from grpc-gateway.
        if (!res.headersSent) res.writeHead(httpCode, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify({ error: { grpc_code: status.code, http_code: httpCode, message: status.details, http_status: STATUS_CODES[httpCode] } })}\n`);
      },
    });
    // A socket error after the client left must not become an uncaught 'error' event.
    res.on('error', () => stream.close());
    res.once('close', () => stream.close());
    res.on('drain', () => stream.drained());
    if (ended()) return; // refused at once
    // Opened: the headers go now, not with the first response (a watch may stay quiet for long).
    res.writeHead(200, { 'content-type': 'application/json' });
    res.flushHeaders();
    if (watch) {
      // No idle timeout either: TCP keepalive finds a vanished client.
      req.socket.setTimeout(0);
      req.socket.setKeepAlive(true, WATCH_KEEPALIVE_MS);
    }
    stream.requests(() => {
      const v = values.next();
      return v === undefined ? undefined : encodeJsonRequest(requestType, v);
    });
    // grpc-gateway half-closes once the body is read. A watch goes on regardless (as etcd's
    // does on EOF); the keep-alive stream answers what it got, then ends the response.
    if (!watch) stream.endRequests();
  }

  /** The rest of a body not read (oversized, or no room to hold it): answer, then close the connection. */
  private refuseBody(res: ServerResponse, why: BodyRefused['refused']): void {
    res.setHeader('connection', 'close');
    if (why === 'too large') sendError(res, grpc.status.RESOURCE_EXHAUSTED, `request body larger than ${this.maxBodyBytes} bytes`);
    else sendError(res, grpc.status.RESOURCE_EXHAUSTED, 'picloud: too many requests waiting for room to read their bodies');
  }

  /**
   * The body as text; TOO_LARGE once it outgrows the limit, NO_ROOM when the client port
   * holds too much already (request-bytes.ts: the body's declared length, or the limit when it
   * declares none, is reserved before it is read, and released once it is whole; the rest is
   * not read either way); ClientGoneError if the client leaves first.
   */
  private async readBody(req: IncomingMessage): Promise<string | BodyRefused> {
    const declared = req.headers['content-length'] === undefined ? NaN : Number(req.headers['content-length']);
    if (declared > this.maxBodyBytes) return TOO_LARGE;
    const bytes = Number.isSafeInteger(declared) && declared >= 0 ? declared : this.maxBodyBytes;
    if (this.requestBytes === undefined || bytes === 0) return this.readWholeBody(req);
    const budget = this.requestBytes;
    const reservation = budget.reserve(req.socket, bytes);
    const release = (): void => reservation.release();
    req.once('close', release);
    let deadline: NodeJS.Timeout | undefined;
    try {
      if (!(await reservation.admitted)) {
        if (req.destroyed) throw new ClientGoneError();
        return NO_ROOM;
      }
      // Room others wait for: a body dribbled in slower than MIN_REQUEST_BYTES_PER_SEC loses
      // its connection (and the room), as a gRPC stream's message is reset.
      deadline = setTimeout(() => {
        budget.tooSlowStreams++;
        req.socket.destroy();
      }, budget.deadlineMs(bytes));
      return await this.readWholeBody(req);
    } finally {
      clearTimeout(deadline);
      release();
      req.removeListener('close', release);
    }
  }

  private readWholeBody(req: IncomingMessage): Promise<string | BodyRefused> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > this.maxBodyBytes) {
          req.removeAllListeners('data');
          req.pause();
          resolve(TOO_LARGE);
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      // A request's only errors are its connection's (Node's 'aborted'). A client that leaves
      // mid-body: nothing to answer (a no-op once 'end' has resolved).
      req.on('error', () => reject(new ClientGoneError()));
      req.on('close', () => reject(new ClientGoneError()));
    });
  }

  /** As etcd's /health: no alarm raised, and a quorum read answers in time. */
  private async health(res: ServerResponse, peer: string): Promise<void> {
    const call = async (service: string, method: string, body: object): Promise<Record<string, unknown>> => {
      const def = this.root.lookupService(`etcdserverpb.${service}`).methods[method]!;
      const bytes = await this.invoker.invokeUnary(service, method, encodeJsonRequest(this.root.lookupType(def.requestType), JSON.stringify(body)), { peer, self: true });
      return JSON.parse(decodeJsonResponse(this.root.lookupType(def.responseType), bytes)) as Record<string, unknown>;
    };
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timed out')), HEALTH_TIMEOUT_MS)));
    try {
      const alarms = await Promise.race([call('Maintenance', 'Alarm', { action: 'GET' }), timeout]);
      if (Array.isArray(alarms.alarms) && alarms.alarms.length > 0) return send(res, 503, { health: 'false', reason: 'alarm raised' });
      // With auth enabled the range is refused before its quorum read (etcd counts that as
      // healthy): AuthStatus makes the same quorum read and needs no user.
      await Promise.race([
        call('KV', 'Range', { key: Buffer.from('health').toString('base64') }).catch((e: unknown) => {
          if (isStatus(e) && AUTH_REFUSALS.has(e.code)) return call('Auth', 'AuthStatus', {});
          throw e;
        }),
        timeout,
      ]);
      send(res, 200, { health: 'true' });
    } catch (e) {
      send(res, 503, { health: 'false', reason: isStatus(e) ? e.details : (e as Error).message });
    } finally {
      clearTimeout(timer);
    }
  }
}
