import fse from 'fs-extra';
import { errorFields, type Logger } from '../log.js';
import { newUid } from './layout.js';
import { moveToBin } from './recovery.js';

/**
 * Removes what left the tree through a root's bin (a destroyed volume, the old image of a converted
 * one) after the answer, one removal at a time. Freeing a large image takes long on a filesystem
 * that discards freed blocks (ext4 mounted `-o discard`: about 0.3 s per GB on the test machine),
 * and no client needs to wait for it: the rename into the bin was the commit point. What a stop or
 * a crash leaves in a bin, the next start-up sweep hands to the queue again.
 */
export class Purger {
  private tail: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Entries whose purge failed (an RBD image still open, a cluster down): tried again by retry(). */
  private readonly failed = new Set<string>();
  /** Entries queued and not yet purged: one entry is never queued twice (a slow retry, a repeated sweep). */
  private readonly queued = new Set<string>();

  /**
   * `release` frees what an entry holds outside the tree (a Ceph volume's RBD image) before the
   * entry is removed; when it fails the entry stays in the bin, for the next start to try again.
   */
  constructor(
    private readonly log: Logger,
    private readonly release: (binned: string) => Promise<void> = async () => undefined,
  ) {}

  /** Moves `entry` (a file of a volume directory in `rootPath`) into the root's bin; purged later. */
  async bin(entry: string, rootPath: string): Promise<void> {
    this.later(await moveToBin(entry, newUid(), rootPath));
  }

  /** Queues the removal of an entry already in a bin. */
  later(binned: string): void {
    if (this.queued.has(binned)) return;
    this.queued.add(binned);
    this.tail = this.tail.then(async () => {
      this.queued.delete(binned);
      if (!this.stopped) await this.now(binned);
    });
  }

  /** Removes an entry already in a bin now; a failure is logged, the entry left for retry() (and the next start). */
  async now(binned: string): Promise<void> {
    try {
      // Gone already (another daemon's sweep, an operator): nothing left to free.
      if (await fse.pathExists(binned)) {
        await this.release(binned);
        await fse.remove(binned);
      }
      this.failed.delete(binned);
    } catch (err) {
      if (!this.failed.has(binned)) this.log.warn('purge failed; tried again later', { path: binned, ...errorFields(err) });
      this.failed.add(binned);
    }
  }

  /** Bin entries whose last purge failed (shown in `status`). */
  get failures(): string[] {
    return [...this.failed];
  }

  /** Queues again every entry whose purge failed (the daemon calls it periodically). */
  retry(): void {
    for (const binned of this.failed) this.later(binned);
  }

  /** Resolves when every purge queued so far is done. */
  idle(): Promise<void> {
    return this.tail;
  }

  /** Lets the removal under way finish and drops the queued ones (the next start's sweep does them). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.tail;
  }
}
