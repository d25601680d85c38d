import path from 'node:path';
import { watch as watchUpperTree, type FSWatcher as UpperTreeWatcher } from 'chokidar';
import { errorFields, type Logger } from '../log.js';
import { BIN_DIR, isTempName, ROOT_MUTEX, SETTINGS_FILE, USAGE_STAMP, VOLUME_MUTEX } from './layout.js';
import { isWatchLimit, TreeWatcher } from './tree-watcher.js';
import { uidOfVolumeDir } from './volume-record.js';

const VOLUME_DEBOUNCE_MS = 100;
const ROOTS_DEBOUNCE_MS = 300;
/** The pace of periodic rescans (an object so that a test can shorten the fallback). */
export const rescanPacing = {
  /** A periodic rescan waits at least this many times as long as the last one took (at most ~1/10 of a CPU on rescans). */
  pace: 10,
  /** The interval of the rescans run when some directory could not be watched, even with rescans turned off (0). */
  fallbackMs: 30_000,
};

/** What the watches need of the index they keep current (volume-index.ts). */
export interface WatchedIndex {
  readonly mnt: string;
  readonly log: Logger;
  /** The roots of the last full scan. */
  rootPaths(): string[];
  /** Every volume directory the index holds on an available root. */
  volumeDirs(): Iterable<string>;
  /** Re-reads one volume directory; reports leftovers found there. */
  reloadChanged(dir: string): Promise<void>;
  /** A full scan (the set of roots may have changed). */
  rescan(): Promise<void>;
}

/**
 * The index's watches and timers: chokidar on the upper tree (where roots appear and vanish), one
 * inotify watch per root and volume directory (tree-watcher.ts), debounced reloads of the volume
 * directories that changed, and the periodic full rescan for what no watcher sees (another host's
 * writes on Gluster, and directories the host's inotify limits left unwatched).
 * The periodic rescan starts `rescanIntervalMs` after the previous one ended, or `rescanPacing.pace` times as
 * long as that one took if longer: with 50,000 volumes a rescan takes ~9 s of CPU, and one every 30 s
 * kept a quarter of a CPU busy on an idle host.
 */
export class IndexWatch {
  private readonly watcher: TreeWatcher;
  private upperWatcher: UpperTreeWatcher | null = null;
  private upperPaths = new Set<string>();
  private readonly pendingVolumes = new Map<string, NodeJS.Timeout>();
  private rootsTimer: NodeJS.Timeout | null = null;
  private rescanTimer: NodeJS.Timeout | null = null;
  private rescanIntervalMs = 0;
  private lastRescanMs = 0;
  /** chokidar could not watch some of the upper tree for want of inotify watches. */
  private upperRefused = false;
  /** Whether the log last said that some directories are unwatched (said once, not per directory). */
  private saidUnwatched = false;
  private closed = false;

  constructor(private readonly index: WatchedIndex) {
    this.watcher = new TreeWatcher(
      (changed) => this.onChange(changed),
      (dir, err) => index.log.warn('watcher error', { dir, ...errorFields(err) }),
    );
  }

  /** Starts the upper-tree watcher at the directories the last scan `looked` in, and the periodic rescan. */
  async start(looked: string[], rescanIntervalMs: number): Promise<void> {
    this.watchVolumes();
    const upper = watchUpperTree([], { ignoreInitial: true, depth: 0, ignored: (p) => path.basename(p).startsWith('.') });
    this.upperWatcher = upper;
    upper.on('all', (_event, p) => this.onChange(p));
    upper.on('error', (err) => {
      if (!isWatchLimit(err)) return this.index.log.warn('watcher error', errorFields(err));
      this.upperRefused = true;
      this.sayWatched();
    });
    const ready = new Promise<void>((resolve) => upper.once('ready', () => resolve()));
    this.watchUpper(looked);
    await ready;
    this.rescanIntervalMs = rescanIntervalMs;
    this.sayWatched();
    this.scheduleRescan();
  }

  /** The wait before the next periodic rescan (0: none): see the class comment. */
  private rescanDelay(): number {
    const interval = this.rescanIntervalMs > 0 ? this.rescanIntervalMs : this.unwatched() ? rescanPacing.fallbackMs : 0;
    return interval > 0 ? Math.max(interval, rescanPacing.pace * this.lastRescanMs) : 0;
  }

  private scheduleRescan(): void {
    if (this.closed || this.rescanTimer) return;
    const delay = this.rescanDelay();
    if (delay === 0) return;
    this.rescanTimer = setTimeout(() => {
      const started = performance.now();
      this.index
        .rescan()
        .catch((err) => this.index.log.error('rescan failed', errorFields(err)))
        .finally(() => {
          this.lastRescanMs = performance.now() - started;
          this.rescanTimer = null;
          this.scheduleRescan();
          this.index.log.debug('periodic rescan', { ms: Math.round(this.lastRescanMs), nextInMs: this.rescanDelay() });
        });
    }, delay);
    this.rescanTimer.unref();
  }

