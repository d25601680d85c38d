import { constants as fsConstants, promises as fs } from 'node:fs';
import path from 'node:path';
import { NoRoomError, UnavailableError } from '../errors.js';
import type { LockManager } from './locks.js';
import { SETTINGS_FILE } from './layout.js';
import { readSettings } from './settings.js';
import { readUsageStamp, writeUsageStamp } from './usage-stamp.js';
import { loadVolumeRecord, quotaBytes, uidOfVolumeDir } from './volume-record.js';
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
 *
 * Sizes of volumes the index knows come from the index (reading 10,000 meta.json files per create
 * would be slow). A volume that grows (resize, an import learning its length) changes its size under
 * the root's lock, and first writes a new token in the root's usage stamp (`.elemento-usage`): a
 * daemon that finds a stamp it did not see last reads that root's sizes from disk once, and reloads
 * the volumes its index had wrong, before it decides. A grow on another host sharing the tree is
 * thus counted at once, whatever that host's index or this one's watcher have seen.
 */
export class Placement {
  /** The usage stamp of each root as this daemon last saw it with its index up to date. */
  private readonly seenStamps = new Map<string, string>();

  constructor(
    private readonly index: VolumeIndex,
    private readonly locks: LockManager,
  ) {}

  /** Usage of a root as its directory says now (root lock held). */
  async usageOnDisk(rootPath: string): Promise<Usage> {
    const stamp = await readUsageStamp(rootPath);
    const indexTrusted = stamp === (this.seenStamps.get(rootPath) ?? this.index.scannedStamp(rootPath));
    const usage: Usage = { volumes: 0, bytes: 0 };
    // Counted as the index counts (volume-record.ts): a broken volume by its data file, an upper-case name too.
    for (const entry of await fs.readdir(rootPath, { withFileTypes: true })) {
      const name = entry.name;
      const uid = uidOfVolumeDir(name);
      // A file with a volume's name is no volume, for the index either (a link is one, broken).
      if (!uid || entry.isFile()) continue;
      usage.volumes += 1;
      const dir = path.join(rootPath, name);
      const known = this.index.copiesOf(uid).find((copy) => copy.dir === dir);
      if (indexTrusted && known) {
        usage.bytes += quotaBytes(known);
        continue;
      }
      const record = await loadVolumeRecord(rootPath, dir).catch(() => null);
      const bytes = record ? quotaBytes(record) : 0;
      usage.bytes += bytes;
      if (known && quotaBytes(known) !== bytes) await this.index.reloadDir(dir);
    }
    this.seenStamps.set(rootPath, stamp);
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
      reasons.push(notAvailable(root.path));
      void this.index.scanAll().catch(() => undefined); // so that status reports it at once
      return null;
    };
    for (const root of order) {
      // Checked before the root lock too, whose mutex would otherwise be made in an empty mount point.
      if (!(await rootAvailable(root.path))) {
        unavailable(root);
        continue;
      }
      // Asked first: the root's lock would otherwise retry its mkdir for seconds on a read-only mount.
      const passOver = (why: string) => reasons.push(`${root.path} cannot be written (${why})`);
      const notWritable = await fs.access(root.path, fsConstants.W_OK).then(() => null, (err: unknown) => unwritable(err));
      if (notWritable) {
        passOver(notWritable);
        continue;
      }
      let result: { value: T } | null;
      let claiming = false;
      try {
        result = await this.locks.withRootLock(root.path, async () => {
          const now = await rootAsItIs(root);
          if (typeof now === 'string') {
            reasons.push(now);
            void this.index.scanAll().catch(() => undefined); // so that status reports it at once
            return null;
          }
          const refusal = quotaRefusal(now, await this.usageOnDisk(root.path), sizeBytes, true);
          if (refusal) {
            reasons.push(refusal);
            return null;
          }
          claiming = true;
          return { value: await claim(root) };
        });
      } catch (err) {
        // A root mounted read-only since the check above (its lock cannot be made) is passed over; a
        // failure of the claim itself is the request's answer.
        const why = claiming ? null : unwritable(err);
        if (!why) throw err;
        passOver(why);
        continue;
      }
      if (result) return result.value;
    }
    for (const root of this.index.rootList())
      if (!order.includes(root)) reasons.push(quotaRefusal(root, this.index.usage(root.path), sizeBytes, true) ?? `${root.path} is full`);
    throw new NoRoomError(`no storage root has room for a volume of ${sizeBytes} bytes`, {
      reasons: reasons.length ? reasons : ['no storage root is configured'],
    });
  }

  /**
   * Checks, under the root's lock, that the volume in `dir` may grow from `oldSize` to `newSize`; if
   * so, stamps the root and runs `grow` (which writes the new size in meta.json), then updates the index.
   */
  async grow<T>(root: Root, dir: string, oldSize: number, newSize: number, grow: () => Promise<T>): Promise<T> {
    return this.locks.withRootLock(root.path, async () => {
      const now = await rootAsItIs(root);
      if (typeof now === 'string') throw new UnavailableError(`storage root ${now}`);
      const refusal = quotaRefusal(now, await this.usageOnDisk(root.path), newSize - oldSize, false, newSize);
      if (refusal) throw new NoRoomError(`the volume cannot grow to ${newSize} bytes: ${refusal}`);
      // Stamped before the size changes: a crash in between only makes the others read the sizes again.
      const stamp = await writeUsageStamp(root.path);
      const grown = await grow();
      await this.index.reloadDir(dir);
      this.seenStamps.set(root.path, stamp);
      return grown;
    });
  }
}

const notAvailable = (rootPath: string) => `${rootPath} is not available (settings.json is gone: unmounted?)`;

/** A root whose settings.json vanished (unmounted filesystem) is never written into. */
export async function rootAvailable(rootPath: string): Promise<boolean> {
  return fs.access(path.join(rootPath, SETTINGS_FILE)).then(
    () => true,
    () => false,
  );
}


/**
 * The root with its settings.json read now (root lock held): an operator may have changed the quotas
 * through another host sharing the tree, which this daemon's watcher does not see. Answers why it
 * cannot be used when settings.json is gone or no longer valid.
 */
async function rootAsItIs(root: Root): Promise<Root | string> {
  try {
    return { ...root, settings: await readSettings(root.path) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return notAvailable(root.path);
    return `${root.path} is not usable now (${code ? `settings.json cannot be read: ${code}` : (err as Error).message})`;
  }
}

/** Why an error says a root cannot be written now, or null for any other error. */
function unwritable(err: unknown): string | null {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EROFS' || code === 'EACCES' || code === 'EPERM') return code;
  return err instanceof UnavailableError ? err.message : null;
}
