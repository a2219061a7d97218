/**
 * The codec of KvRequest, the data of a Raft entry: CBOR (cbor-x) of a canonical form.
 *
 * - encode is lenient about its input (protobufjs/proto-loader objects with virtual oneof
 *   fields, int64 as number, bigint, decimal string or Long) and writes only known, non-default
 *   fields; it refuses a request larger than MAX_REQUEST_BYTES (etcd's "request is too large").
 * - decode is strict: exactly the canonical shapes, safe integers, byte strings, bounded size
 *   and nesting. Anything else is a KvError MALFORMED_REQUEST (or REQUEST_TOO_LARGE); it never
 *   throws anything else, whatever the bytes.
 *
 * Decoded byte arrays are views into the input; the store copies what it keeps.
 */
import { Decoder, Encoder } from 'cbor-x';
import { KvError } from './errors.js';
import { MAX_REQUEST_BYTES, MAX_TXN_DEPTH } from './limits.js';
import type { KvRequest } from './types.js';

type Kind = 'bytes' | 'int' | 'bool' | 'string' | { msg: () => Schema } | { list: () => Schema };
interface Schema {
  name: string;
  fields: Record<string, Kind>;
  /** At most one field set (protobuf oneof). */
  oneof?: boolean;
  /** With oneof: exactly one. */
  oneofRequired?: boolean;
}

const RANGE: Schema = {
  name: 'RangeRequest',
  fields: {
    key: 'bytes',
    rangeEnd: 'bytes',
    limit: 'int',
    revision: 'int',
    sortOrder: 'int',
    sortTarget: 'int',
    serializable: 'bool',
    keysOnly: 'bool',
    countOnly: 'bool',
    minModRevision: 'int',
    maxModRevision: 'int',
    minCreateRevision: 'int',
    maxCreateRevision: 'int',
  },
};
const PUT: Schema = {
  name: 'PutRequest',
  fields: { key: 'bytes', value: 'bytes', lease: 'int', prevKv: 'bool', ignoreValue: 'bool', ignoreLease: 'bool' },
};
const DELETE: Schema = { name: 'DeleteRangeRequest', fields: { key: 'bytes', rangeEnd: 'bytes', prevKv: 'bool' } };
const COMPARE: Schema = {
  name: 'Compare',
  fields: {
    result: 'int',
    target: 'int',
    key: 'bytes',
    rangeEnd: 'bytes',
    version: 'int',
    createRevision: 'int',
    modRevision: 'int',
    value: 'bytes',
    lease: 'int',
  },
};
const REQUEST_OP: Schema = {
  name: 'RequestOp',
  oneof: true,
  fields: {
    requestRange: { msg: () => RANGE },
    requestPut: { msg: () => PUT },
    requestDeleteRange: { msg: () => DELETE },
    requestTxn: { msg: () => TXN },
  },
};
const TXN: Schema = {
  name: 'TxnRequest',
  fields: { compare: { list: () => COMPARE }, success: { list: () => REQUEST_OP }, failure: { list: () => REQUEST_OP } },
};
const COMPACTION: Schema = { name: 'CompactionRequest', fields: { revision: 'int', physical: 'bool' } };
const LEASE_GRANT: Schema = { name: 'LeaseGrantRequest', fields: { TTL: 'int', ID: 'int' } };
const LEASE_REVOKE: Schema = { name: 'LeaseRevokeRequest', fields: { ID: 'int' } };

const EMPTY_MSG: Schema = { name: 'Empty', fields: {} };
const NAMED: Schema = { name: 'Named', fields: { name: 'string' } };
const NAMED_ROLE: Schema = { name: 'UserRole', fields: { name: 'string', role: 'string' } };
const AUTH: Schema = {
  name: 'AuthRequest',
  oneof: true,
  oneofRequired: true,
  fields: {
    authEnable: { msg: () => EMPTY_MSG },
    authDisable: { msg: () => EMPTY_MSG },
    userAdd: { msg: () => ({ name: 'UserAdd', fields: { name: 'string', password: 'bytes', noPassword: 'bool' } }) },
    userDelete: { msg: () => NAMED },
    userChangePassword: { msg: () => ({ name: 'UserChangePassword', fields: { name: 'string', password: 'bytes' } }) },
    userGrantRole: { msg: () => NAMED_ROLE },
    userRevokeRole: { msg: () => NAMED_ROLE },
    roleAdd: { msg: () => NAMED },
    roleDelete: { msg: () => NAMED },
    roleGrantPermission: { msg: () => ({ name: 'RoleGrantPermission', fields: { name: 'string', permType: 'int', key: 'bytes', rangeEnd: 'bytes' } }) },
    roleRevokePermission: { msg: () => ({ name: 'RoleRevokePermission', fields: { name: 'string', key: 'bytes', rangeEnd: 'bytes' } }) },
  },
};

