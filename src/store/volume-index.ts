import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.js';
import { isUid, uidOfDirName, volumeDirName } from './layout.js';
import { discoverRoots, type Root, type SkippedRoot } from './roots.js';
import { hasLeftovers, LeftoverReports } from './leftovers.js';
import { readUsageStamp } from './usage-stamp.js';
import { asyncReader, firstScanReader, type TreeReader } from './tree-reader.js';
import { IndexWatch } from './index-watch.js';
import { isCreating, loadVolumeRecord, uidOfVolumeDir, type VolumeRecord } from './volume-record.js';
import { VolumeTable } from './volume-table.js';

const LOAD_CONCURRENCY = 64;

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
  /** Each root's usage stamp as the last full scan read it (src/store/usage-stamp.ts). */
  private readonly stamps = new Map<string, string>();
  private readonly table: VolumeTable;
  /** The watches, once `watch` has started them; the directories the last scan looked in for roots. */
  private live: IndexWatch | null = null;
  private lastLooked: string[] = [];
  private unfinished: string[] = [];
  private readonly leftovers = new LeftoverReports();
  private scanning: Promise<void> | null = null;
  /** While a full scan runs: the uids reloaded or forgotten since it began (see scanTree). */
  private touched: Set<string> | null = null;

  constructor(
    private readonly mnt: string,
    private readonly log: Logger,
  ) {
    this.table = new VolumeTable(log);
  }

  /**
   * Scans the whole tree; resolves when the index is complete. `beforeServing`: the first scan, run
   * before the daemon listens, reads the volumes of local roots with blocking calls (tree-reader.ts).
   */
  async scanAll(opts: { beforeServing?: boolean } = {}): Promise<void> {
    if (this.scanning) return this.scanning;
    this.scanning = this.doScanAll(opts.beforeServing ?? false).finally(() => (this.scanning = null));
    return this.scanning;
  }

  private async doScanAll(beforeServing: boolean): Promise<void> {
    this.touched = new Set();
    try {
      await this.scanTree(beforeServing, this.touched);
    } finally {
      this.touched = null;
    }
  }

  /**
   * What the scan read replaces what the index held, except for the uids in `touched`: those were
   * reloaded or forgotten while the scan ran, so what the index holds for them wins. (A reload whose
   * read began just before the scan may be older than the scan's read; the next change of that
   * directory reloads it again.)
   */
  private async scanTree(beforeServing: boolean, touched: Set<string>): Promise<void> {
    const { roots, skipped, looked, unavailable } = await discoverRoots(this.mnt, this.everSeen);
    for (const r of roots) this.everSeen.add(r.path);
    const away = new Map(unavailable.map((s) => [s.path, s.reason]));
    const dirs: Array<[string, string, boolean]> = [];
    const readers = new Map<string, TreeReader>();
    for (const root of [...roots.map((r) => r.path), ...away.keys()]) {
      readers.set(root, beforeServing && !away.has(root) ? await firstScanReader(root) : asyncReader);
      try {
        // Read before the volumes: what the scan then reads is at least as new as this token says.
        if (!away.has(root)) this.stamps.set(root, await readUsageStamp(root));
        for (const e of await fs.readdir(root, { withFileTypes: true })) if (uidOfVolumeDir(e.name)) dirs.push([root, path.join(root, e.name), e.isSymbolicLink()]);
      } catch (err) {
        if (away.has(root)) continue;
        const reason = `unavailable: root cannot be read (${(err as NodeJS.ErrnoException).code})`;
        skipped.push({ path: root, reason });
        away.set(root, reason);
      }
    }
    const found = new Map<string, VolumeRecord[]>();
    const unfinished: string[] = [];
    await eachLimited(dirs, LOAD_CONCURRENCY, async ([rootPath, dir, isLink]) => {
      let loaded = await loadVolumeRecord(rootPath, dir, readers.get(rootPath), isLink);
      if (!loaded) return;
      const reason = away.get(rootPath);
      if (reason) loaded = { ...loaded, unavailable: reason };
      else if (hasLeftovers(loaded)) unfinished.push(dir);
      const list = found.get(loaded.uid);
      if (list) list.push(loaded);
      else found.set(loaded.uid, [loaded]);
    });
    // Said once per change, after the roots that cannot be read are known too: what went, and what came back.
    for (const s of skipped) if (!this.skipped.some((o) => o.path === s.path && o.reason === s.reason)) this.log.warn('root skipped', s);
    for (const o of this.skipped) if (!skipped.some((s) => s.path === o.path)) this.log.info('root no longer skipped', { path: o.path, was: o.reason });
    this.roots = new Map(roots.filter((r) => !away.has(r.path)).map((r) => [r.path, r]));
    this.lastLooked = looked;
    this.skipped = skipped;
    this.unfinished = unfinished;
    this.leftovers.report(unfinished, true);
    const merge = (uid: string, list: VolumeRecord[]) => {
      if (touched.has(uid)) return;
      // SPEC §3: an unavailable root is never taken for empty; what the index knew there stays, flagged.
      for (const known of this.table.copiesOf(uid)) {
        const reason = away.get(known.root);
        if (reason && !list.some((f) => f.dir === known.dir)) list.push(known.unavailable === reason ? known : { ...known, unavailable: reason });
      }
      this.table.settle(uid, list);
    };
    for (const [uid, list] of found) merge(uid, list);
    // Deleting the entry being visited is safe in a Map's iteration.
    for (const uid of this.table.uids()) if (!found.has(uid)) merge(uid, []);
    this.live?.follow(looked);
  }

  /** Calls `listener` with volume directories a later scan or a watcher reload finds leftovers in (see LeftoverReports). */
  onLeftovers(listener: (dirs: string[]) => void): void {
    this.leftovers.listener = listener;
  }

  /** Volume directories in which the last full scan found temp files or lock markers (for the start-up sweep). */
  unfinishedDirs(): string[] {
    return [...this.unfinished];
  }

  /** Re-reads one volume directory (after an operation, or on a watcher event). */
  async reloadDir(dir: string): Promise<VolumeRecord | null> {
    const uid = uidOfVolumeDir(path.basename(dir));
    const rootPath = path.dirname(dir);
    if (!uid || !this.roots.has(rootPath)) return null;
    // Watched before it is read, so a change made while it is read is not missed.
    this.live?.add(dir);
    const record = await loadVolumeRecord(rootPath, dir);
    if (!record) this.live?.remove(dir);
    if (!record || !hasLeftovers(record)) this.leftovers.clean(dir);
    // Other directories of the same uid are read again too: one may have been moved here, or removed.
    const found = record ? [record] : [];
    for (const other of this.table.copiesOf(uid)) {
      if (other.dir === dir) continue;
      const again = other.unavailable ? other : await loadVolumeRecord(other.root, other.dir);
      if (again) found.push(again);
    }
    this.touched?.add(uid);
    return this.table.settle(uid, found);
  }

  forget(uid: string): void {
    this.touched?.add(uid);
    this.table.forget(uid);
  }

  /** A number that differs whenever what the index holds has changed (for caches of listings). */
  get version(): number {
    return this.table.version;
  }

  /**
   * The volume `uid` as the tree holds it now, for lookups by uid: a known volume whose directory is gone
   * (destroyed, or moved to another root by hand) or that looks still being created is read again, and
   * one the index does not know is looked for in each root (one lstat per root): another daemon sharing
   * the tree may have changed it before this one's watcher or rescan saw it (on Gluster, inotify sees no
   * other host's writes). Costs one lstat for a volume the index knows.
   */
  async lookup(uid: string): Promise<VolumeRecord | undefined> {
    // Not a uid (a download's path segment: `..`, a NUL): no volume, rather than volumeDirName's throw (a 500).
    if (!isUid(uid)) return undefined;
    const known = this.table.get(uid);
    const name = volumeDirName(uid);
    if (!uidOfDirName(name) || known?.unavailable || known?.copies) return known;
    if (known) {
      const there = await fs.lstat(known.dir).then(() => true, () => false);
      if (there && !isCreating(known)) return known;
      await this.reloadDir(known.dir);
      if (there) return this.table.get(uid);
    }
    for (const root of this.roots.keys()) {
      const dir = path.join(root, name);
      if (await fs.lstat(dir).then(() => true, () => false)) await this.reloadDir(dir);
    }
    return this.table.get(uid);
  }

  /** Every directory record of `uid`: one, or each copy of a volume found in several roots. */
  copiesOf(uid: string): VolumeRecord[] {
    return this.table.copiesOf(uid);
  }

  /** The root's usage stamp as the last full scan read it, before its volumes (undefined: not scanned). */
  scannedStamp(rootPath: string): string | undefined {
    return this.stamps.get(rootPath);
  }

  /** The volume `uid` as last read (flagged `unavailable` while its root is, `copies` when in several directories). */
  get(uid: string): VolumeRecord | undefined {
    return this.table.get(uid);
  }

  /** The volumes on available roots (those on an unavailable one are only answered by `get`, flagged). */
  all(): IterableIterator<VolumeRecord> {
    return this.table.available();
  }

  get size(): number {
    return this.table.size;
  }

  rootList(): Root[] {
    return [...this.roots.values()];
  }

  /** Whether every root seen since start is available now (none unmounted or lost its settings.json). */
  everyRootAvailable(): boolean {
    return [...this.everSeen].every((rootPath) => this.roots.has(rootPath));
  }

  root(rootPath: string): Root | undefined {
    return this.roots.get(rootPath);
  }

  skippedRoots(): SkippedRoot[] {
    return [...this.skipped];
  }

  /** Volumes counted against a root's quota and the bytes they promise. */
  usage(rootPath: string): { volumes: number; bytes: number } {
    return this.table.usage(rootPath);
  }

  /** The volumes listed broken in `status`, one entry per directory. */
  broken(): Array<{ vid: string; dir: string; problem: string }> {
    return this.table.broken();
  }

  /** Starts watching the tree and the periodic rescan (index-watch.ts). */
  async watch(rescanIntervalMs: number): Promise<void> {
    const mnt = this.mnt;
    this.live = new IndexWatch({
      mnt,
      log: this.log,
      rootPaths: () => [...this.roots.keys()],
      volumeDirs: () => this.volumeDirs(),
      reloadChanged: async (dir) => {
        const record = await this.reloadDir(dir);
        if (record?.dir === dir && hasLeftovers(record)) this.leftovers.report([dir], false);
      },
      rescan: () => this.scanAll(),
    });
    await this.live.start(this.lastLooked, rescanIntervalMs);
  }

  private *volumeDirs(): Iterable<string> {
    for (const record of this.all()) yield* record.copies ?? [record.dir];
  }

  async close(): Promise<void> {
    await this.live?.close();
    this.live = null;
  }
}
