/** core/storage: the durable Raft log (RaftLogStore) and the disk probes bench/ uses. */
export { RaftLogStore, entryKey, type LogUpdate, type SaveOptions, type RaftLogStoreStats } from './raft-log-store.js';
export { LogMirror, EMPTY_SNAPSHOT_METADATA, type LogOffset } from './log-mirror.js';
export { GroupCommitter, MAX_GROUP_COMMIT_ITEMS, MAX_GROUP_COMMIT_BYTES, type GroupCommitStats } from './group-commit.js';
export { SnapshotFiles, snapshotFileName, MAX_SNAPSHOT_READ_BYTES } from './snapshot-files.js';
export { measureFsyncLatency, measureSaveCost, clampSamples, processWriteBytes, MAX_FSYNC_SAMPLES, type FsyncLatency, type SaveCost } from './disk-probe.js';
export { writeFileDurablySync, fsyncDir, fsyncDirSync } from './durable-file.js';
export { ensurePrivateDir, PRIVATE_DIR_MODE } from './private-dir.js';
export { StorageError, type StorageErrorCode } from './errors.js';