/**
 * One request field; `client` (a client's request, not a member's own) and `user` (with auth
 * enabled, the client's user name) let the state machine check its permission again when it is
 * applied.
 */
const TOP: Schema = {
  name: 'KvRequest',
  oneof: true,
  fields: {
    client: 'bool',
    user: 'string',
    auth: { msg: () => AUTH },
    range: { msg: () => RANGE },
    put: { msg: () => PUT },
    deleteRange: { msg: () => DELETE },
    txn: { msg: () => TXN },
    compaction: { msg: () => COMPACTION },
    leaseGrant: { msg: () => LEASE_GRANT },
    leaseRevoke: { msg: () => LEASE_REVOKE },
  },
};

/** Messages nest TxnRequest → RequestOp → TxnRequest: two levels per txn depth, plus the top. */
const MAX_MESSAGE_DEPTH = 2 * MAX_TXN_DEPTH + 4;

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

function malformed(detail: string): KvError {
  return new KvError('MALFORMED_REQUEST', detail);
}

// ---------------------------------------------------------------- encode

function toSafeInt(v: unknown, where: string): number {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'bigint') n = Number(v);
  else if (typeof v === 'string' && /^-?\d+$/.test(v)) n = Number(v);
  else if (typeof v === 'object' && v !== null && typeof (v as { toNumber?: unknown }).toNumber === 'function') {
    n = (v as { toNumber(): number }).toNumber(); // protobufjs Long
  } else throw malformed(`${where}: not an integer`);
  if (!Number.isSafeInteger(n)) throw malformed(`${where}: outside ±2^53`);
  if (typeof v === 'bigint' && BigInt(n) !== v) throw malformed(`${where}: outside ±2^53`);
  return n;
}

/** Each schema's fields as a list, made once: canonical() runs for every proposed request. */
const fieldLists = new WeakMap<Schema, Array<[string, Kind]>>();
function fieldList(schema: Schema): Array<[string, Kind]> {
  let list = fieldLists.get(schema);
  if (list === undefined) {
    list = Object.entries(schema.fields);
    fieldLists.set(schema, list);
  }
  return list;
}

function canonical(src: unknown, schema: Schema, depth: number): Record<string, unknown> {
  if (depth > MAX_MESSAGE_DEPTH) throw new KvError('TXN_TOO_DEEP');
  if (typeof src !== 'object' || src === null || Array.isArray(src)) throw malformed(`${schema.name}: not an object`);
  const obj = src as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  let set = 0;
  for (const [field, kind] of fieldList(schema)) {
    const v = obj[field];
    if (v === undefined || v === null) continue;
    if (kind === 'bytes') {
      if (!(v instanceof Uint8Array)) throw malformed(`${schema.name}.${field}: not bytes`);
      if (v.byteLength > 0) out[field] = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    } else if (kind === 'int') {
      const n = typeof v === 'number' && Number.isSafeInteger(v) ? v : toSafeInt(v, `${schema.name}.${field}`);
      if (n !== 0) out[field] = n;
    } else if (kind === 'bool') {
      if (typeof v !== 'boolean') throw malformed(`${schema.name}.${field}: not a boolean`);
      if (v) out[field] = true;
    } else if (kind === 'string') {
      if (typeof v !== 'string') throw malformed(`${schema.name}.${field}: not a string`);
      if (v !== '') out[field] = v;
    } else if ('msg' in kind) {
      out[field] = canonical(v, kind.msg(), depth + 1);
      set++;
    } else {
      if (!Array.isArray(v)) throw malformed(`${schema.name}.${field}: not a list`);
      if (v.length > 0) out[field] = v.map((e) => canonical(e, kind.list(), depth + 1));
    }
  }
  if (schema.oneof && set > 1) throw malformed(`${schema.name}: more than one field set`);
  if (schema.oneofRequired && set === 0) throw malformed(`${schema.name}: no field set`);
  return out;
}

