/**
 * A small ext4 filesystem on a loop device over an image file in /dev/shm, for power-cut
 * tests. The image holds only what the kernel has written to the "disk": data still in the
 * page cache (written but not fsynced) is not in it. So a copy of the image taken while the
 * writers are stopped (SIGSTOP) is what a power cut at that moment would leave behind, and
 * mounting that copy (ext4 replays its journal) is booting after the cut.
 *
 * Needs root, losetup, mkfs.ext4, a free loop device and room in /dev/shm; `unavailable()` says
 * why not.
 *
 * Not modelled: the copy is not atomic (the kernel may still write back unsynced pages while it
 * is taken, which only adds writes a real cut could also have kept, in an order a real disk
 * might not), and a disk's own volatile cache, which can lose or reorder writes the kernel
 * already handed it, is not simulated: a write the kernel issued counts as on the disk.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, renameSync, rmSync, statfsSync } from 'node:fs';

/** Three images and their copies at the test's size, with room to spare. */
const SHM_NEEDED_BYTES = 800 << 20;

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || '').trim()}`);
  return r.stdout.trim();
}

export class LoopDisk {
  private device: string | undefined;

  private constructor(
    readonly image: string,
    readonly mountpoint: string,
  ) {}

  /** Why this machine cannot run loop-disk tests, or undefined if it can. */
  static unavailable(): string | undefined {
    if (process.getuid?.() !== 0) return 'needs root (loop devices, mount)';
    for (const bin of ['losetup', 'mkfs.ext4', 'mount', 'umount']) {
      if (spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status !== 0) return `${bin} not installed`;
    }
    const probe = spawnSync('losetup', ['-f'], { encoding: 'utf8' });
    if (probe.status !== 0) return `no free loop device: ${probe.stderr.trim()}`;
    const shm = statfsSync('/dev/shm');
    if (shm.bavail * shm.bsize < SHM_NEEDED_BYTES) return `/dev/shm has less than ${SHM_NEEDED_BYTES >> 20} MiB free for the disk images`;
    return undefined;
  }

  /** Makes a fresh `sizeMb` MB ext4 image and mounts it at `mountpoint`. */
  static create(image: string, mountpoint: string, sizeMb: number): LoopDisk {
    run('truncate', ['-s', `${sizeMb}M`, image]);
    run('mkfs.ext4', ['-q', '-F', image]);
    const disk = new LoopDisk(image, mountpoint);
    disk.mount();
    return disk;
  }

  mount(): void {
    mkdirSync(this.mountpoint, { recursive: true });
    this.device = run('losetup', ['-f', '--show', this.image]);
    // noauto_da_alloc: ext4 would otherwise flush a file's data when it is renamed over
    // another, hiding a missing fsync before a rename.
    run('mount', ['-o', 'noatime,noauto_da_alloc', this.device, this.mountpoint]);
  }

  unmount(): void {
    if (this.device === undefined) return;
    run('umount', [this.mountpoint]);
    run('losetup', ['-d', this.device]);
    this.device = undefined;
  }

  /**
   * Cuts the power: keeps a copy of what the disk holds now (stop the writers first), then,
   * once the caller has killed them, `boot()` unmounts the disk and mounts that copy instead.
   */
  cutPower(): void {
    copyFileSync(this.image, `${this.image}.cut`);
  }

  boot(): void {
    this.unmount();
    renameSync(`${this.image}.cut`, this.image);
    this.mount();
  }

  destroy(): void {
    try {
      this.unmount();
    } catch {
      // already gone
    }
    rmSync(this.image, { force: true });
    rmSync(`${this.image}.cut`, { force: true });
  }
}
