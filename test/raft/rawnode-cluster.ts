/**
 * Three RawNodes on MemoryStorage-like storage, driven by hand: settle() runs Ready cycles and
 * delivers messages until the cluster is quiet. Hooks let a test stand in for the embedder
 * (snapshot spooling, attaching chunk bytes) and for the network (drop, hold).
 */
import { EntryType, MemoryStorage, Message, RawNode, Ready, Role, bootstrap, decodeConfChange, type RawNodeConfig } from '../../core/raft/index.js';
import { Prng } from '../../core/sim/prng.js';

export interface RawNodeClusterOptions<S extends MemoryStorage> {
  storage: () => S;
  seed: number;
  config?: (id: number) => Partial<RawNodeConfig>;
  /** Persist a Ready's snapshot; default: the storage's applySnapshot. */
  persistSnapshot?: (id: number, rd: Ready & { snapshot: NonNullable<Ready['snapshot']> }, s: S) => void;
  /** Before the snapshot and entries are persisted (e.g. spool rd.snapshotChunks). */
  beforePersist?: (id: number, rd: Ready) => void;
  /** Each outgoing message: false keeps it from the network (dropped or held by the test). */
  route?: (from: number, m: Message) => boolean;
}

export interface RawNodeCluster<S extends MemoryStorage> {
  nodes: Map<number, RawNode>;
  storages: Map<number, S>;
  /** Nodes that neither run nor receive. */
  down: Set<number>;
  settle(): void;
  /** Two ticks of node 1 (a heartbeat round at heartbeatTicks 1), then settle. */
  heartbeat(): void;
}

/** Starts the cluster and makes node 1 its leader. */
export function rawNodeCluster<S extends MemoryStorage>(opts: RawNodeClusterOptions<S>): RawNodeCluster<S> {
  const rng = new Prng(opts.seed);
  const storages = new Map<number, S>();
  const nodes = new Map<number, RawNode>();
  for (const id of [1, 2, 3]) {
    const s = opts.storage();
    bootstrap(s, [1, 2, 3]);
    storages.set(id, s);
    nodes.set(id, new RawNode({ id, storage: s, random: rng.fork(), electionTicks: 10, heartbeatTicks: 1, ...opts.config?.(id) }));
  }
  const down = new Set<number>();
  const settle = (): void => {
    for (let round = 0; round < 400; round++) {
      let moved = false;
      const inbox: Message[] = [];
      for (const [id, rn] of nodes) {
        if (down.has(id) || !rn.hasReady()) continue;
        moved = true;
        const rd = rn.ready();
        const s = storages.get(id)!;
        opts.beforePersist?.(id, rd);
        if (rd.snapshot) {
          if (opts.persistSnapshot) opts.persistSnapshot(id, rd as Ready & { snapshot: NonNullable<Ready['snapshot']> }, s);
          else s.applySnapshot(rd.snapshot);
        }
        s.append(rd.entries);
        if (rd.hardState) s.setHardState(rd.hardState);
        for (const e of rd.committedEntries) if (e.type === EntryType.ConfChange) rn.applyConfChange(decodeConfChange(e.data));
        for (const m of [...rd.earlyMessages, ...rd.messages]) {
          if (opts.route && !opts.route(id, m)) continue;
          if (!down.has(m.to)) inbox.push(m);
        }
        rn.advance();
      }
      for (const m of inbox) nodes.get(m.to)!.step(m);
      if (!moved && inbox.length === 0) return;
    }
  };
  const heartbeat = (): void => {
    for (let i = 0; i < 2; i++) nodes.get(1)!.tick();
    settle();
  };
  settle(); // apply the bootstrap configuration
  nodes.get(1)!.campaign();
  settle();
  if (nodes.get(1)!.status().role !== Role.Leader) throw new Error('node 1 did not become leader');
  return { nodes, storages, down, settle, heartbeat };
}
