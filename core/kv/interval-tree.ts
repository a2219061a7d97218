/**
 * An interval tree over binary-string keys: which of the stored intervals [start, end)
 * contain a given key? Used by the watch hub so an event visits only the range watchers it
 * concerns (O(log n + matches)) instead of every watcher. An AVL tree ordered by (start, end),
 * each node augmented with the largest end in its subtree. An end of '' means unbounded.
 * Identical intervals share one node (the caller keeps a set of watchers as its value).
 */

interface Node<V> {
  start: string;
  end: string;
  value: V;
  left: Node<V> | undefined;
  right: Node<V> | undefined;
  height: number;
  /** Largest end in this subtree ('' = unbounded). */
  maxEnd: string;
}

/** Orders ends with '' (unbounded) last. */
function cmpEnd(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '') return 1;
  if (b === '') return -1;
  return a < b ? -1 : 1;
}

function cmp(aStart: string, aEnd: string, bStart: string, bEnd: string): number {
  if (aStart !== bStart) return aStart < bStart ? -1 : 1;
  return cmpEnd(aEnd, bEnd);
}

function h<V>(n: Node<V> | undefined): number {
  return n === undefined ? 0 : n.height;
}

function update<V>(n: Node<V>): void {
  n.height = 1 + Math.max(h(n.left), h(n.right));
  let m = n.end;
  if (n.left && cmpEnd(n.left.maxEnd, m) > 0) m = n.left.maxEnd;
  if (n.right && cmpEnd(n.right.maxEnd, m) > 0) m = n.right.maxEnd;
  n.maxEnd = m;
}

function rotateRight<V>(n: Node<V>): Node<V> {
  const l = n.left!;
  n.left = l.right;
  l.right = n;
  update(n);
  update(l);
  return l;
}

function rotateLeft<V>(n: Node<V>): Node<V> {
  const r = n.right!;
  n.right = r.left;
  r.left = n;
  update(n);
  update(r);
  return r;
}

function balance<V>(n: Node<V>): Node<V> {
  update(n);
  const bf = h(n.left) - h(n.right);
  if (bf > 1) {
    if (h(n.left!.left) < h(n.left!.right)) n.left = rotateLeft(n.left!);
    return rotateRight(n);
  }
  if (bf < -1) {
    if (h(n.right!.right) < h(n.right!.left)) n.right = rotateRight(n.right!);
    return rotateLeft(n);
  }
  return n;
}

export class IntervalTree<V> {
  private root: Node<V> | undefined;
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(start: string, end: string): V | undefined {
    let n = this.root;
    while (n) {
      const c = cmp(start, end, n.start, n.end);
      if (c === 0) return n.value;
      n = c < 0 ? n.left : n.right;
    }
    return undefined;
  }

  /** Inserts or replaces the value of [start, end). */
  set(start: string, end: string, value: V): void {
    this.root = this.insertAt(this.root, start, end, value);
  }

  private insertAt(n: Node<V> | undefined, start: string, end: string, value: V): Node<V> {
    if (n === undefined) {
      this.count++;
      return { start, end, value, left: undefined, right: undefined, height: 1, maxEnd: end };
    }
    const c = cmp(start, end, n.start, n.end);
    if (c === 0) {
      n.value = value;
      return n;
    }
    if (c < 0) n.left = this.insertAt(n.left, start, end, value);
    else n.right = this.insertAt(n.right, start, end, value);
    return balance(n);
  }

  delete(start: string, end: string): boolean {
    const before = this.count;
    this.root = this.deleteAt(this.root, start, end);
    return this.count < before;
  }

  private deleteAt(n: Node<V> | undefined, start: string, end: string): Node<V> | undefined {
    if (n === undefined) return undefined;
    const c = cmp(start, end, n.start, n.end);
    if (c < 0) n.left = this.deleteAt(n.left, start, end);
    else if (c > 0) n.right = this.deleteAt(n.right, start, end);
    else {
      this.count--;
      if (n.left === undefined) return n.right;
      if (n.right === undefined) return n.left;
      // Replace with the in-order successor.
      let s = n.right;
      while (s.left) s = s.left;
      n.right = this.removeMin(n.right);
      s.left = n.left;
      s.right = n.right;
      return balance(s);
    }
    return balance(n);
  }

  private removeMin(n: Node<V>): Node<V> | undefined {
    if (n.left === undefined) return n.right;
    n.left = this.removeMin(n.left);
    return balance(n);
  }

  /** Calls `visit` with the value of every interval containing `key`. */
  stab(key: string, visit: (value: V) => void): void {
    const walk = (n: Node<V> | undefined): void => {
      if (n === undefined) return;
      // Nothing in this subtree reaches past key.
      if (n.maxEnd !== '' && n.maxEnd <= key) return;
      walk(n.left);
      if (n.start > key) return; // this node and its right subtree start after key
      if (n.end === '' || key < n.end) visit(n.value);
      walk(n.right);
    };
    walk(this.root);
  }

  /** Height of the tree (tests check it stays logarithmic). */
  get height(): number {
    return h(this.root);
  }
}
