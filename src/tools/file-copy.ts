import { constants, promises as fs } from 'node:fs';
import { NotSupportedError } from '../errors.js';
import type { CommandRunner, ToolName } from './runner.js';

/** The file-copy algorithms of meta.json's `alg` (seed 002: `cp`, `rclone`, `rsync`). */
export type CopyAlg = 'cp' | 'rsync' | 'rclone';

export interface CopyOptions {
  signal?: AbortSignal;
  /** Percent of the source's size written so far. */
  onProgress?: (percent: number) => void;
}

const PROGRESS_POLL_MS = 500;

/**
 * Each algorithm as data: the tool it needs and the arguments that copy `src` to the new file `dst`
 * (a failed copy's output is removed). Before `cp`, a reflink is tried (FileCopier.copy).
 */
const ALGORITHMS: Record<CopyAlg, { tool: ToolName; args: (src: string, dst: string) => string[] }> = {
  cp: { tool: 'cp', args: (src, dst) => ['--sparse=always', '--reflink=never', '--', src, dst] },
  rsync: { tool: 'rsync', args: (src, dst) => ['--sparse', '--inplace', '--whole-file', '--', src, dst] },
  rclone: { tool: 'rclone', args: (src, dst) => ['copyto', '--config', '', '--local-no-set-modtime', '--', src, dst] },
};

/** Copies whole image files with `cp`, `rsync` or `rclone`, through the one runner. */
export class FileCopier {
  constructor(
    private readonly runner: CommandRunner,
    private readonly timeoutMs: number,
  ) {}

  /** Throws 501 when the algorithm's tool is not installed on this host. */
  requireTool(alg: CopyAlg): void {
    const { tool } = ALGORITHMS[alg];
    if (!this.runner.which(tool)) throw new NotSupportedError(`clone algorithm ${alg} needs ${tool}, which is not installed on this storage host`);
  }

  /**
   * Copies `src` to `dst` (which must not exist); answers whether blocks were shared (reflink).
   * `cp`'s reflink is the kernel's FICLONE, asked directly (what `cp --reflink=always` does, without
   * starting a process: the clone of any size then takes well under a millisecond); `reflink: false`
   * (the filesystem was probed and cannot) skips it.
   */
  async copy(alg: CopyAlg, src: string, dst: string, opts: CopyOptions & { reflink?: boolean } = {}): Promise<{ reflinked: boolean }> {
    this.requireTool(alg);
    if (alg === 'cp' && opts.reflink !== false && !opts.signal?.aborted) {
      try {
        await fs.copyFile(src, dst, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
        return { reflinked: true };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw err; // not ours to remove
        await fs.rm(dst, { force: true });
      }
    }
    const { tool, args } = ALGORITHMS[alg];
    const total = (await fs.stat(src)).size;
    const poll = opts.onProgress ? setInterval(() => void reportSize(dst, total, opts.onProgress!), PROGRESS_POLL_MS) : undefined;
    try {
      await this.runner.run(tool, args(src, dst), { timeoutMs: this.timeoutMs, signal: opts.signal });
      return { reflinked: false };
    } catch (err) {
      await fs.rm(dst, { force: true });
      throw err;
    } finally {
      clearInterval(poll);
    }
  }
}

async function reportSize(dst: string, total: number, onProgress: (percent: number) => void): Promise<void> {
  const written = await fs.stat(dst).then((s) => s.size, () => 0);
  if (total > 0) onProgress(Math.min(99, (written / total) * 100));
}
