import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

/**
 * One inotify watch per root and per volume directory (a volume's meta.json, data file and markers
 * are its direct entries; a root's entries are its volume directories). Every change is reported as
 * the path that changed. Files get no watch of their own: their directory's watch sees them.
 * chokidar, which watches the upper tree (index-watch.ts), also watches every file it reports on:
 * over 10,000 volumes that was three times the inotify watches and 6–10 s and ~250 MB more at start
 * (docs/BENCHMARKS.md), so volume directories are watched here, one plain fs.watch each.
 */
export class TreeWatcher {
  private readonly watchers = new Map<string, FSWatcher>();

  constructor(
    private readonly onChange: (changedPath: string) => void,
    private readonly onError: (dir: string, err: Error) => void,
  ) {}

  /** Watches `dir` unless it already is; a directory that is gone by now is not an error. */
  add(dir: string): void {
    if (this.watchers.has(dir)) return;
    let watcher: FSWatcher;
    try {
      watcher = watch(dir, { persistent: true }, (_event, name) => this.onChange(name ? path.join(dir, name.toString()) : dir));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') this.onError(dir, err as Error);
      return;
    }
    watcher.on('error', (err) => {
      this.remove(dir);
      this.onError(dir, err);
    });
    this.watchers.set(dir, watcher);
  }

  remove(dir: string): void {
    this.watchers.get(dir)?.close();
    this.watchers.delete(dir);
  }

  /** Makes the watched set exactly `dirs` (after a full scan). */
  sync(dirs: Set<string>): void {
    for (const dir of [...this.watchers.keys()]) if (!dirs.has(dir)) this.remove(dir);
    for (const dir of dirs) this.add(dir);
  }

  get size(): number {
    return this.watchers.size;
  }

  close(): void {
    for (const watcher of this.watchers.values()) watcher.close();
    this.watchers.clear();
  }
}
