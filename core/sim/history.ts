/**
 * Client histories: what each client asked (invoke), and how it ended (ok with an output,
 * fail = certainly had no effect, indeterminate = may or may not have taken effect: a
 * timeout, a lost leader). The format is independent of the simulator so the
 * linearizability checker also reads histories recorded from real agents.
 */

export type OpKind = 'put' | 'get' | 'cas';
export type OpStatus = 'ok' | 'fail' | 'indeterminate';

/** put: { value }; cas: { expected, value } (expected null: the key must be absent); get: {}. */
export interface OpInput {
  value?: string | null;
  expected?: string | null;
}

/** get: { value } (null: absent); cas: { ok }; put: {}. */
export interface OpOutput {
  value?: string | null;
  ok?: boolean;
}

export interface HistoryOp {
  clientId: number;
  key: string;
  op: OpKind;
  input: OpInput;
  /** Present when status is 'ok'. */
  output: OpOutput | null;
  /** Invocation time (any monotonic unit: virtual ms in the simulator, wall ms from agents). */
  call: number;
  /** Response time; null for indeterminate operations, which have no upper bound. */
  return: number | null;
  status: OpStatus;
  /**
   * Position of the call and of the response in the recorder's append order (optional: hand-made
   * histories may omit them). Clocks tie (the simulator's is whole ms), the order of recording
   * does not: a call recorded after another op's response started after that op returned.
   */
  callSeq?: number;
  returnSeq?: number;
}

/** Records a history as operations start and end. Operation handles are indexes into `ops`. */
export class HistoryRecorder {
  readonly ops: HistoryOp[] = [];
  /** Calls and responses recorded so far (the source of callSeq / returnSeq). */
  private recorded = 0;

  invoke(clientId: number, key: string, op: OpKind, input: OpInput, call: number): number {
    this.ops.push({ clientId, key, op, input, output: null, call, return: null, status: 'indeterminate', callSeq: this.recorded++ });
    return this.ops.length - 1;
  }

  ok(handle: number, output: OpOutput, at: number): void {
    const o = this.ops[handle]!;
    o.output = output;
    o.return = at;
    o.returnSeq = this.recorded++;
    o.status = 'ok';
  }

  fail(handle: number, at: number): void {
    const o = this.ops[handle]!;
    o.return = at;
    o.returnSeq = this.recorded++;
    o.status = 'fail';
  }

  /** The client gave up without knowing the outcome. */
  indeterminate(handle: number): void {
    const o = this.ops[handle]!;
    o.return = null;
    delete o.returnSeq;
    o.status = 'indeterminate';
  }
}

export function describeOp(o: HistoryOp): string {
  const q = (v: string | null | undefined): string => (v === null || v === undefined ? '∅' : JSON.stringify(v));
  let s = `c${o.clientId} ${o.op}(${o.key}`;
  if (o.op === 'put') s += `, ${q(o.input.value)})`;
  else if (o.op === 'cas') s += `, ${q(o.input.expected)} → ${q(o.input.value)})`;
  else s += ')';
  if (o.status === 'ok') s += o.op === 'get' ? ` = ${q(o.output?.value)}` : o.op === 'cas' ? ` = ${o.output?.ok ? 'ok' : 'failed'}` : ' = ok';
  else s += ` = ${o.status}`;
  s += ` [${o.call}, ${o.return ?? '∞'}]`;
  return s;
}
