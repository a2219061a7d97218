/**
 * Small files a node must find whole after a crash (identity, token, markers, keyring): written
 * to a temporary name, fsynced, renamed over the target and the directory fsynced, so the name
 * holds either the old contents or the new, never a torn or empty file. Synchronous because the
 * callers write them at start-up or on rare events, never on a request path. Also the directory
 * fsync every rename-into-place needs (the snapshot files use its async form).
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
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