  /** Whether some directory the index keeps current has no watch (the inotify limits). */
  private unwatched(): boolean {
    return this.upperRefused || this.watcher.refused.size > 0;
  }

  /**
   * Says once that the inotify limits left directories unwatched (and that rescans stand in for
   * their watches), and once when every one is watched again; starts the fallback rescans.
   */
  private sayWatched(): void {
    const unwatched = this.unwatched();
    if (unwatched === this.saidUnwatched) return;
    this.saidUnwatched = unwatched;
    if (!unwatched) return void this.index.log.info('every directory of the tree is watched again');
    const code = this.watcher.limitCode ?? 'ENOSPC';
    const limit = code === 'EMFILE' ? 'fs.inotify.max_user_instances' : 'fs.inotify.max_user_watches';
    this.index.log.warn(`the host's inotify limit is reached (${code}): changes made by hand in unwatched directories are seen only by the full rescans; raise ${limit}`, {
      unwatchedVolumeDirs: this.watcher.refused.size,
      upperTreeUnwatched: this.upperRefused,
      rescanEveryMs: this.rescanDelay(),
    });
    this.scheduleRescan();
  }

  /** Points every watch at what a full scan found. */
  follow(looked: string[]): void {
    this.watchUpper(looked);
    this.watchVolumes();
  }

  /** Watches one volume directory (before it is read, so a change made meanwhile is not missed). */
  add(dir: string): void {
    this.watcher.add(dir);
    this.sayWatched();
  }

  remove(dir: string): void {
    this.watcher.remove(dir);
    this.sayWatched();
  }

  /**
   * chokidar watches the mount directory and the directories one and two levels down that are not
   * roots (depth 0: their own entries), and each root's settings.json. A root's own entries (its
   * volumes) are the TreeWatcher's.
   */
  private watchUpper(looked: string[]): void {
    if (!this.upperWatcher) return;
    const roots = this.index.rootPaths();
    const wanted = new Set([...looked.filter((d) => !roots.includes(d)), ...roots.map((r) => path.join(r, SETTINGS_FILE))]);
    const gone = [...this.upperPaths].filter((p) => !wanted.has(p));
    const added = [...wanted].filter((p) => !this.upperPaths.has(p));
    if (gone.length) this.upperWatcher.unwatch(gone);
    if (added.length) this.upperWatcher.add(added);
    // A directory that just appeared may have got its settings.json before its watch: look once more.
    const firstTime = this.upperPaths.size === 0;
    this.upperPaths = wanted;
    if (!firstTime && added.some((p) => path.basename(p) !== SETTINGS_FILE)) this.scheduleRootsRescan();
  }

  private watchVolumes(): void {
    this.watcher.sync(new Set([...this.index.rootPaths(), ...this.index.volumeDirs()]));
    if (this.upperWatcher) this.sayWatched();
  }

  private onChange(changed: string): void {
    const base = path.basename(changed);
    if (base === BIN_DIR || base === VOLUME_MUTEX || base === ROOT_MUTEX || base === USAGE_STAMP || isTempName(base)) return;
    const { mnt } = this.index;
    const parts = path.relative(mnt, changed).split(path.sep);
    const at = parts.findIndex((p) => uidOfVolumeDir(p) !== null);
    if (at >= 0) {
      const dir = path.join(mnt, ...parts.slice(0, at + 1));
      clearTimeout(this.pendingVolumes.get(dir));
      const reload = () => {
        this.pendingVolumes.delete(dir);
        this.index.reloadChanged(dir).catch((err) => this.index.log.warn('volume reload failed', { dir, ...errorFields(err) }));
      };
      this.pendingVolumes.set(dir, setTimeout(reload, VOLUME_DEBOUNCE_MS));
      return;
    }
    // A settings.json or a directory near the top changed: the set of roots may have changed.
    if (parts.length <= 3 && (parts.at(-1) === SETTINGS_FILE || parts.length <= 2)) this.scheduleRootsRescan();
  }

  private scheduleRootsRescan(): void {
    if (this.rootsTimer) clearTimeout(this.rootsTimer);
    this.rootsTimer = setTimeout(() => {
      this.rootsTimer = null;
      this.rescan();
    }, ROOTS_DEBOUNCE_MS);
  }

  private rescan(): void {
    this.index.rescan().catch((err) => this.index.log.error('rescan failed', errorFields(err)));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.rescanTimer) clearTimeout(this.rescanTimer);
    if (this.rootsTimer) clearTimeout(this.rootsTimer);
    for (const t of this.pendingVolumes.values()) clearTimeout(t);
    this.pendingVolumes.clear();
    this.watcher.close();
    await this.upperWatcher?.close();
    this.upperWatcher = null;
  }
}
