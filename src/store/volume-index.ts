import { promises as fs } from 'node:fs';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { errorFields, type Logger } from '../log.js';
import { BIN_DIR, isTempName, ROOT_MUTEX, SETTINGS_FILE, uidOfDirName, VOLUME_MUTEX } from './layout.js';
import { discoverRoots, type Root, type SkippedRoot } from './roots.js';
import { loadVolumeRecord, type VolumeRecord } from './volume-record.js';

const LOAD_CONCURRENCY = 64;
const VOLUME_DEBOUNCE_MS = 100;
const ROOTS_DEBOUNCE_MS = 300;

/** Runs `fn` over `items` with at most `limit` in flight. */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * The live index: the tree scanned once at start, then kept current by a watcher on the mount
 * directory (and a periodic full rescan for what a watcher cannot see, such as another host's
 * writes on Gluster). Requests read it; they never rescan the disk. Every operation of the daemon
 * also refreshes the volumes it changed, so answers never wait for the watcher.
 */
export class VolumeIndex {
  private roots = new Map<string, Root>();
  private skipped: SkippedRoot[] = [];
  /** Every root seen since start: one that loses its settings.json stays listed as unavailable. */
  private readonly everSeen = new Set<string>();
  private readonly volumes = new Map<string, VolumeRecord>();
  private watcher: FSWatcher | null = null;
  private rescanTimer: NodeJS.Timeout | null = null;
  private readonly pendingVolumes = new Map<string, NodeJS.Timeout>();
  private rootsTimer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;

  constructor(
    private readonly mnt: string,
    private readonly log: Logger,
  ) {}

  /** Scans the whole tree; resolves when the index is complete. */
  async scanAll(): Promise<void> {
    if (this.scanning) return this.scanning;
    this.scanning = this.doScanAll().finally(() => (this.scanning = null));
    return this.scanning;
  }

  private async doScanAll(): Promise<void> {
    const { roots, skipped } = await discoverRoots(this.mnt);
    for (const r of roots) this.everSeen.add(r.path);
    for (const seen of this.everSeen)
      if (!roots.some((r) => r.path === seen) && !skipped.some((s) => s.path === seen))
        skipped.push({ path: seen, reason: 'unavailable: settings.json is gone (filesystem unmounted?)' });
    for (const s of skipped) if (!this.skipped.some((o) => o.path === s.path && o.reason === s.reason)) this.log.warn('root skipped', s);
    const dirs: Array<[string, string]> = [];
    for (const root of roots) {
      try {
        for (const name of await fs.readdir(root.path)) if (uidOfDirName(name)) dirs.push([root.path, path.join(root.path, name)]);
      } catch (err) {
        skipped.push({ path: root.path, reason: `root cannot be read (${(err as NodeJS.ErrnoException).code})` });
      }
    }
    const fresh = new Map<string, VolumeRecord>();
    await eachLimited(dirs, LOAD_CONCURRENCY, async ([rootPath, dir]) => {
      const record = await loadVolumeRecord(rootPath, dir);
      if (!record) return;
      const earlier = fresh.get(record.uid);
      if (earlier) this.log.warn('volume found twice: keeping the first', { vid: record.uid, kept: earlier.dir, ignored: dir });
      else fresh.set(record.uid, record);
    });
    const readable = roots.filter((r) => !skipped.some((s) => s.path === r.path));
    this.roots = new Map(readable.map((r) => [r.path, r]));
    this.skipped = skipped;
    this.volumes.clear();
    for (const [uid, record] of fresh) this.volumes.set(uid, record);
  }