/** The request fields of a top-level request (every field but `client` and `user`). */
function requestFields(o: object): number {
  let n = 0;
  for (const k of Object.keys(o)) if (k !== 'user' && k !== 'client') n++;
  return n;
}

/**
 * Encodes a request for the Raft log. Throws KvError: REQUEST_TOO_LARGE above `maxBytes`,
 * MALFORMED_REQUEST for a shape that is not a KvRequest.
 */
export function encodeKvRequest(req: KvRequest, maxBytes: number = MAX_REQUEST_BYTES): Buffer {
  const c = canonical(req, TOP, 0);
  if (requestFields(c) !== 1) throw malformed('KvRequest: exactly one request expected');
  const bytes = encoder.encode(c);
  if (bytes.byteLength > maxBytes) throw new KvError('REQUEST_TOO_LARGE', `${bytes.byteLength} > ${maxBytes} bytes`);
  return bytes;
}

// ---------------------------------------------------------------- decode

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

function validate(v: unknown, schema: Schema, depth: number): void {
  if (depth > MAX_MESSAGE_DEPTH) throw malformed('nesting too deep');
  if (!isPlainObject(v)) throw malformed(`${schema.name}: not a map`);
  let set = 0;
  for (const field of Object.keys(v)) {
    const kind = schema.fields[field];
    if (kind === undefined || !Object.prototype.hasOwnProperty.call(schema.fields, field)) {
      throw malformed(`${schema.name}: unknown field ${JSON.stringify(field.slice(0, 40))}`);
    }
    const x = v[field];
    const where = `${schema.name}.${field}`;
    if (kind === 'bytes') {
      if (!(x instanceof Uint8Array)) throw malformed(`${where}: not bytes`);
    } else if (kind === 'int') {
      if (typeof x !== 'number' || !Number.isSafeInteger(x)) throw malformed(`${where}: not a safe integer`);
    } else if (kind === 'bool') {
      if (typeof x !== 'boolean') throw malformed(`${where}: not a boolean`);
    } else if (kind === 'string') {
      if (typeof x !== 'string') throw malformed(`${where}: not a string`);
    } else if ('msg' in kind) {
      validate(x, kind.msg(), depth + 1);
      set++;
    } else {
      if (!Array.isArray(x)) throw malformed(`${where}: not a list`);
      for (const e of x) validate(e, kind.list(), depth + 1);
    }
  }
  if (schema.oneof && set > 1) throw malformed(`${schema.name}: more than one field set`);
  if (schema.oneofRequired && set === 0) throw malformed(`${schema.name}: no field set`);
}

/** Decodes entry data. Throws only KvError (MALFORMED_REQUEST or REQUEST_TOO_LARGE). */
export function decodeKvRequest(bytes: Uint8Array, maxBytes: number = MAX_REQUEST_BYTES): KvRequest {
  if (!(bytes instanceof Uint8Array)) throw malformed('entry data is not bytes');
  if (bytes.byteLength > maxBytes) throw new KvError('REQUEST_TOO_LARGE', `${bytes.byteLength} > ${maxBytes} bytes`);
  if (bytes.byteLength === 0) throw malformed('empty entry data');
  let v: unknown;
  try {
    v = decoder.decode(bytes);
  } catch (e) {
    throw malformed(`not CBOR: ${e instanceof Error ? e.message.slice(0, 80) : 'decode failed'}`);
  }
  try {
    validate(v, TOP, 0);
  } catch (e) {
    if (e instanceof KvError) throw e;
    throw malformed('invalid structure'); // e.g. a stack overflow on a hostile nesting
  }
  if (requestFields(v as object) !== 1) throw malformed('KvRequest: exactly one request expected');
  return v as KvRequest;
}
