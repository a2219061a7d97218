/**
 * Finds the .proto files shipped in proto/ and loads them once with protobufjs.
 * Responsible only for locating and parsing the schema; codecs live beside their users.
 */
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const here = dirname(fileURLToPath(import.meta.url));

/**
 * proto/ sits at the package root. Compiled code runs from dist/core/net, sources from
 * core/net, so look two and three levels up.
 */
export const PROTO_DIR: string = (() => {
  for (const candidate of [join(here, '..', '..', '..', 'proto'), join(here, '..', '..', 'proto')]) {
    if (existsSync(join(candidate, 'raft.proto'))) return candidate;
  }
  throw new Error(`picloud: proto/ directory not found near ${here}`);
})();

/** Include path for the etcd API protos (imports are written as "mvccpb/kv.proto"). */
export const ETCD_PROTO_DIR: string = join(PROTO_DIR, 'etcd');
export const ETCD_RPC_PROTO: string = join(ETCD_PROTO_DIR, 'etcdserverpb', 'rpc.proto');

let peerRoot: protobuf.Root | undefined;

/** proto/raft.proto and proto/peer.proto in one root (package picloud.raft and picloud.peer). */
export function peerProtoRoot(): protobuf.Root {
  if (peerRoot === undefined) {
    const root = new protobuf.Root();
    root.loadSync([join(PROTO_DIR, 'raft.proto'), join(PROTO_DIR, 'peer.proto')], { keepCase: false });
    root.resolveAll();
    peerRoot = root;
  }
  return peerRoot;
}

export function peerType(name: string): protobuf.Type {
  return peerProtoRoot().lookupType(name);
}

const etcdRoots = new Map<boolean, protobuf.Root>();

/** The etcd v3 API protos (etcdserverpb and mvccpb); `keepCase`: the .proto's own field names. */
export function etcdProtoRoot(keepCase = false): protobuf.Root {
  let root = etcdRoots.get(keepCase);
  if (root === undefined) {
    root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (isAbsolute(target) ? target : join(ETCD_PROTO_DIR, target));
    root.loadSync(ETCD_RPC_PROTO, { keepCase });
    root.resolveAll();
    etcdRoots.set(keepCase, root);
  }
  return root;
}

/** An etcd API message type, for encoders that bypass the generic object mapping. */
export function etcdType(name: string): protobuf.Type {
  return etcdProtoRoot().lookupType(name);
}
