import { existsSync, promises as fs } from 'node:fs';
import { performance } from 'node:perf_hooks';
import lockfile from 'proper-lockfile';
import { errorFields, type Logger } from '../log.js';

/**
 * proper-lockfile's own stale check (mtime against this host's clock) never fires: `staleness` decides.
 * A holder's refresh still reports its lock compromised when the mutex is gone or its mtime is no longer
 * the one it set (another took it over); refreshes that merely fail are retried instead of being counted.
 */
const NEVER_STALE = Number.MAX_SAFE_INTEGER;

/**
 * The mutexes of locks (proper-lockfile's `mkdir`, refreshed every `staleMs / 4` while held). Staleness is
 * never judged by comparing a mutex's mtime with this host's clock: the holder's refresh sets that mtime
 * with the holder's own clock, and hosts sharing a tree may disagree by minutes (a host 10 minutes behind
 * would have every live lock of its taken over; one ahead would keep its dead locks for as long). A mutex
 * is stale when its mtime has not changed for `staleMs`, as this daemon's monotonic clock measures it.
 */
export class Mutexes {
  private readonly updateMs: number;
  /** Each mutex seen held by another: its mtime then, and since when (monotonic ms) it has not changed. */
  private readonly seen = new Map<string, { mtimeMs: number; since: number }>();
  /** How many mutexes seen held by another are being watched for staleness (bounded: forgotten once taken or gone). */
  get watched(): number {
    return this.seen.size;
  }

  /** Mutexes of this daemon that another holder took over while held (should stay 0; shown in `status`). */
  compromised = 0;

  constructor(
    private readonly staleMs: number,
    private readonly log: Logger,
  ) {
    this.updateMs = Math.max(1000, Math.floor(staleMs / 4));
  }

  private mutexOptions(lockfilePath: string, what: string) {
    return {
      lockfilePath,
      realpath: false,
      stale: NEVER_STALE,
      update: this.updateMs,
      onCompromised: (err: Error) => {
        // Its directory gone with the mutex inside (a destroy's rename into the bin, before its release): no other holder.
        if (!existsSync(what)) return this.log.debug('lock left with its directory', { what });
        this.compromised += 1;
        this.log.error('lock compromised: another holder took it over', { what, ...errorFields(err) });
      },
    };
  }

  /**
   * Whether the mutex `mutex` is absent, fresh, or stale: present with the same mtime for `staleMs`
   * of this daemon's own time since it was first seen so. A mutex just seen is fresh whatever its
   * mtime says, so a dead holder's lock is recovered `staleMs` after this daemon first meets it.
   */
  async staleness(mutex: string): Promise<'absent' | 'fresh' | 'stale'> {
    const st = await fs.stat(mutex).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (!st) {
      this.seen.delete(mutex);
      return 'absent';
    }
    const now = performance.now();
    const last = this.seen.get(mutex);
    if (!last || last.mtimeMs !== st.mtimeMs) {
      this.seen.set(mutex, { mtimeMs: st.mtimeMs, since: now });
      return 'fresh';
    }
    return now - last.since >= this.staleMs ? 'stale' : 'fresh';
  }

  /**
   * Takes `target`'s mutex at once, or takes over one that `staleness` finds stale (removed, then made
   * anew, as proper-lockfile does); throws proper-lockfile's ELOCKED when it is held.
   */
  async lock(target: string, mutex: string): Promise<() => Promise<void>> {
    const options = { ...this.mutexOptions(mutex, target), retries: 0 };
    try {
      const release = await lockfile.lock(target, options);
      // Held now: what was seen of another holder is over (each volume ever refused was kept for the daemon's lifetime).
      this.seen.delete(mutex);
      return leavingWithItsDirectory(target, release);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOCKED' || (await this.staleness(mutex)) !== 'stale') throw err;
      this.log.warn('taking over a lock whose holder stopped refreshing it', { what: target, staleMs: this.staleMs });
      this.seen.delete(mutex);
      await fs.rm(mutex, { recursive: true, force: true });
      return leavingWithItsDirectory(target, await lockfile.lock(target, options));
    }
  }
}

/**
 * A mutex's release that is no error once its directory is gone: a destroy renames the volume into the bin
 * under its lock, and a refresh between that rename and the release (2.5 s apart, likely under load: 200
 * parallel destroys) found the mutex gone, so the release threw ERELEASED and the destroy, done, answered 500.
 */
function leavingWithItsDirectory(target: string, release: () => Promise<void>): () => Promise<void> {
  return () =>
    release().catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ERELEASED' || existsSync(target)) throw err;
    });
}

/** Runs calls one at a time, in the order they were asked (a failed one does not stop the next). */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}
