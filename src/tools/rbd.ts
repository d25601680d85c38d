import { ToolError, UnavailableError } from '../errors.js';
import type { ImageSnapshot } from './qemu-img-layers.js';
import type { CommandRunner, RunOptions } from './runner.js';

/** Where the daemon's Ceph volumes live: the cluster (its ceph.conf), the client id, the RBD pool of new volumes. */
export interface CephTarget {
  conf: string;
  id: string;
  pool: string;
}

/** One RBD image: a volume's pointer file names it (src/store/rbd-pointer.ts). */
export interface RbdImage {
  pool: string;
  image: string;
}

/** rbd's exit code for an image that does not exist (ENOENT). */
const NO_SUCH_IMAGE = 2;

/**
 * Client timeouts passed on every call, whatever ceph.conf says: without them an `rbd` call hangs
 * for 300 s when the cluster is down (TOOLCHAIN.md), holding a volume's lock all that time.
 */
const CLIENT_TIMEOUTS = ['--client_mount_timeout', '10', '--rados_mon_op_timeout', '30', '--rados_osd_op_timeout', '60'];

/** A cluster or pool out of reach, said in one sentence (503), or null for any other failure. */
function unreachable(err: unknown): UnavailableError | null {
  if (!(err instanceof ToolError) || (err as { cancelled?: boolean }).cancelled) return null;
  const pool = /error opening pool '([^']+)'/.exec(err.toolOutput)?.[1];
  if (pool) return new UnavailableError(`the Ceph pool ${pool} cannot be opened (it does not exist, or the client may not use it)`);
  if (/timed out|failed to connect|couldn't connect|Connection refused|error connecting to the cluster|did not finish within/i.test(`${err.message} ${err.toolOutput}`))
    return new UnavailableError('the Ceph cluster does not answer');
  return null;
}

/** Thin typed wrappers around the `rbd` tool, through the one runner; image names are `pool/image`. */
export class Rbd {
  constructor(
    private readonly runner: CommandRunner,
    readonly target: CephTarget,
    private readonly timeoutMs: number,
  ) {}

  private spec(ref: RbdImage): string {
    return `${ref.pool}/${ref.image}`;
  }

  private async run(args: string[], opts: Omit<RunOptions, 'timeoutMs'> = {}) {
    const base = ['--conf', this.target.conf, '--id', this.target.id, ...CLIENT_TIMEOUTS];
    try {
      return await this.runner.run('rbd', [...base, ...args], { timeoutMs: this.timeoutMs, ...opts });
    } catch (err) {
      throw unreachable(err) ?? err;
    }
  }

  /** A new image of exactly `sizeBytes` (rbd takes a `B` suffix for bytes). */
  async create(image: RbdImage, sizeBytes: number): Promise<void> {
    await this.run(['create', '--size', `${sizeBytes}B`, this.spec(image)]);
  }

  /** Grows an image; rbd itself refuses to shrink without `--allow-shrink`, which is never passed. */
  async resize(image: RbdImage, sizeBytes: number): Promise<void> {
    await this.run(['resize', '--size', `${sizeBytes}B`, this.spec(image)]);
  }

  /** The image's size in bytes, or null when it does not exist. */
  async size(image: RbdImage): Promise<number | null> {
    const { stdout, exitCode } = await this.run(['info', '--format', 'json', this.spec(image)], { okExitCodes: [NO_SUCH_IMAGE] });
    return exitCode === NO_SUCH_IMAGE ? null : (JSON.parse(stdout) as { size: number }).size;
  }

  /** Removes an image and its snapshots; one that does not exist is not an error (a purge may be done twice). */
  async remove(image: RbdImage): Promise<void> {
    const { exitCode } = await this.run(['snap', 'purge', '--no-progress', this.spec(image)], { okExitCodes: [NO_SUCH_IMAGE] });
    if (exitCode === NO_SUCH_IMAGE) return;
    await this.run(['rm', '--no-progress', this.spec(image)], { okExitCodes: [NO_SUCH_IMAGE] });
  }

  /** The image's snapshots, oldest first (`rbd snap ls`; the date is when it was taken). */
  async snapshots(image: RbdImage): Promise<ImageSnapshot[]> {
    const { stdout } = await this.run(['snap', 'ls', '--format', 'json', this.spec(image)]);
    return (JSON.parse(stdout) as { id: number; name: string; timestamp: string }[]).map((s) => ({
      id: String(s.id),
      name: s.name,
      // rbd prints the host's local time without a zone (`Thu Nov 26 18:55:49 2026`), as Date reads it.
      date: new Date(s.timestamp).toISOString(),
    }));
  }

  async createSnapshot(image: RbdImage, name: string): Promise<void> {
    await this.run(['snap', 'create', '--no-progress', `${this.spec(image)}@${name}`]);
  }

  /** The image's bytes become the snapshot's (the snapshot stays). */
  async rollback(image: RbdImage, name: string): Promise<void> {
    await this.run(['snap', 'rollback', '--no-progress', `${this.spec(image)}@${name}`]);
  }

  async deleteSnapshot(image: RbdImage, name: string): Promise<void> {
    await this.run(['snap', 'rm', '--no-progress', `${this.spec(image)}@${name}`]);
  }

  /** A full, independent copy of `source` as the new image `copy`. */
  async copy(source: RbdImage, copy: RbdImage, signal?: AbortSignal): Promise<void> {
    await this.run(['cp', '--no-progress', this.spec(source), this.spec(copy)], { signal });
  }

  /** Writes the image's bytes, all of them, into `to` (a response), and ends it; `signal` stops it (the client went away). */
  async export(image: RbdImage, to: NodeJS.WritableStream, signal: AbortSignal): Promise<void> {
    await this.run(['export', '--no-progress', this.spec(image), '-'], { signal, stdoutTo: to });
    to.end();
  }

  /** The address QEMU tools open the image by (`qemu-img`, `qemu-io`): `rbd:pool/image:conf=...:id=...`. */
  qemuUrl(image: RbdImage): string {
    return `rbd:${this.spec(image)}:conf=${this.target.conf}:id=${this.target.id}`;
  }
}
