import { ToolError, UnavailableError } from '../errors.js';
import type { CommandRunner } from './runner.js';

/** tgtadm's exit code when no tgtd answers on the control socket ("Transport endpoint is not connected"). */
const NOT_CONNECTED = 107;

/** One target as `tgtadm --op show --mode target` describes it. */
export interface TgtTarget {
  tid: number;
  iqn: string;
  /** Disk LUNs (LUN 0, tgt's controller, is left out). */
  luns: Array<{ lun: number; path: string; readonly: boolean }>;
}

/**
 * Parses `tgtadm --op show --mode target`: `Target <tid>: <iqn>` headers, then per LUN
 * `LUN: <n>`, `Readonly: Yes|No` and `Backing store path: <path>` lines (the controller's path is `None`).
 */
export function parseTgtTargets(text: string): TgtTarget[] {
  const targets: TgtTarget[] = [];
  let target: TgtTarget | null = null;
  let lun: TgtTarget['luns'][number] | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const header = /^Target (\d+): (\S+)$/.exec(raw);
    if (header) {
      target = { tid: Number(header[1]), iqn: header[2], luns: [] };
      targets.push(target);
      lun = null;
      continue;
    }
    if (!target) continue;
    const lunLine = /^LUN: (\d+)$/.exec(line);
    if (lunLine) {
      lun = { lun: Number(lunLine[1]), path: '', readonly: false };
      if (lun.lun > 0) target.luns.push(lun);
      continue;
    }
    if (!lun) continue;
    const ro = /^Readonly: (Yes|No)$/.exec(line);
    if (ro) lun.readonly = ro[1] === 'Yes';
    const backing = /^Backing store path: (.+)$/.exec(line);
    if (backing && backing[1] !== 'None') lun.path = backing[1];
  }
  return targets;
}

/**
 * Thin typed wrappers around tgtadm (and tgtd's start), all through the one runner. `controlPort`
 * is tgtd's `-C`: several tgtd can run on one host, each answering on its own control socket.
 */
export class Tgtadm {
  private readonly base: string[];

  constructor(
    private readonly runner: CommandRunner,
    private readonly controlPort: number | undefined,
    private readonly timeoutMs = 30_000,
  ) {
    this.base = controlPort === undefined ? ['--lld', 'iscsi'] : ['-C', String(controlPort), '--lld', 'iscsi'];
  }

  private async run(args: string[]): Promise<string> {
    try {
      return (await this.runner.run('tgtadm', [...this.base, ...args], { timeoutMs: this.timeoutMs })).stdout;
    } catch (err) {
      if (err instanceof ToolError && err.exitCode === NOT_CONNECTED)
        throw new UnavailableError(`no tgtd answers on control port ${this.controlPort ?? 0}`);
      throw err;
    }
  }

  /** True when a tgtd answers on the control port. */
  async ping(): Promise<boolean> {
    try {
      await this.run(['--op', 'show', '--mode', 'system']);
      return true;
    } catch {
      return false;
    }
  }

  async targets(): Promise<TgtTarget[]> {
    return parseTgtTargets(await this.run(['--op', 'show', '--mode', 'target']));
  }

  async newTarget(tid: number, iqn: string): Promise<void> {
    await this.run(['--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn]);
  }

  /** A LUN backed by a file, or with `rbd` by the RBD image `file` (`pool/image`) through tgt's rbd backing store (tgt-rbd). */
  async newLun(tid: number, lun: number, file: string, rbd?: { conf: string; id: string }): Promise<void> {
    const backing = rbd ? ['--bstype', 'rbd', '--bsopts', `conf=${rbd.conf};id=${rbd.id}`] : [];
    try {
      await this.run(['--op', 'new', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(lun), ...backing, '-b', file]);
    } catch (err) {
      // tgtadm says only "invalid request" or "unknown error": the image, the cluster and tgt-rbd are all suspects.
      if (rbd && err instanceof ToolError)
        throw new UnavailableError(`tgt could not open the RBD image ${file} (is the cluster reachable, the image there, tgt-rbd installed?)`);
      throw err;
    }
  }

  /** tgtadm takes `readonly` only as an update of an existing LUN. */
  async setReadonly(tid: number, lun: number): Promise<void> {
    await this.run(['--op', 'update', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(lun), '--params', 'readonly=1']);
  }

  /** Lets any initiator log in (the hypervisors are on the storage network). */
  async bindAll(tid: number): Promise<void> {
    await this.run(['--op', 'bind', '--mode', 'target', '--tid', String(tid), '-I', 'ALL']);
  }

  /** `--force` also drops connected initiators: unexport is the controller's decision. */
  async deleteTarget(tid: number): Promise<void> {
    await this.run(['--op', 'delete', '--mode', 'target', '--tid', String(tid), '--force']);
  }

  /** Stops tgtd (it ignores SIGTERM); it refuses while targets remain, so callers delete them first. */
  async deleteSystem(): Promise<void> {
    await this.run(['--op', 'delete', '--mode', 'system']);
  }

  /** Starts a tgtd that detaches itself (no `-f`): the runner returns once it is up. */
  async startDaemon(portal: string): Promise<void> {
    const control = this.controlPort === undefined ? [] : ['-C', String(this.controlPort)];
    await this.runner.run('tgtd', [...control, '--iscsi', `portal=${portal}`], { timeoutMs: this.timeoutMs });
  }
}
