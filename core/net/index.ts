/** core/net: the peer transport, join handshake, tokens, framing, and the etcd v3 gRPC front end. */
export * from './errors.js';
export * from './address.js';
export * from './frame.js';
export * from './token.js';
export * from './raft-codec.js';
export * from './handshake.js';
export * from './secure-channel.js';
export * from './peer-transport.js';
export * from './join.js';
export { PROTO_DIR, ETCD_PROTO_DIR, ETCD_RPC_PROTO } from './proto-files.js';
export * from './etcd/errors.js';
export type * from './etcd/service.js';
export * from './etcd/server.js';
export { readSnapshotFile, framedSnapshotBytes, SnapshotFileError } from './etcd/snapshot-file.js';
