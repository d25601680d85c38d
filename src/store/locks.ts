import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConflictError, NotFoundError } from '../errors.js';
import { errorFields, type Logger } from '../log.js';
import { isDeadHereAndNow, ownMarker, readMarkerOwner } from './lock-owner.js';
import { Mutexes, SerialQueue } from './mutex.js';
import { lockMarkerName, newUid, parseLockMarker, ROOT_MUTEX, VOLUME_MUTEX } from './layout.js';
import { faultPoint } from '../faults.js';

/**
 * One way to lock (STYLE lesson 7). A volume lock is two things:
 * - the mutex: proper-lockfile's `mkdir` of `<volume>/.elemento.lock`, refreshed while held, stale
 *   after `staleMs` without a refresh (a dead daemon's lock is taken over, on any host sharing the tree);
 * - the marker `elemento.<purpose>.<operation_uid>.ignore` (SPEC §3), which tells operators and the
 *   index what is running.
 * A marker found when the mutex is free was left by a dead holder: `recover` repairs the volume
 * before the new operation starts. Order when both are needed: the root lock first, then the volume.
 * Staleness is judged by this daemon's own clock, never by a mutex's mtime against it (src/store/mutex.ts).
 */
export interface LockHandle {
  readonly operationUid: string;
  readonly purpose: string;
  release(): Promise<void>;
}

export type RecoverFn = (dir: string, staleMarkers: string[]) => Promise<void>;

/** How long a quota decision waits for another holder of the root's lock before answering 409 (an object so that a test can shorten it). */
export const rootLockWait = { ms: 30_000 };

export class LockManager {
  /** Volume directories whose lock this daemon holds, with the purpose: a refusal names it before its marker is written. */
  private readonly held = new Map<string, string>();
  /** Volume directories whose lock holder is changing the data file in place, with what it does ("snapshotted"). */
  private readonly rewriting = new Map<string, string>();
  /** Downloads streaming a volume's data file, per volume directory. */
  private readonly readers = new Map<string, number>();
  private readonly mutexes: Mutexes;
  /** Per root: this daemon's own quota decisions, in turn (see withRootLock). */
  private readonly rootQueues = new Map<string, SerialQueue>();
  /** Per root: since when its mutex has been found held by another, and when it was last found so (monotonic ms). */
  private readonly rootHeld = new Map<string, { since: number; last: number }>();

  constructor(
    private readonly staleMs: number,
    private readonly log: Logger,
    private recover: RecoverFn = async () => undefined,
  ) {
    this.mutexes = new Mutexes(staleMs, log);
  }

  /** Locks of this daemon that another holder took over while held (should stay 0; shown in `status`). */
  get compromised(): number {
    return this.mutexes.compromised;
  }

  /** Mutexes seen held by another and watched for staleness (for the tests of a daemon running for months). */
  get watchedMutexes(): number {
    return this.mutexes.watched;
  }

  setRecovery(fn: RecoverFn): void {
    this.recover = fn;
  }

  /** Markers present in a volume directory. */
  async markersIn(dir: string): Promise<string[]> {
    return (await fs.readdir(dir)).filter((n) => parseLockMarker(n) !== null);
  }

  /** Takes a volume's lock or fails at once with 409 naming what holds it. */
  async acquireVolume(dir: string, purpose: string, uid: string): Promise<LockHandle> {
    // Nothing is written through a volume directory that is a link (one swapped in by hand).
    if ((await fs.lstat(dir).catch(() => null))?.isSymbolicLink())
      throw new ConflictError(`volume ${uid} is broken: the volume directory is a symbolic link, which the daemon never follows`, { vid: uid });
    let releaseMutex: () => Promise<void>;
    try {
      releaseMutex = await this.mutexes.lock(dir, path.join(dir, VOLUME_MUTEX));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new NotFoundError(`volume ${uid} does not exist`, { vid: uid });
      if (code !== 'ELOCKED') throw err;
      // The winner of a race names itself a moment after its mutex is made (proper-lockfile stats it before
      // answering): look again briefly rather than refuse with no name.
      let holders: string[] = [];
      for (let look = 0; look < 5 && !holders.length; look++) {
        if (look) await new Promise((resolve) => setTimeout(resolve, 20));
        holders = (await this.markersIn(dir).catch(() => [])).map((m) => parseLockMarker(m)!.purpose);
        const held = this.held.get(dir);
        if (held && !holders.includes(held)) holders.push(held);
      }
      throw new ConflictError(`volume ${uid} is locked by another operation (${holders.join(', ') || 'starting'})`, { vid: uid });
    }
    this.held.set(dir, purpose);
    const operationUid = newUid();
    const marker = path.join(dir, lockMarkerName(purpose, operationUid));
    faultPoint('lock.after-mutex');
    try {
      const stale = await this.markersIn(dir);
      // Our marker goes in before the recovery of the dead ones, so that no sweep of this host
      // takes the mutex for a dead holder's while we recover (breakIfHolderDead).
      await fs.writeFile(marker, JSON.stringify(ownMarker(purpose)), { flag: 'wx' });
      faultPoint('lock.after-marker');
      if (stale.length) {
        this.log.warn('recovering a volume left locked by a dead operation', { vid: uid, markers: stale });
        await this.recover(dir, stale);
      }
      return {
        operationUid,
        purpose,
        release: async () => {
          this.rewriting.delete(dir);
          // A marker the filesystem will not remove now is left for the next holder to recover, as a crash
          // here would leave it: the mutex goes all the same, or the volume would stay locked until a restart.
          await fs.rm(marker, { force: true }).catch((err: unknown) =>
            this.log.warn('lock marker not removed: recovered by the next operation on the volume', { marker, ...errorFields(err) }),
          );
          faultPoint('lock.before-mutex-release');
          this.held.delete(dir);
          await releaseMutex();
        },
      };
    } catch (err) {
      await fs.rm(marker, { force: true });
      this.held.delete(dir);
      await releaseMutex();
      throw err;
    }
  }

