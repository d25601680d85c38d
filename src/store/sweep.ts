import { promises as fs } from 'node:fs';
import path from 'node:path';
import fse from 'fs-extra';
import { ConflictError, NotFoundError, UnavailableError } from '../errors.js';
import { faultPoint } from '../faults.js';
import { errorFields, type Logger } from '../log.js';
import { BIN_DIR, isDeadClaimCandidate, isTempName, META_FILE, newUid, parseLockMarker, uidOfDirName } from './layout.js';
import type { LockManager } from './locks.js';
import { RBD_POINTER_FILE } from './rbd-pointer.js';
import { moveToBin } from './recovery.js';
import type { Root } from './roots.js';

/**
 * What a crash left in the tree, swept at start and then until done (STYLE lesson 8):
 * - each root's bin (destroys and converts that died before their purge) is emptied, in the background;
 * - a volume holding lock markers or temp files whose mutex no live process holds is recovered
 *   (taking its lock runs recoverVolume);
 * - a volume whose mutex is still fresh (its holder died less than `lockStaleMs` ago, or is alive
 *   on another host) is left for a later pass, never obeyed forever;
 * - a dead claim, a volume directory holding only the daemon's own entries (a create killed between
 *   its mkdir and its meta.json; isDeadClaimCandidate), is removed under the root's lock: a live claim
 *   holds that lock until its meta.json is written, so under it such a directory has no live owner;
 * - a link, or a name that is not a volume's (upper case), is never swept: nothing is done through it.
 */
export type SweepOutcome = 'done' | 'later';

async function removeDeadClaim(dir: string, locks: LockManager, log: Logger): Promise<void> {
  await locks.withRootLock(path.dirname(dir), async () => {
    const files = await fs.readdir(dir).catch(() => null);
    if (!files || !isDeadClaimCandidate(files)) return;
    log.warn('removing a volume directory whose creation died before its meta.json', { dir });
    const binned = await moveToBin(dir, newUid());
    faultPoint('sweep.after-dead-claim-rename');
    await fse.remove(binned);
  });
}

/** Sweeps one volume directory; `withRootLock` false at start, so that start never waits on a dead root lock. */
export async function sweepVolume(dir: string, locks: LockManager, log: Logger, withRootLock: boolean): Promise<SweepOutcome> {
  const uid = uidOfDirName(path.basename(dir));
  if (!uid || (await fs.lstat(dir).catch(() => null))?.isSymbolicLink() !== false) return 'done';
  const files = await fs.readdir(dir).catch(() => null);
  if (!files) return 'done';
  if (isDeadClaimCandidate(files)) {
    if (!withRootLock) return 'later';
    await removeDeadClaim(dir, locks, log);
    return 'done';
  }
  if (!files.some((f) => isTempName(f) || parseLockMarker(f))) return 'done';
  if ((await locks.isVolumeMutexHeld(dir)) && !(await locks.breakIfHolderDead(dir))) return 'later';
  try {
    await locks.withVolumeLock(dir, 'recover', uid, async () => {
      for (const f of (await fs.readdir(dir)).filter(isTempName)) await fs.rm(path.join(dir, f), { force: true, recursive: true });
    });
  } catch (err) {
    if (err instanceof NotFoundError) return 'done';
    if (err instanceof ConflictError) return 'later';
    throw err;
  }
  return 'done';
}

export interface SweepOptions {
  /** Only these volume directories (the daemon passes those its scan found leftovers in). */
  suspects?: string[];
  /** Removes a bin entry; the daemon's purger does it in the background, so the start does not wait. */
  purge: (binned: string) => void;
}

/**
 * The start-up sweep of every root: what is in its bin is handed to `purge`, and the suspects (or
 * every volume directory) are swept, so a start with 10,000 volumes does not read every directory
 * twice. Answers the volume directories left for a later pass.
 */
export async function sweepRoots(roots: Root[], locks: LockManager, log: Logger, opts: SweepOptions): Promise<string[]> {
  const { suspects, purge } = opts;
  const later: string[] = [];
  for (const root of roots) {
    try {
      const bin = path.join(root.path, BIN_DIR);
      const binned = await fs.readdir(bin).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') log.warn('the bin of a root cannot be read; its leftovers stay', { bin, ...errorFields(err) });
        return [] as string[];
      });
      for (const entry of binned) purge(path.join(bin, entry));
      const names = suspects ? suspects.filter((d) => path.dirname(d) === root.path).map((d) => path.basename(d)) : await fs.readdir(root.path);
      const dirs = names.filter((name) => uidOfDirName(name)).map((name) => path.join(root.path, name));
      later.push(...(await sweepEach(dirs, locks, log, false)));
    } catch (err) {
      log.error('start-up sweep of a root failed', { root: root.path, ...errorFields(err) });
    }
  }
  return later;
}

/** A later pass over what the start-up sweep left; answers what is still left. */
export function sweepAgain(dirs: string[], locks: LockManager, log: Logger): Promise<string[]> {
  return sweepEach(dirs, locks, log, true);
}

/**
 * Sweeps `dirs` one after the other and answers those left for a later pass. One volume that cannot be
 * swept now never stops the others'; once a Ceph cluster did not answer (503), the Ceph volumes left in
 * the pass wait for the next one untried, so that a start never waits out rbd's timeout once per volume.
 */
async function sweepEach(dirs: string[], locks: LockManager, log: Logger, withRootLock: boolean): Promise<string[]> {
  const later: string[] = [];
  let clusterDown = false;
  for (const dir of dirs) {
    const outcome =
      clusterDown && (await isCephVolume(dir))
        ? 'later'
        : await sweepVolume(dir, locks, log, withRootLock).catch((err) => {
            log.warn('sweep of a volume failed; trying again later', { dir, ...errorFields(err) });
            if (err instanceof UnavailableError) clusterDown = true;
            return 'later' as const;
          });
    if (outcome === 'later') later.push(dir);
  }
  return later;
}

/** Whether a volume directory holds a Ceph volume (its pointer, or meta.json's format): its recovery may ask the cluster. */
async function isCephVolume(dir: string): Promise<boolean> {
  if (await fs.stat(path.join(dir, RBD_POINTER_FILE)).then(() => true, () => false)) return true;
  try {
    return JSON.parse(await fs.readFile(path.join(dir, META_FILE), 'utf8')).format === 'rbd';
  } catch {
    return false;
  }
}
