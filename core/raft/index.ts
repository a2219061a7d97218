/** Raft consensus as a pure state machine. See rawnode.ts for the embedding API. */
export * from './types.js';
export * from './errors.js';
export { applyToConfState, decodeConfChange, encodeConfChange } from './confchange.js';
export { MemoryStorage, bootstrap, bootstrapEntries, type Storage } from './storage.js';
export { RaftLog } from './log.js';
export { Progress, ProgressState, ProgressTracker, quorumSize } from './progress.js';
export { Raft, DEFAULT_RAFT_CONFIG, CAMPAIGN_TRANSFER, type RaftConfig } from './raft.js';
export { RawNode, type RaftClass, type RaftStatus, type RawNodeConfig } from './rawnode.js';
