import { promises as fs } from 'node:fs';
import path from 'node:path';
import { NoRoomError, UnavailableError } from '../errors.js';
import type { LockManager } from './locks.js';
import { readMeta } from './meta.js';
import { SETTINGS_FILE, uidOfDirName } from './layout.js';
import type { Root } from './roots.js';
import type { VolumeIndex } from './volume-index.js';

export interface Usage {
  volumes: number;
  bytes: number;
}

/** Why `root` cannot take `sizeBytes` more (or grow a volume by it), or null when it can. */
export function quotaRefusal(root: Root, usage: Usage, sizeBytes: number, newVolume: boolean, volumeSize = sizeBytes): string | null {
  const s = root.settings;
  if (s.maxVolumeSize !== undefined && volumeSize > s.maxVolumeSize)
    return `volumes of ${root.path} may not exceed ${s.maxVolumeSize} bytes`;
  if (newVolume && s.maxVolumes !== undefined && usage.volumes + 1 > s.maxVolumes)
    return `${root.path} already holds its maximum of ${s.maxVolumes} volumes`;
  if (s.maxTotalSize !== undefined && usage.bytes + sizeBytes > s.maxTotalSize)
    return `${root.path} has ${Math.max(0, s.maxTotalSize - usage.bytes)} bytes of quota left`;
  return null;
}

/**
 * Chooses roots for new volumes and keeps quotas exact. Every decision is taken under the root's
 * lock and counts the volumes really in the root's directory (a volume being created has its
 * meta.json from the moment it is claimed), so concurrent creates, here or on another host sharing
 * the tree, never overshoot.
 */
export class Placement {
  constructor(
    private readonly index: VolumeIndex,
    private readonly locks: LockManager,
  ) {}

  /** Usage of a root as its directory says now; sizes come from the index when it knows the volume. */
  async usageOnDisk(rootPath: string): Promise<Usage> {
    const usage: Usage = { volumes: 0, bytes: 0 };
    for (const name of await fs.readdir(rootPath)) {
      const uid = uidOfDirName(name);
      if (!uid) continue;
      usage.volumes += 1;
      const dir = path.join(rootPath, name);
      const known = this.index.get(uid);
      if (known?.dir === dir && known.meta) usage.bytes += known.meta.size;
      else usage.bytes += await readMeta(dir, uid).then((m) => m.size, () => 0);
    }
    return usage;
  }

  private freeQuota(root: Root): number {
    const max = root.settings.maxTotalSize;
    return max === undefined ? Number.POSITIVE_INFINITY : max - this.index.usage(root.path).bytes;
  }

  /** Roots that could take a volume of this size according to the index (no locks: an estimate). */
  candidates(sizeBytes: number): Root[] {
    return this.index
      .rootList()
      .filter((root) => quotaRefusal(root, this.index.usage(root.path), sizeBytes, true) === null)
      .sort((a, b) => this.freeQuota(b) - this.freeQuota(a));
  }

  /**
   * Runs `claim` under the lock of the first root (most free quota first) that has room for a new
   * volume of `sizeBytes`; `claim` must make the volume count (mkdir + meta.json) before it returns.
   */
  async claim<T>(sizeBytes: number, claim: (root: Root) => Promise<T>, preferred?: string): Promise<T> {
    const order = this.candidates(sizeBytes);
    if (preferred) order.sort((a, b) => Number(b.path === preferred) - Number(a.path === preferred));
    const reasons: string[] = [];
    const unavailable = (root: Root) => {
      reasons.push(`${root.path} is not available (settings.json is gone: unmounted?)`);
      void this.index.scanAll().catch(() => undefined); // so that status reports it at once
      return null;
    };
    for (const root of order) {
      // Checked before the root lock too, whose mutex would otherwise be made in an empty mount point.
      if (!(await rootAvailable(root.path))) {
        unavailable(root);
        continue;
      }
      const result = await this.locks.withRootLock(root.path, async () => {
        if (!(await rootAvailable(root.path))) return unavailable(root);
        const refusal = quotaRefusal(root, await this.usageOnDisk(root.path), sizeBytes, true);
        if (refusal) {
          reasons.push(refusal);
          return null;
        }
        return { value: await claim(root) };
      });
      if (result) return result.value;
    }
    for (const root of this.index.rootList())
      if (!order.includes(root)) reasons.push(quotaRefusal(root, this.index.usage(root.path), sizeBytes, true) ?? `${root.path} is full`);
    throw new NoRoomError(`no storage root has room for a volume of ${sizeBytes} bytes`, {
      reasons: reasons.length ? reasons : ['no storage root is configured'],
    });
  }

  /** Checks, under the root's lock, that a volume of `oldSize` may grow to `newSize`; runs `grow` if so. */
  async grow<T>(root: Root, oldSize: number, newSize: number, grow: () => Promise<T>): Promise<T> {
    return this.locks.withRootLock(root.path, async () => {
      await assertRootAvailable(root.path);
      const refusal = quotaRefusal(root, await this.usageOnDisk(root.path), newSize - oldSize, false, newSize);
      if (refusal) throw new NoRoomError(`the volume cannot grow to ${newSize} bytes: ${refusal}`);
      return grow();
    });
  }
}

/** A root whose settings.json vanished (unmounted filesystem) is never written into. */
export async function rootAvailable(rootPath: string): Promise<boolean> {
  return fs.access(path.join(rootPath, SETTINGS_FILE)).then(
    () => true,
    () => false,
  );
}

export async function assertRootAvailable(rootPath: string): Promise<void> {
  if (!(await rootAvailable(rootPath))) throw new UnavailableError(`storage root ${rootPath} is not available (settings.json is gone: unmounted?)`);
}