  /** Re-reads one volume directory (after an operation, or on a watcher event). */
  async reloadDir(dir: string): Promise<VolumeRecord | null> {
    const uid = uidOfDirName(path.basename(dir));
    const rootPath = path.dirname(dir);
    if (!uid || !this.roots.has(rootPath)) return null;
    const record = await loadVolumeRecord(rootPath, dir);
    const known = this.volumes.get(uid);
    if (!record) {
      if (known?.dir === dir) this.volumes.delete(uid);
      return null;
    }
    if (known && known.dir !== dir && (await loadVolumeRecord(known.root, known.dir))) {
      this.log.warn('volume found twice: keeping the first', { vid: uid, kept: known.dir, ignored: dir });
      return known;
    }
    this.volumes.set(uid, record);
    return record;
  }

  forget(uid: string): void {
    this.volumes.delete(uid);
  }

  get(uid: string): VolumeRecord | undefined {
    return this.volumes.get(uid);
  }

  all(): IterableIterator<VolumeRecord> {
    return this.volumes.values();
  }

  get size(): number {
    return this.volumes.size;
  }

  rootList(): Root[] {
    return [...this.roots.values()];
  }

  root(rootPath: string): Root | undefined {
    return this.roots.get(rootPath);
  }

  skippedRoots(): SkippedRoot[] {
    return [...this.skipped];
  }

  /** Volumes that are counted against a root's quota and the bytes they promise. */
  usage(rootPath: string): { volumes: number; bytes: number } {
    let volumes = 0;
    let bytes = 0;
    for (const r of this.volumes.values()) {
      if (r.root !== rootPath) continue;
      volumes += 1;
      bytes += r.meta?.size ?? 0;
    }
    return { volumes, bytes };
  }

  /** Starts watching the tree and the periodic rescan. */
  async watch(rescanIntervalMs: number): Promise<void> {
    const ignored = (p: string) => {
      const base = path.basename(p);
      return base === BIN_DIR || base === VOLUME_MUTEX || base === ROOT_MUTEX || isTempName(base) || p.includes(`${path.sep}${BIN_DIR}${path.sep}`);
    };
    this.watcher = watch(this.mnt, { ignoreInitial: true, depth: 3, ignored, persistent: true });
    this.watcher.on('all', (_event, p) => this.onChange(p));
    this.watcher.on('error', (err) => this.log.warn('watcher error', errorFields(err)));
    await new Promise<void>((resolve) => this.watcher!.once('ready', () => resolve()));
    if (rescanIntervalMs > 0) {
      this.rescanTimer = setInterval(() => this.scanAll().catch((err) => this.log.error('rescan failed', errorFields(err))), rescanIntervalMs);
      this.rescanTimer.unref();
    }
  }

  private onChange(changed: string): void {
    const parts = path.relative(this.mnt, changed).split(path.sep);
    const at = parts.findIndex((p) => uidOfDirName(p) !== null);
    if (at >= 0) {
      const dir = path.join(this.mnt, ...parts.slice(0, at + 1));
      clearTimeout(this.pendingVolumes.get(dir));
      this.pendingVolumes.set(
        dir,
        setTimeout(() => {
          this.pendingVolumes.delete(dir);
          this.reloadDir(dir).catch((err) => this.log.warn('volume reload failed', { dir, ...errorFields(err) }));
        }, VOLUME_DEBOUNCE_MS),
      );
      return;
    }
    // A settings.json or a directory near the top changed: the set of roots may have changed.
    if (parts.length <= 3 && (parts.at(-1) === SETTINGS_FILE || parts.length <= 2)) {
      if (this.rootsTimer) clearTimeout(this.rootsTimer);
      this.rootsTimer = setTimeout(() => {
        this.rootsTimer = null;
        this.scanAll().catch((err) => this.log.error('rescan failed', errorFields(err)));
      }, ROOTS_DEBOUNCE_MS);
    }
  }

  async close(): Promise<void> {
    if (this.rescanTimer) clearInterval(this.rescanTimer);
    if (this.rootsTimer) clearTimeout(this.rootsTimer);
    for (const t of this.pendingVolumes.values()) clearTimeout(t);
    this.pendingVolumes.clear();
    await this.watcher?.close();
    this.watcher = null;
  }
}
