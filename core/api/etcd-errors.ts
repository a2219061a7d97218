/**
 * core/kv's and the Raft driver's errors as the etcd API's (EtcdError: gRPC status and etcd's
 * message), for the backends that answer the client port.
 */
import * as kv from '../kv/index.js';
import { EtcdError, type EtcdErrorCode, ETCD_ERRORS } from '../net/etcd/errors.js';
import { RaftDriverError } from './raft-driver.js';

/** KvError codes whose etcd name differs; the rest map by name or to INVALID_ARGUMENT. */
const KV_TO_ETCD: Partial<Record<kv.KvErrorCode, EtcdErrorCode>> = {
  LEASE_EXISTS: 'LEASE_EXIST',
  TOO_MANY_WATCHERS: 'TOO_MANY_WATCHERS',
  STREAM_UNSUPPORTED: 'UNSUPPORTED',
};

export function toEtcdError(err: unknown): unknown {
  if (err instanceof EtcdError) return err;
  if (err instanceof kv.KvError) {
    const mapped = KV_TO_ETCD[err.code] ?? (err.code in ETCD_ERRORS ? (err.code as EtcdErrorCode) : undefined);
    if (mapped) return new EtcdError(mapped);
    return new EtcdError('INVALID_ARGUMENT', err.message);
  }
  if (err instanceof RaftDriverError) {
    switch (err.code) {
      case 'TIMEOUT':
        return new EtcdError('TIMEOUT');
      case 'LEADER_CHANGED':
        return new EtcdError('LEADER_CHANGED');
      case 'STOPPED':
        return new EtcdError('STOPPED');
      case 'DROPPED':
        return new EtcdError('NO_LEADER');
    }
  }
  return err;
}

export function etcdErrorsSync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw toEtcdError(e);
  }
}

export async function etcdErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toEtcdError(e);
  }
}
