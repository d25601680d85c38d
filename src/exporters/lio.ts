import { NotSupportedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Targetcli } from '../tools/targetcli.js';
import { SerialQueue, type ExistingTarget, type Exporter, type TargetSpec } from './base.js';
import { IQN_PREFIX, splitPortal } from './iqn.js';

/** The fileio backstore of a target: named after the target so that it can be found again. */
export function backstoreName(iqn: string): string {
  return `elemento_${iqn.startsWith(IQN_PREFIX) ? iqn.slice(IQN_PREFIX.length) : iqn.replace(/[^A-Za-z0-9]/g, '_')}`;
}

/**
 * The LIO backend (targetcli), the production backend: a fileio backstore per volume, a target
 * with one LUN (LUN 0) and one portal, demo-mode access, and `saveconfig` after every change so that
 * the kernel's targets come back after a reboot. State is always read back from targetcli, never
 * remembered. Verified on this project only against recorded command sequences (no configfs here).
 */
export class LioExporter implements Exporter {
  readonly name = 'lio' as const;
  readonly capabilities = Object.freeze({ readonlyLuns: true, managedDaemon: false, savesConfig: true, rbdLuns: false });
  readonly lun = 0;
  private readonly queue = new SerialQueue();

  constructor(
    private readonly targetcli: Targetcli,
    private readonly portal: string,
    private readonly log: Logger,
  ) {}

  start(): Promise<void> {
    return this.queue.run(() => this.targetcli.disableDefaultPortal());
  }

  async stop(): Promise<void> {
    // The targets live in the kernel: they outlive the daemon by design.
  }

  list(): Promise<ExistingTarget[]> {
    return this.queue.run(async () => {
      const files = new Map((await this.targetcli.fileioBackstores()).map((b) => [b.name, b.file]));
      return (await this.targetcli.targets()).map((iqn) => ({ iqn, file: files.get(backstoreName(iqn)) ?? '' }));
    });
  }

  ensure(spec: TargetSpec): Promise<void> {
    // LIO would need the image mapped by the kernel (`rbd map`) or tcmu-runner: neither is set up by this daemon.
    if (spec.rbd) return Promise.reject(new NotSupportedError('the LIO exporter does not serve Ceph volumes (use the tgt exporter with tgt-rbd)'));
    return this.queue.run(async () => {
      if ((await this.targetcli.targets()).includes(spec.iqn)) return;
      const name = backstoreName(spec.iqn);
      // A backstore without its target was left by a failed or interrupted ensure: replace it.
      if ((await this.targetcli.fileioBackstores()).some((b) => b.name === name)) await this.targetcli.deleteFileio(name);
      const { address, port } = splitPortal(this.portal);
      let made: 'none' | 'backstore' | 'target' = 'none';
      try {
        await this.targetcli.createFileio(name, spec.file);
        made = 'backstore';
        await this.targetcli.createTarget(spec.iqn);
        made = 'target';
        await this.targetcli.createLun(spec.iqn, name);
        await this.targetcli.createPortal(spec.iqn, address, port);
        await this.targetcli.openTpg(spec.iqn, spec.readonly);
        await this.targetcli.saveconfig();
      } catch (err) {
        this.log.warn('undoing a half-made LIO target', { iqn: spec.iqn, made });
        if (made === 'target') await this.targetcli.deleteTarget(spec.iqn).catch(() => undefined);
        if (made !== 'none') await this.targetcli.deleteFileio(name).catch(() => undefined);
        await this.targetcli.saveconfig().catch(() => undefined);
        throw err;
      }
    });
  }

  remove(iqn: string): Promise<void> {
    return this.queue.run(async () => {
      const name = backstoreName(iqn);
      let changed = false;
      if ((await this.targetcli.targets()).includes(iqn)) {
        await this.targetcli.deleteTarget(iqn);
        changed = true;
      }
      if ((await this.targetcli.fileioBackstores()).some((b) => b.name === name)) {
        await this.targetcli.deleteFileio(name);
        changed = true;
      }
      if (changed) await this.targetcli.saveconfig();
    });
  }
}
