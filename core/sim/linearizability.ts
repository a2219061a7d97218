/**
 * Linearizability checker for histories of single-key register operations (put, get,
 * compare-and-set), after Wing & Gong with Lowe's memoisation as Porcupine implements it:
 * a depth-first search over which pending operation takes effect next, caching every
 * (set of linearized operations, register value) already explored.
 *
 * - Operations on different keys are independent, so each key is checked alone.
 * - `fail` operations had no effect and are dropped; so are indeterminate gets (a read has
 *   no effect). Indeterminate puts and CASes may take effect at any time after their call,
 *   or never (they have no response time, so "never" is "at the very end").
 * - Values nobody observes (never returned by a get, never a CAS's expected value) behave
 *   identically, so they are merged into one symbolic value; identical indeterminate
 *   operations are then interchangeable and are tried only in call order. Without this a
 *   history with many timeouts explodes.
 * - The search is bounded: past `stepBudget` steps on one key it answers 'unknown', never 'ok'.
 */
import { SimError } from './errors.js';
import { describeOp, HistoryOp } from './history.js';

export type LinVerdict = 'ok' | 'violation' | 'unknown';

/** Steps per key before giving up with 'unknown'. */
export const DEFAULT_LIN_STEP_BUDGET = 1_000_000;

export interface LinearizabilityOptions {
  stepBudget?: number;
}

export interface KeyCheck {
  key: string;
  verdict: LinVerdict;
  /** Operations that took part in the search (after dropping failed ops and indeterminate gets). */
  ops: number;
  steps: number;
  /** For a violation: the operation that could not be linearized and what was linearized before it. */
  detail?: string[];
}

export interface LinearizabilityResult {
  verdict: LinVerdict;
  keys: KeyCheck[];
  steps: number;
}

export function checkLinearizability(history: readonly HistoryOp[], options: LinearizabilityOptions = {}): LinearizabilityResult {
  const budget = options.stepBudget ?? DEFAULT_LIN_STEP_BUDGET;
  const byKey = new Map<string, HistoryOp[]>();
  for (const op of history) {
    validate(op);
    let list = byKey.get(op.key);
    if (list === undefined) byKey.set(op.key, (list = []));
    list.push(op);
  }
  const keys: KeyCheck[] = [];
  let steps = 0;
  let verdict: LinVerdict = 'ok';
  for (const [key, ops] of byKey) {
    const r = checkKey(key, ops, budget);
    keys.push(r);
    steps += r.steps;
    if (r.verdict === 'violation') verdict = 'violation';
    else if (r.verdict === 'unknown' && verdict === 'ok') verdict = 'unknown';
  }
  return { verdict, keys, steps };
}

function validate(o: HistoryOp): void {
  const bad = (why: string): never => {
    throw new SimError('LIN_BAD_HISTORY', `${why}: ${JSON.stringify(o)}`);
  };
  if (typeof o.key !== 'string') bad('key must be a string');
  if (typeof o.call !== 'number' || !Number.isFinite(o.call)) bad('call must be a finite number');
  const strOrNull = (v: unknown): boolean => v === null || typeof v === 'string';
  if (o.op === 'put') {
    if (typeof o.input?.value !== 'string') bad('put needs input.value');
  } else if (o.op === 'cas') {
    if (typeof o.input?.value !== 'string' || !strOrNull(o.input.expected)) bad('cas needs input.expected and input.value');
  } else if (o.op !== 'get') bad(`unknown op ${String(o.op)}`);
  if (o.status === 'ok') {
    if (typeof o.return !== 'number' || !(o.return >= o.call)) bad('ok op needs return >= call');
    if (o.op === 'get' && !strOrNull(o.output?.value)) bad('ok get needs output.value');
    if (o.op === 'cas' && typeof o.output?.ok !== 'boolean') bad('ok cas needs output.ok');
  } else if (o.status === 'fail') {
    if (o.return !== null && typeof o.return !== 'number') bad('fail op has a bad return');
  } else if (o.status !== 'indeterminate') bad(`unknown status ${String(o.status)}`);
}

