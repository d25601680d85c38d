import { setTimeout as sleep } from 'node:timers/promises';
import { ToolError, UnavailableError } from '../errors.js';
import type { Logger } from '../log.js';
import { Tgtadm } from '../tools/tgtadm.js';
import { SerialQueue } from '../store/mutex.js';
import type { ExistingTarget, Exporter, TargetSpec } from './base.js';

const LUN = 1;
const TID_ATTEMPTS = 3;

/** The smallest target id not in use (tgt needs the caller to choose one). */
export function freeTid(used: number[]): number {
  const taken = new Set(used);
  let tid = 1;
  while (taken.has(tid)) tid += 1;
  return tid;
}

/**
 * The tgt backend (tgtd/tgtadm), for hosts without LIO and for the test suite. Target ids are not
 * stored anywhere: they are read back from `tgtadm --op show` before each change, and a tid that
 * another caller took in between is retried with a fresh read.
 */
export class TgtExporter implements Exporter {
  readonly name = 'tgt' as const;
  readonly capabilities = Object.freeze({ readonlyLuns: true, managedDaemon: true, savesConfig: false, rbdLuns: true });
  readonly lun = LUN;
  /** tgtadm calls one at a time: they change shared state (tids) that interleaved calls would corrupt. */
  private readonly queue = new SerialQueue();
  private owned = false;

  constructor(
    private readonly tgtadm: Tgtadm,
    private readonly opts: { manage: boolean; portal: string; controlPort?: number },
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    if (await this.tgtadm.ping()) {
      this.owned = this.opts.manage;
      return;
    }
    // tgtd's control socket is root's: to a daemon run as another user, a running tgtd does not answer either.
    const uid = process.getuid?.() ?? 0;
    if (uid !== 0)
      throw new UnavailableError(`no tgtd answers on control port ${this.opts.controlPort ?? 0} to this daemon's user (uid ${uid}): tgtd's control socket is root's; exports need the daemon run as root`);
    if (!this.opts.manage)
      throw new UnavailableError(`no tgtd answers on control port ${this.opts.controlPort ?? 0} (start one, or set ELEMENTO_TGT_MANAGE=1)`);
    await this.tgtadm.startDaemon(this.opts.portal);
    for (let i = 0; i < 50 && !(await this.tgtadm.ping()); i++) await sleep(100);
    if (!(await this.tgtadm.ping())) throw new UnavailableError('the tgtd started by the daemon does not answer');
    this.owned = true;
    this.log.info('tgtd started', { controlPort: this.opts.controlPort ?? 0, portal: this.opts.portal });
  }

  /**
   * A managed tgtd is stopped: our targets first (tgtd refuses to stop while any remain), then the
   * system. A tgtd that also serves other targets (other software's, or another daemon's of this host
   * on another tree: the same IQN prefix) keeps running with them.
   */
  async stop(ours: (target: ExistingTarget) => boolean): Promise<void> {
    if (!this.owned) return;
    const others = await this.queue.run(async () => {
      for (const t of await this.tgtadm.targets()) if (ours({ iqn: t.iqn, file: t.luns[0]?.path ?? '' })) await this.tgtadm.deleteTarget(t.tid);
      const left = await this.tgtadm.targets();
      if (!left.length) await this.tgtadm.deleteSystem();
      return left.map((t) => t.iqn);
    });
    this.owned = false;
    if (others.length) this.log.warn('tgtd left running: it serves targets of other software', { controlPort: this.opts.controlPort ?? 0, targets: others });
    else this.log.info('tgtd stopped', { controlPort: this.opts.controlPort ?? 0 });
  }

  list(): Promise<ExistingTarget[]> {
    return this.queue.run(async () => (await this.tgtadm.targets()).map((t) => ({ iqn: t.iqn, file: t.luns[0]?.path ?? '' })));
  }

  ensure(spec: TargetSpec): Promise<void> {
    return this.queue.run(async () => {
      for (let attempt = 1; ; attempt++) {
        const targets = await this.tgtadm.targets();
        if (targets.some((t) => t.iqn === spec.iqn)) return;
        const tid = freeTid(targets.map((t) => t.tid));
        try {
          await this.tgtadm.newTarget(tid, spec.iqn);
        } catch (err) {
          // Another tgtadm user took the tid between our read and our create: read again.
          if (err instanceof ToolError && attempt < TID_ATTEMPTS) continue;
          throw err;
        }
        try {
          await this.tgtadm.newLun(tid, LUN, spec.file, spec.rbd);
          if (spec.readonly) await this.tgtadm.setReadonly(tid, LUN);
          // Bound last: no initiator can log in before the LUN is complete (and read-only when it must be).
          await this.tgtadm.bindAll(tid);
          return;
        } catch (err) {
          await this.tgtadm.deleteTarget(tid).catch(() => undefined);
          throw err;
        }
      }
    });
  }

  remove(iqn: string): Promise<void> {
    return this.queue.run(async () => {
      const target = (await this.tgtadm.targets()).find((t) => t.iqn === iqn);
      if (target) await this.tgtadm.deleteTarget(target.tid);
    });
  }
}
