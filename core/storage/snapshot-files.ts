/**
 * Snapshot data files beside the log database: written piece by piece to a temporary name,
 * fsynced, renamed, and the directory fsynced, so a file under its final name is always
 * whole. A snapshot received from the leader is spooled chunk by chunk to its own temporary
 * file and installed the same way. Reading is streamed or by range, never a whole file.
 * Which file is current is recorded in the database, not here.
 */
import { createReadStream, type ReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from './durable-file.js';
import { StorageError } from './errors.js';

/** Bytes read from a snapshot file by one readChunk call. */
export const MAX_SNAPSHOT_READ_BYTES = 16 * 1024 * 1024;

const SUFFIX = '.snap';
const TMP_SUFFIX = '.snap.tmp';
const SPOOL_SUFFIX = '.snap.spool';

export function snapshotFileName(term: number, index: number): string {
  return `snap-${term.toString(16).padStart(16, '0')}-${index.toString(16).padStart(16, '0')}${SUFFIX}`;
}

export class SnapshotFiles {
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  path(fileName: string): string {
    return join(this.dir, fileName);
  }

  /**
   * Writes `source` to `fileName` durably. The source may be one buffer or a stream of pieces,
   * so a snapshot never has to be whole in memory here.
   */
  async write(fileName: string, source: Uint8Array | AsyncIterable<Uint8Array>): Promise<number> {
    const tmp = this.path(fileName.slice(0, -SUFFIX.length) + TMP_SUFFIX);
    let fh: FileHandle | undefined = await open(tmp, 'w');
    let size = 0;
    try {
      const pieces: AsyncIterable<Uint8Array> | Uint8Array[] = source instanceof Uint8Array ? [source] : source;
      for await (const piece of pieces) {
        let off = 0;
        while (off < piece.length) {
          const { bytesWritten } = await fh.write(piece, off, piece.length - off);
          off += bytesWritten;
        }
        size += piece.length;
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(tmp, this.path(fileName));
      await fsyncDir(this.dir);
      return size;
    } catch (err) {
      if (fh !== undefined) await fh.close().catch(() => undefined);
      await rm(tmp, { force: true }).catch(() => undefined);
      throw new StorageError('ERR_SNAPSHOT_FILE', `writing snapshot ${fileName}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The spool of a snapshot being received, named after the file it becomes. */
  spoolName(fileName: string): string {
    return fileName.slice(0, -SUFFIX.length) + SPOOL_SUFFIX;
  }

  /**
   * Writes a received chunk at `offset` of `fileName`'s spool; offset 0 starts the spool over.
   * Not fsynced: installSpool() syncs the whole spool once.
   */
  async spoolChunk(fileName: string, offset: number, data: Uint8Array): Promise<void> {
    const spool = this.path(this.spoolName(fileName));
    let fh: FileHandle | undefined;
    try {
      // One snapshot is received at a time (Raft drops the one in progress for a newer one):
      // the spools of abandoned ones would otherwise stay until the next start.
      if (offset === 0) await this.removeSpoolsExcept(this.spoolName(fileName));
      fh = await open(spool, offset === 0 ? 'w' : 'r+');
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw new StorageError('ERR_SNAPSHOT_FILE', `spooling snapshot ${fileName} at ${offset}: ${(err as Error).message}`, { cause: err });
    } finally {
      await fh?.close();
    }
  }

  private async removeSpoolsExcept(keep: string): Promise<void> {
    for (const name of await readdir(this.dir)) {
      if (name !== keep && name.endsWith(SPOOL_SUFFIX)) await rm(this.path(name), { force: true });
    }
  }

  /** Makes a complete spool `fileName`, durably; it must hold exactly expectedBytes. */
  async installSpool(fileName: string, expectedBytes: number): Promise<void> {
    const spool = this.path(this.spoolName(fileName));
    let fh: FileHandle | undefined;
    try {
      fh = await open(spool, 'r+');
      const { size } = await fh.stat();
      if (size !== expectedBytes) throw new Error(`spool has ${size} bytes, the snapshot ${expectedBytes}`);
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(spool, this.path(fileName));
      await fsyncDir(this.dir);
    } catch (err) {
      if (fh !== undefined) await fh.close().catch(() => undefined);
      throw new StorageError('ERR_SNAPSHOT_FILE', `installing snapshot ${fileName}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Up to maxBytes from offset (fewer at the end of the file). */
  async readChunk(fileName: string, offset: number, maxBytes: number): Promise<Uint8Array> {
    const want = Math.min(maxBytes, MAX_SNAPSHOT_READ_BYTES);
    let fh: FileHandle | undefined;
    try {
      fh = await open(this.path(fileName), 'r');
      const buf = Buffer.allocUnsafe(want);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return buf.subarray(0, got);
    } catch (err) {
      throw new StorageError('ERR_SNAPSHOT_FILE', `reading snapshot ${fileName}: ${(err as Error).message}`, { cause: err });
    } finally {
      await fh?.close();
    }
  }

  stream(fileName: string, start = 0): ReadStream {
    return createReadStream(this.path(fileName), { start, highWaterMark: 256 * 1024 });
  }

  async size(fileName: string): Promise<number> {
    return (await stat(this.path(fileName))).size;
  }

  async remove(fileName: string): Promise<void> {
    await rm(this.path(fileName), { force: true });
    await fsyncDir(this.dir);
  }

  /** Deletes every snapshot file (and leftover temporary or spool file) except `keep`. */
  async removeAllExcept(keep: string | undefined): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(this.dir)) {
      if (name === keep) continue;
      if (!name.endsWith(SUFFIX) && !name.endsWith(TMP_SUFFIX) && !name.endsWith(SPOOL_SUFFIX)) continue;
      await rm(this.path(name), { force: true });
      removed.push(name);
    }
    if (removed.length > 0) await fsyncDir(this.dir);
    return removed;
  }
}
