/**
 * Group commit: callers submit writes; while one batch is being written and fsynced, new
 * submissions wait and then go out together in the next batch, so one fsync covers many
 * writes. Each caller's promise resolves only after the batch holding its write is durable.
 * Knows nothing of LevelDB: the flush function does the I/O.
 */

/** Submissions in one batch; the rest wait for the next one (bounds one batch's memory and latency). */
export const MAX_GROUP_COMMIT_ITEMS = 4_096;
/** Bytes (as sized by the caller) in one batch, the first item always admitted. */
export const MAX_GROUP_COMMIT_BYTES = 64 * 1024 * 1024;

export interface GroupCommitStats {
  /** Items submitted. */
  submitted: number;
  /** Batches flushed (each one durable write, i.e. one fsync). */
  batches: number;
  /** Largest number of items in one batch. */
  maxBatchItems: number;
}

interface Pending<T> {
  item: T;
  sizeBytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class GroupCommitter<T> {
  private queue: Pending<T>[] = [];
  private flushing = false;
  private readonly stats_: GroupCommitStats = { submitted: 0, batches: 0, maxBatchItems: 0 };

  /**
   * @param flush writes the items durably, in order; rejects if any of them failed, in which
   *   case every item of the batch is rejected with that error.
   */
  constructor(private readonly flush: (items: T[]) => Promise<void>) {}

  submit(item: T, sizeBytes = 0): Promise<void> {
    this.stats_.submitted++;
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ item, sizeBytes, resolve, reject });
      if (!this.flushing) void this.run();
    });
  }

  /** Rejects every waiting item (used when the store fails or closes). */
  failPending(err: unknown): void {
    const q = this.queue;
    this.queue = [];
    for (const p of q) p.reject(err);
  }

  get stats(): GroupCommitStats {
    return { ...this.stats_ };
  }

  /** True while a batch is in flight or items wait. */
  get busy(): boolean {
    return this.flushing || this.queue.length > 0;
  }

  private takeBatch(): Pending<T>[] {
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length && n < MAX_GROUP_COMMIT_ITEMS) {
      const size = this.queue[n]!.sizeBytes;
      if (n > 0 && bytes + size > MAX_GROUP_COMMIT_BYTES) break;
      bytes += size;
      n++;
    }
    return this.queue.splice(0, n);
  }

  private async run(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.takeBatch();
        this.stats_.batches++;
        this.stats_.maxBatchItems = Math.max(this.stats_.maxBatchItems, batch.length);
        try {
          await this.flush(batch.map((p) => p.item));
        } catch (err) {
          for (const p of batch) p.reject(err);
          continue;
        }
        for (const p of batch) p.resolve();
      }
    } finally {
      this.flushing = false;
    }
  }
}
