/**
 * The deterministic cluster simulator: N real Raft nodes in one process under virtual time,
 * a faulty network, crashing disks and drifting clocks, all from one seed; plus the checkers
 * (Raft safety, linearizability, liveness) that judge a run. The linearizability checker's
 * input (HistoryOp) is independent of the simulator, for histories recorded from real agents.
 */
export { runSeed, replayCommand, TRACE_LINES_ON_VIOLATION, MAX_PEER_MESSAGES_PER_VIRTUAL_SECOND, type SeedResult, type SeedStats, type SeedConfig } from './cluster.js';
export { DEFAULT_SIM_OPTIONS, FAULT_MODES, CLIENT_ENDPOINT_BASE, MAX_NODES, MAX_CLIENTS, resolveOptions, type SimOptions, type FaultMode, type BugVariant } from './options.js';
export { checkLinearizability, DEFAULT_LIN_STEP_BUDGET, type LinVerdict, type KeyCheck, type LinearizabilityResult, type LinearizabilityOptions } from './linearizability.js';
export { HistoryRecorder, describeOp, type HistoryOp, type OpKind, type OpStatus, type OpInput, type OpOutput } from './history.js';
export { RaftSafetyChecker, MAX_VIOLATIONS_RECORDED, type Violation, type Invariant, type LogView } from './safety.js';
export { SimNetwork, RELIABLE_NETWORK, MAX_ENDPOINT, type NetworkProfile, type NetworkStats, type Endpoint } from './network.js';
export { SimDisk, STEADY_DISK, type DiskProfile, type DiskImage, type DiskWrite, type DiskStats } from './disk.js';
export { EventQueue, MAX_PENDING_EVENTS } from './events.js';
export { KvStateMachine, encodeKvCommand, decodeKvCommand, MAX_KEY_BYTES, MAX_VALUE_BYTES, type KvCommand, type KvResult } from './kv.js';
export { planFaults, pickPartition, NO_FAULTS, type FaultPlan, type PartitionShape } from './faults.js';
export { SimError, type SimErrorCode } from './errors.js';
export { Prng, type RandomSource } from './prng.js';
