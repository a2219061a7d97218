/**
 * Small files a node must find whole after a crash (identity, token, markers, keyring): written
 * to a temporary name, fsynced, renamed over the target and the directory fsynced, so the name
 * holds either the old contents or the new, never a torn or empty file. The synchronous form is
 * for start-up and rare administrative events; a running node's own updates use LatestValueFile,
 * since an fsync on a stalling SD card can take seconds and must not hold the event loop. Also
 * the directory fsync every rename-into-place needs (the snapshot files use its async form).
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

export function writeFileDurablySync(path: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = `${path}.tmp`;
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  // A temporary left by a crash would keep its old mode: open a new one.
  rmSync(tmp, { force: true });
  try {
    const fd = openSync(tmp, 'wx', mode);
    try {
      let off = 0;
      while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDirSync(dirname(path));
}

/** writeFileDurablySync without blocking the event loop. */
export async function writeFileDurably(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp`;
  await rm(tmp, { force: true });
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(path));
}

/**
 * One small file kept durably at the newest value handed to save(), written off the event
 * loop: one write at a time, values saved meanwhile coalesced into the next. For state whose
 * latest value is all that matters (gossip's incarnation).
 */
export class LatestValueFile {
  private next: string | undefined;
  private writing: Promise<void> | undefined;

  constructor(
    readonly path: string,
    private readonly mode: number,
    private readonly onError: (err: Error) => void,
  ) {}

  save(data: string): void {
    this.next = data;
    this.writing ??= this.drain();
  }

  /** Resolves once every value saved so far is on disk, or failed and was reported. */
  flushed(): Promise<void> {
    return this.writing ?? Promise.resolve();
  }

  private async drain(): Promise<void> {
    try {
      while (this.next !== undefined) {
        const data = this.next;
        this.next = undefined;
        try {
          await writeFileDurably(this.path, data, this.mode);
        } catch (e) {
          try {
            this.onError(e instanceof Error ? e : new Error(String(e)));
          } catch {
            // a failing reporter must not stop later saves
          }
        }
      }
    } finally {
      this.writing = undefined;
    }
  }
}

/** fsync a directory so a rename or unlink in it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsyncDir for the synchronous writers above. */
export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