  /**
   * Called under the volume's lock just before its data file is changed in place (a qcow2's tables by
   * a snapshot or a resize): 409 while this daemon streams that file to a download, which would get
   * old and new bytes mixed; from then until the lock's release, downloads of it are refused instead
   * (beginRead). Both checks run without awaiting, so one of the two always sees the other.
   */
  rewriteInPlace(dir: string, uid: string, action: string): void {
    const readers = this.readers.get(dir) ?? 0;
    if (readers)
      throw new ConflictError(`volume ${uid} is being downloaded (${readers} download(s)) and cannot be ${action} until they end: its image would change under them`, { vid: uid });
    this.rewriting.set(dir, action);
  }

  /** A download of the volume's data file starts (see rewriteInPlace); answers the function that says it ended. */
  beginRead(dir: string, uid: string): () => void {
    const action = this.rewriting.get(dir);
    if (action) throw new ConflictError(`volume ${uid} is being ${action}, which changes its image in place: download it once that is over`, { vid: uid });
    this.readers.set(dir, (this.readers.get(dir) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.readers.get(dir) ?? 1) - 1;
      if (left) this.readers.set(dir, left);
      else this.readers.delete(dir);
    };
  }

  async withVolumeLock<T>(dir: string, purpose: string, uid: string, fn: (lock: LockHandle) => Promise<T>): Promise<T> {
    const lock = await this.acquireVolume(dir, purpose, uid);
    try {
      return await fn(lock);
    } finally {
      await lock.release();
    }
  }

  /**
   * Serialises quota decisions on one root (across daemons sharing the tree too). Held briefly:
   * waits up to `rootLockWait.ms` for another holder (or for a dead one's mutex to go stale) instead
   * of failing at once. This daemon's own decisions queue for the mutex in turn, waiting for other holders
   * only at the head: polling the mutex against one another, 200 parallel creates on a root of
   * 12,500 volumes were served in no order and 44 of them waited out the 30 s (409 "busy"). The wait for
   * another holder is one for the whole queue (withRootMutex).
   */
  async withRootLock<T>(rootPath: string, fn: () => Promise<T>): Promise<T> {
    let queue = this.rootQueues.get(rootPath);
    if (!queue) this.rootQueues.set(rootPath, (queue = new SerialQueue()));
    return queue.run(() => this.withRootMutex(rootPath, fn));
  }

  private async withRootMutex<T>(rootPath: string, fn: () => Promise<T>): Promise<T> {
    const mutex = path.join(rootPath, ROOT_MUTEX);
    let release: () => Promise<void>;
    for (let pause = 5; ; pause = Math.min(100, pause * 1.3)) {
      try {
        release = await this.mutexes.lock(rootPath, mutex);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') throw err;
        // The wait counts from when this daemon's waiters, one after another, began to find the mutex held: those
        // queued behind one that waited it out are refused at once (each waiting its own 30 s, the 50th queued
        // learnt the root was busy after 25 minutes). A break of over a second in the finding starts a new wait.
        const now = performance.now();
        const held = this.rootHeld.get(rootPath);
        const since = held && now - held.last < 1000 ? held.since : now;
        this.rootHeld.set(rootPath, { since, last: now });
        if (now - since > rootLockWait.ms) throw new ConflictError(`storage root ${rootPath} is busy; try again`);
        await new Promise((r) => setTimeout(r, pause * (1 + Math.random())));
      }
    }
    this.rootHeld.delete(rootPath);
    faultPoint('root-lock.after-acquire');
    try {
      return await fn();
    } finally {
      await release();
    }
  }

  /**
   * Breaks a volume mutex whose holder is known dead: every lock marker in the volume was written by a
   * process of this host that no longer runs (a daemon restarted after a crash need not wait `staleMs`).
   * Answers false, touching nothing, when that cannot be proved. Whatever the mutex's age: staleness is
   * judged from when this daemon first saw it (mutex.ts), so a daemon restarted more than `staleMs / 2`
   * after the crash (once only a young mutex was broken) kept the volume locked `staleMs` more. Another
   * host that finds the mutex stale meanwhile takes it over the same way (removed, then made anew).
   */
  async breakIfHolderDead(dir: string): Promise<boolean> {
    const mutex = path.join(dir, VOLUME_MUTEX);
    const markers = await this.markersIn(dir).catch(() => []);
    if (!markers.length) return false;
    for (const marker of markers) {
      // A marker cut short by the kill (empty, half-written) proves nothing: the mutex then goes stale.
      if (!isDeadHereAndNow(await readMarkerOwner(dir, marker))) return false;
    }
    this.log.warn('breaking the lock of a dead process of this host', { dir, markers });
    await fs.rm(mutex, { recursive: true, force: true });
    return true;
  }

  /** True when a live holder has this volume's mutex (used by the start-up sweep). */
  async isVolumeMutexHeld(dir: string): Promise<boolean> {
    return (await this.mutexes.staleness(path.join(dir, VOLUME_MUTEX))) === 'fresh';
  }
}
