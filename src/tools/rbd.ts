import { ConflictError, ToolError, UnavailableError } from '../errors.js';
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

/** rbd's exit code for ENOENT: a missing image, and a missing pool too (told apart by stderr). */
const ENOENT = 2;
/** rbd's exit code when an image still has watchers (a client has it open). */
const EBUSY = 16;

/**
 * Client timeouts passed on every call, whatever ceph.conf says: without them an `rbd` call hangs
 * for 300 s when the cluster is down (TOOLCHAIN.md), holding a volume's lock all that time.
 */
const CLIENT_TIMEOUTS: [string, string][] = [['client_mount_timeout', '10'], ['rados_mon_op_timeout', '30'], ['rados_osd_op_timeout', '60']];

/**
 * What an rbd failure means to a client, in one sentence: a pool that cannot be opened or a
 * cluster that does not answer (503), an image that is missing (409: the volume is broken) or open
 * elsewhere (409); null for anything else (a 500 with the stderr in the log).
 */
export function rbdFailure(err: unknown): UnavailableError | ConflictError | null {
  if (!(err instanceof ToolError) || (err as { cancelled?: boolean }).cancelled) return null;
  const pool = /error opening pool '?([^':\s]+)'?/.exec(err.toolOutput)?.[1];
  if (pool) return new UnavailableError(`the Ceph pool ${pool} cannot be opened (it does not exist, or the client may not use it)`);
  if (/timed out|failed to connect|couldn't connect|Connection refused|error connecting/i.test(err.toolOutput))
    // rbd says the same when the monitors do not answer and when they refuse the client (an id or key they do not know).
    return new UnavailableError("the Ceph cluster cannot be reached: it does not answer, or refuses this host's client (ELEMENTO_CEPH_CONF, ELEMENTO_CEPH_ID)");
  const image = /error opening image ([^:\s]+)|error reading header from ([^:\s]+)/.exec(err.toolOutput);
  if (image) return new ConflictError(`the RBD image ${image[1] ?? image[2]} does not exist: the volume is broken`);
  if (/shrinking an image is only allowed/.test(err.toolOutput))
    return new ConflictError('the RBD image is larger than the size asked (it was resized outside the daemon): ask at least its size');
  // rbd exits EBUSY for a protected snapshot too: told apart by stderr (rbd's sentence or librbd's, in either order).
  if (/snapshot .*is protected/.test(err.toolOutput)) return new ConflictError('the RBD snapshot is protected (rbd snap unprotect): it cannot be removed');
  if (err.exitCode === EBUSY || /still has watchers/.test(err.toolOutput)) return new ConflictError('the RBD image is open by a client (it has watchers)');
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

  /**
   * Runs rbd; `absentOk` makes a missing image an answer (exit 2) instead of an error, but never a
   * missing pool (rbd exits 2 for both: a purge must not take a pool it cannot open for an image gone).
   */
  private async run(args: string[], opts: Omit<RunOptions, 'timeoutMs'> & { absentOk?: boolean; timeoutMs?: number } = {}) {
    const base = ['--conf', this.target.conf, '--id', this.target.id, ...CLIENT_TIMEOUTS.flatMap(([k, v]) => [`--${k}`, v])];
    const { absentOk, ...runOpts } = opts;
    try {
      const result = await this.runner.run('rbd', [...base, ...args], { timeoutMs: this.timeoutMs, ...runOpts, okExitCodes: absentOk ? [ENOENT] : [] });
      if (result.exitCode === ENOENT && /error opening pool/.test(result.stderr)) throw new ToolError('rbd failed', result.stderr, ENOENT);
      return result;
    } catch (err) {
      throw rbdFailure(err) ?? err;
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
    const { stdout, exitCode } = await this.run(['info', '--format', 'json', this.spec(image)], { absentOk: true });
    return exitCode === ENOENT ? null : (JSON.parse(stdout) as { size: number }).size;
  }

  /** Whether a client has the image open (a hypervisor attached to it directly, a tgt LUN). */
  async inUse(image: RbdImage): Promise<boolean> {
    const { stdout, exitCode } = await this.run(['status', '--format', 'json', this.spec(image)], { absentOk: true });
    return exitCode !== ENOENT && ((JSON.parse(stdout) as { watchers?: unknown[] }).watchers ?? []).length > 0;
  }

  /**
   * Removes an image and its snapshots; one that does not exist is not an error (a purge may be done
   * twice). An image still open is refused (409) before its snapshots are touched.
   */
  async remove(image: RbdImage): Promise<void> {
    if (await this.inUse(image)) throw new ConflictError(`the RBD image ${this.spec(image)} is open by a client (it has watchers)`);
    const { exitCode } = await this.run(['snap', 'purge', '--no-progress', this.spec(image)], { absentOk: true });
    if (exitCode === ENOENT) return;
    await this.run(['rm', '--no-progress', this.spec(image)], { absentOk: true });
  }

  /** The image's snapshots, oldest first (`rbd snap ls`; the date is when it was taken). */
  async snapshots(image: RbdImage): Promise<ImageSnapshot[]> {
    return (await this.listSnapshots(image)).map((s) => ({
      id: String(s.id),
      name: s.name,
      // rbd prints the host's local time without a zone (`Thu Nov 26 18:55:49 2026`), as Date reads it.
      date: new Date(s.timestamp).toISOString(),
    }));
  }

  /**
   * The names of the image's protected snapshots (`rbd snap protect`, an operator's: the image cannot
   * be removed with them); none for an image that does not exist.
   */
  async protectedSnapshots(image: RbdImage): Promise<string[]> {
    return (await this.listSnapshots(image, true)).filter((s) => s.protected === 'true').map((s) => s.name);
  }

  private async listSnapshots(image: RbdImage, absentOk = false): Promise<{ id: number; name: string; timestamp: string; protected?: string }[]> {
    const { stdout, exitCode } = await this.run(['snap', 'ls', '--format', 'json', this.spec(image)], { absentOk });
    return exitCode === ENOENT ? [] : JSON.parse(stdout);
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

  /**
   * Writes the image's bytes, all of them, into `to` (a response), and ends it. Bounded by its client,
   * not by the tool timeout (a slow reader of a large image may take hours): `signal` stops it when
   * the client goes away, and the day-long timeout only catches a process that stopped moving.
   */
  async export(image: RbdImage, to: NodeJS.WritableStream, signal: AbortSignal): Promise<void> {
    await this.run(['export', '--no-progress', this.spec(image), '-'], { signal, stdoutTo: to, timeoutMs: 24 * 3600_000 });
    to.end();
  }

  /** The address QEMU tools open the image by (`rbd:pool/image:conf=...:id=...`), with the same client timeouts. */
  qemuUrl(image: RbdImage): string {
    const options = CLIENT_TIMEOUTS.map(([k, v]) => `:${k}=${v}`).join('');
    return `rbd:${this.spec(image)}:conf=${this.target.conf}:id=${this.target.id}${options}`;
  }
}
