/** Typed errors of the simulator, with stable codes. A SimError means the harness or a model was misused. */
export type SimErrorCode =
  | 'SIM_QUEUE_OVERFLOW' // more pending events than MAX_PENDING_EVENTS: a runaway loop
  | 'SIM_TIME_TRAVEL' // an event scheduled in the past
  | 'SIM_DISK_INVARIANT' // a write the disk model cannot accept (gap in the log, stale snapshot)
  | 'SIM_BAD_OPTION' // an option out of range
  | 'SIM_RUNAWAY' // a node produced Readies without end
  | 'KV_OP_MALFORMED' // a KV command in an entry that does not decode
  | 'KV_SNAPSHOT_MALFORMED' // a state-machine snapshot that does not decode
  | 'LIN_BAD_HISTORY'; // a history the linearizability checker cannot interpret

export class SimError extends Error {
  constructor(
    readonly code: SimErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'SimError';
  }
}
