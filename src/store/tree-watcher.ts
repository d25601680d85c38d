import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

/** How a directory is watched: `fs.watch` (replaced in tests to play a host out of inotify watches). */
export const directoryWatch = { watch: (dir: string, listener: (event: string, name: string | Buffer | null) => void): FSWatcher => watch(dir, { persistent: true }, listener) };

/**
 * What fs.watch fails with when the host has no inotify watch or instance left for this user
 * (`fs.inotify.max_user_watches`, `max_user_instances`): not a fault of the directory.
 */
export function isWatchLimit(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EMFILE';
}

/**
 * One inotify watch per root and per volume directory (a volume's meta.json, data file and markers
 * are its direct entries; a root's entries are its volume directories). Every change is reported as
 * the path that changed. Files get no watch of their own: their directory's watch sees them.
 * chokidar, which watches the upper tree (index-watch.ts), also watches every file it reports on:
 * over 10,000 volumes that was three times the inotify watches and 6–10 s and ~250 MB more at start
 * (docs/BENCHMARKS.md), so volume directories are watched here, one plain fs.watch each.
 * A directory refused a watch by the host's inotify limits is counted in `refused` (not reported one
 * by one: with 50,000 volumes that was 50,000 warnings per rescan) and asked again at the next `sync`.
 */
export class TreeWatcher {
  private readonly watchers = new Map<string, FSWatcher>();
  /** Directories wanted but refused a watch by the inotify limits, and the last such error's code. */
  readonly refused = new Set<string>();
  limitCode: string | null = null;

  constructor(
    private readonly onChange: (changedPath: string) => void,
    private readonly onError: (dir: string, err: Error) => void,
  ) {}

  /** Watches `dir` unless it already is; a directory that is gone by now is not an error. */
  add(dir: string): void {
    if (this.watchers.has(dir)) return;
    let watcher: FSWatcher;
    try {
      watcher = directoryWatch.watch(dir, (_event, name) => this.onChange(name ? path.join(dir, name.toString()) : dir));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (isWatchLimit(err)) {
        this.refused.add(dir);
        this.limitCode = code!;
      } else if (code !== 'ENOENT' && code !== 'ENOTDIR') this.onError(dir, err as Error);
      return;
    }
    this.refused.delete(dir);
    watcher.on('error', (err) => {
      this.remove(dir);
      this.onError(dir, err);
    });
    this.watchers.set(dir, watcher);
  }

  remove(dir: string): void {
    this.watchers.get(dir)?.close();
    this.watchers.delete(dir);
    this.refused.delete(dir);
  }

  /** Makes the watched set exactly `dirs` (after a full scan); those refused before are asked again. */
  sync(dirs: Set<string>): void {
    for (const dir of [...this.watchers.keys(), ...this.refused]) if (!dirs.has(dir)) this.remove(dir);
    this.refused.clear();
    for (const dir of dirs) this.add(dir);
  }

  get size(): number {
    return this.watchers.size;
  }

  close(): void {
    for (const watcher of this.watchers.values()) watcher.close();
    this.watchers.clear();
    this.refused.clear();
  }
}
