/**
 * Which permission a request needs, as etcd 3.4 decides it (etcdserver/apply_auth.go, with the
 * later 3.4.x hardening): a range reads its keys; a put or delete writes them and, with prev_kv,
 * also reads them; a put with a lease also writes every key already attached to that lease; a
 * txn reads its compared keys and needs what every operation of both branches needs, nested txns
 * included; revoking a lease writes every key attached to it; compaction and auth management
 * need the root role; granting a lease needs only a user. Checked where a request enters and
 * again when it is applied.
 */
import type { AuthState } from './auth.js';
import { KvError } from './errors.js';
import type { KvRequest, RequestOp, TxnRequest } from './types.js';

export function checkRequestPermission(auth: AuthState, user: string | undefined, req: KvRequest, leaseKeys: (id: number) => Uint8Array[]): void {
  if (!auth.enabled) return;
  // Every request needs a user (a lease grant nothing more).
  if (user === undefined || user === '') throw new KvError('USER_EMPTY');
  if ('range' in req) auth.checkKeys(user, false, req.range.key, req.range.rangeEnd);
  else if ('put' in req) checkOp(auth, user, { requestPut: req.put }, leaseKeys);
  else if ('deleteRange' in req) checkOp(auth, user, { requestDeleteRange: req.deleteRange }, leaseKeys);
  else if ('txn' in req) checkTxn(auth, user, req.txn, leaseKeys);
  else if ('compaction' in req || 'auth' in req) auth.checkAdmin(user);
  else if ('leaseRevoke' in req) {
    for (const key of leaseKeys(req.leaseRevoke.ID ?? 0)) auth.checkKeys(user, true, key);
  }
}

/** A client's request as proposed: marked, and under its user's name when auth is on where it entered. */
export function clientRequest(req: KvRequest, user: string | undefined): KvRequest {
  return user === undefined ? { ...req, client: true } : { ...req, client: true, user };
}

type LeaseKeys = (id: number) => Uint8Array[];

function checkTxn(auth: AuthState, user: string | undefined, t: TxnRequest, leaseKeys: LeaseKeys): void {
  for (const c of t.compare ?? []) auth.checkKeys(user, false, c.key, c.rangeEnd);
  for (const op of t.success ?? []) checkOp(auth, user, op, leaseKeys);
  for (const op of t.failure ?? []) checkOp(auth, user, op, leaseKeys);
}

function checkOp(auth: AuthState, user: string | undefined, op: RequestOp, leaseKeys: LeaseKeys): void {
  if (op.requestRange) auth.checkKeys(user, false, op.requestRange.key, op.requestRange.rangeEnd);
  else if (op.requestPut) {
    const p = op.requestPut;
    auth.checkKeys(user, true, p.key);
    if (p.prevKv) auth.checkKeys(user, false, p.key);
    // Joining a lease shares its fate: its holder must be allowed to write what is on it already.
    if (p.lease) for (const key of leaseKeys(p.lease)) auth.checkKeys(user, true, key);
  } else if (op.requestDeleteRange) {
    const d = op.requestDeleteRange;
    auth.checkKeys(user, true, d.key, d.rangeEnd);
    if (d.prevKv) auth.checkKeys(user, false, d.key, d.rangeEnd);
  } else if (op.requestTxn) checkTxn(auth, user, op.requestTxn, leaseKeys);
}
