import type { DiskFormat } from './qemu-img.js';
import type { CommandRunner } from './runner.js';

/** An internal snapshot of a qcow2 image, as `qemu-img info --output=json` lists it. */
export interface ImageSnapshot {
  id: string;
  name: string;
  /** When it was taken, ISO 8601 UTC. */
  date: string;
}

interface SnapshotJson {
  id: string;
  name: string;
  'date-sec': number;
  'date-nsec': number;
}

/**
 * `qemu-img snapshot` has no `-f`: the format is stated through `--image-opts` instead (never
 * probed), commas of the file name doubled as the option syntax wants.
 */
function qcow2Opts(file: string): string {
  return `driver=qcow2,file.filename=${file.replace(/,/g, ',,')}`;
}

/**
 * Thin wrappers for qcow2's layers: backing files (linked clones) and internal snapshots
 * (`qemu-img snapshot -c/-a/-d`). Kept beside QemuImg so the basic wrapper stays small.
 */
export class QemuImgLayers {
  constructor(
    private readonly runner: CommandRunner,
    private readonly timeoutMs: number,
  ) {}

  /**
   * A qcow2 overlay `file` whose reads fall through to `backing`, named relative to the overlay's
   * directory (so the tree can be moved or mounted elsewhere), with its format stated (`-F`: never probed).
   */
  async createOverlay(file: string, backingRelative: string, backingFormat: DiskFormat): Promise<void> {
    await this.runner.run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', backingRelative, '-F', backingFormat, file], { timeoutMs: this.timeoutMs });
  }

  /** Rewrites only the header's backing file name (the data stays as it is: `rebase -u`). */
  async renameBacking(file: string, backingRelative: string, backingFormat: DiskFormat): Promise<void> {
    await this.runner.run('qemu-img', ['rebase', '-q', '-u', '-f', 'qcow2', '-b', backingRelative, '-F', backingFormat, file], { timeoutMs: this.timeoutMs });
  }

  async snapshots(file: string): Promise<ImageSnapshot[]> {
    const { stdout } = await this.runner.run('qemu-img', ['info', '-U', '--output=json', '-f', 'qcow2', file], { timeoutMs: 60_000 });
    const list = ((JSON.parse(stdout) as { snapshots?: SnapshotJson[] }).snapshots ?? []);
    return list.map((s) => ({ id: s.id, name: s.name, date: new Date(s['date-sec'] * 1000 + Math.floor(s['date-nsec'] / 1e6)).toISOString() }));
  }

  async createSnapshot(file: string, name: string): Promise<void> {
    await this.runner.run('qemu-img', ['snapshot', '-q', '--image-opts', '-c', name, qcow2Opts(file)], { timeoutMs: this.timeoutMs });
  }

  /** Brings the image back to the snapshot's bytes (the snapshot stays). */
  async applySnapshot(file: string, name: string): Promise<void> {
    await this.runner.run('qemu-img', ['snapshot', '-q', '--image-opts', '-a', name, qcow2Opts(file)], { timeoutMs: this.timeoutMs });
  }

  async deleteSnapshot(file: string, name: string): Promise<void> {
    await this.runner.run('qemu-img', ['snapshot', '-q', '--image-opts', '-d', name, qcow2Opts(file)], { timeoutMs: this.timeoutMs });
  }
}