// Register values are interned as small integers.
const NULL_VALUE = 0;
const UNOBSERVED_VALUE = 1;

const enum Kind {
  Write, // put, or indeterminate put
  Read, // ok get
  CasOk, // cas that returned ok
  CasFailed, // cas that returned failed
  CasMaybe, // indeterminate cas: succeeds iff the register holds `expected`
}

interface CompiledOp {
  kind: Kind;
  expected: number;
  value: number;
  /** Symmetry class of an indeterminate op (-1 otherwise) and its rank in call order within it. */
  cls: number;
  rank: number;
  source: HistoryOp;
}

interface Node {
  op: number; // index into compiled ops
  isCall: boolean;
  match: Node | null; // call → its return
  prev: Node | null;
  next: Node | null;
}

function checkKey(key: string, all: HistoryOp[], budget: number): KeyCheck {
  const ops = all.filter((o) => o.status !== 'fail' && !(o.op === 'get' && o.status !== 'ok'));
  // Values that some operation compares the register against.
  const observed = new Map<string, number>();
  const names: string[] = ['∅', '<a value nobody observed>'];
  const intern = (v: string): number => {
    let id = observed.get(v);
    if (id === undefined) {
      id = names.length;
      names.push(JSON.stringify(v));
      observed.set(v, id);
    }
    return id;
  };
  for (const o of ops) {
    if (o.op === 'get' && typeof o.output?.value === 'string') intern(o.output.value);
    if (o.op === 'cas' && typeof o.input.expected === 'string') intern(o.input.expected);
  }
  const valueId = (v: string | null | undefined): number => (v === null || v === undefined ? NULL_VALUE : observed.get(v) ?? UNOBSERVED_VALUE);

  const classes = new Map<string, number>();
  const classSize: number[] = [];
  const compiled: CompiledOp[] = ops.map((o) => {
    let kind: Kind;
    if (o.op === 'put') kind = Kind.Write;
    else if (o.op === 'get') kind = Kind.Read;
    else if (o.status === 'ok') kind = o.output!.ok ? Kind.CasOk : Kind.CasFailed;
    else kind = Kind.CasMaybe;
    const c: CompiledOp = {
      kind,
      expected: o.op === 'cas' ? valueId(o.input.expected) : o.op === 'get' ? valueId(o.output!.value) : 0,
      value: o.op === 'get' ? 0 : valueId(o.input.value),
      cls: -1,
      rank: 0,
      source: o,
    };
    return c;
  });
  // Indeterminate ops with identical effects, ranked by call time (ties by position).
  const indeterminate = compiled.map((c, i) => i).filter((i) => compiled[i]!.source.status === 'indeterminate');
  indeterminate.sort((a, b) => compiled[a]!.source.call - compiled[b]!.source.call || a - b);
  for (const i of indeterminate) {
    const c = compiled[i]!;
    const sig = `${c.kind}:${c.expected}:${c.value}`;
    let cls = classes.get(sig);
    if (cls === undefined) {
      cls = classSize.length;
      classes.set(sig, cls);
      classSize.push(0);
    }
    c.cls = cls;
    c.rank = classSize[cls]!++;
  }
  const linearizedInClass = new Array<number>(classSize.length).fill(0);

  // The event list: calls and returns by time. At equal times, when every op carries its
  // recording order (HistoryRecorder's), that order decides: a call recorded after a response
  // began after it, even in the same clock tick. Otherwise calls first (the permissive reading).
  const recordedOrder = ops.every((o) => typeof o.callSeq === 'number' && (o.status !== 'ok' || typeof o.returnSeq === 'number'));
  const events: { t: number; seq: number; isCall: boolean; op: number }[] = [];
  compiled.forEach((c, i) => {
    const o = c.source;
    events.push({ t: o.call, seq: recordedOrder ? o.callSeq! : 0, isCall: true, op: i });
    if (o.status === 'ok') events.push({ t: o.return!, seq: recordedOrder ? o.returnSeq! : 0, isCall: false, op: i });
    else events.push({ t: Infinity, seq: Infinity, isCall: false, op: i });
  });
  events.sort((a, b) => a.t - b.t || a.seq - b.seq || (a.isCall === b.isCall ? a.op - b.op : a.isCall ? -1 : 1));
  const head: Node = { op: -1, isCall: false, match: null, prev: null, next: null };
  const callNode = new Array<Node>(compiled.length);
  let tail = head;
  for (const e of events) {
    const n: Node = { op: e.op, isCall: e.isCall, match: null, prev: tail, next: null };
    tail.next = n;
    tail = n;
    if (e.isCall) callNode[e.op] = n;
    else callNode[e.op]!.match = n;
  }

  const words = new Uint32Array(Math.ceil(compiled.length / 32) || 1);
  const cache = new Set<string>();
  const stack: { node: Node; state: number }[] = [];
  let state = NULL_VALUE;
  let steps = 0;
  let deepest = -1;
  let deepestDetail: string[] = [];

  const lift = (n: Node): void => {
    n.prev!.next = n.next;
    if (n.next) n.next.prev = n.prev;
    const r = n.match!;
    r.prev!.next = r.next;
    if (r.next) r.next.prev = r.prev;
  };
  const unlift = (n: Node): void => {
    const r = n.match!;
    r.prev!.next = r;
    if (r.next) r.next.prev = r;
    n.prev!.next = n;
    if (n.next) n.next.prev = n;
  };
  const cacheKey = (): string => {
    let s = String.fromCharCode(state & 0xffff, state >>> 16);
    for (let i = 0; i < words.length; i++) s += String.fromCharCode(words[i]! & 0xffff, words[i]! >>> 16);
    return s;
  };

  let entry = head.next;
  while (head.next !== null) {
    if (++steps > budget) return { key, verdict: 'unknown', ops: compiled.length, steps };
    const n = entry!;
    if (n.isCall) {
      const c = compiled[n.op]!;
      let next = -1;
      switch (c.kind) {
        case Kind.Write:
          next = c.value;
          break;
        case Kind.Read:
          if (state === c.expected) next = state;
          break;
        case Kind.CasOk:
          if (state === c.expected) next = c.value;
          break;
        case Kind.CasFailed:
          if (state !== c.expected) next = state;
          break;
        case Kind.CasMaybe:
          next = state === c.expected ? c.value : state;
          break;
      }
      if (next >= 0 && (c.cls < 0 || linearizedInClass[c.cls] === c.rank)) {
        words[n.op >>> 5]! |= 1 << (n.op & 31);
        const prevState = state;
        state = next;
        const k = cacheKey();
        if (!cache.has(k)) {
          cache.add(k);
          stack.push({ node: n, state: prevState });
          if (c.cls >= 0) linearizedInClass[c.cls]!++;
          lift(n);
          entry = head.next;
          continue;
        }
        state = prevState;
        words[n.op >>> 5]! &= ~(1 << (n.op & 31));
      }
      entry = n.next;
    } else {
      // A response we cannot move past: its operation has not taken effect yet.
      if (stack.length > deepest) {
        deepest = stack.length;
        deepestDetail = explain(compiled[n.op]!.source, state, names, stack.length, stack.slice(-8).map((s) => compiled[s.node.op]!.source));
      }
      if (stack.length === 0) break;
      const top = stack.pop()!;
      const c = compiled[top.node.op]!;
      if (c.cls >= 0) linearizedInClass[c.cls]!--;
      state = top.state;
      words[top.node.op >>> 5]! &= ~(1 << (top.node.op & 31));
      unlift(top.node);
      entry = top.node.next;
    }
  }
  if (head.next === null) return { key, verdict: 'ok', ops: compiled.length, steps };
  return { key, verdict: 'violation', ops: compiled.length, steps, detail: deepestDetail };
}

function explain(blocked: HistoryOp, state: number, names: string[], depth: number, recent: HistoryOp[]): string[] {
  const lines = [`cannot linearize ${describeOp(blocked)} when the register holds ${names[state]}`];
  if (recent.length > 0) lines.push(`after the longest linearizable prefix (${depth} ops), ending:`);
  for (const o of recent) lines.push(`  ${describeOp(o)}`);
  return lines;
}
