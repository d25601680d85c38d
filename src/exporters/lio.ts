import { createHash } from 'node:crypto';
import { NotSupportedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Targetcli } from '../tools/targetcli.js';
import { SerialQueue } from '../store/mutex.js';
import type { ExistingTarget, Exporter, TargetSpec } from './base.js';
import { splitPortal } from './iqn.js';

/** The prefix of the fileio storage objects this daemon makes: unused ones are its to delete. */
export const BACKSTORE_PREFIX = 'elemento_';

/**
 * The fileio backstore of a file, named after the file: targetcli refuses a second storage object on a
 * file that already backs one (targetcli-fb ui_backstore.py, UIFileIOBackstore.ui_command_create:
 * "storage object for <file> already exists"), so the targets of one volume (a shareable volume, a
 * migration's destination) share it, each with its own LUN and its own write protection.
 */
export function backstoreName(file: string): string {
  return BACKSTORE_PREFIX + createHash('sha256').update(file).digest('hex').slice(0, 32);
}

/**
 * The LIO backend (targetcli), the production backend: a fileio backstore per volume file (shared by
 * the volume's targets), a target with one LUN (LUN 0) and one portal, demo-mode access, and `saveconfig` after every change so that
 * the kernel's targets come back after a reboot. State is always read back from targetcli, never
 * remembered. Verified on this project only against recorded command sequences and a fake targetcli
 * written from targetcli-fb's sources (no configfs here), never against a kernel.
 */
export class LioExporter implements Exporter {
  readonly name = 'lio' as const;
  readonly capabilities = Object.freeze({ readonlyLuns: true, managedDaemon: false, savesConfig: true, rbdLuns: false });
  readonly lun = 0;
  /** targetcli calls one at a time: they change shared state (backstore names, saveconfig) that interleaved calls would corrupt. */
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
      return (await this.targetcli.targets()).map((t) => ({ iqn: t.iqn, file: files.get(t.backstores[0] ?? '') ?? '' }));
    });
  }

  ensure(spec: TargetSpec): Promise<void> {
    // LIO would need the image mapped by the kernel (`rbd map`) or tcmu-runner: neither is set up by this daemon.
    if (spec.rbd) return Promise.reject(new NotSupportedError('the LIO exporter does not serve Ceph volumes (use the tgt exporter with tgt-rbd)'));
    return this.queue.run(async () => {
      if ((await this.targetcli.targets()).some((t) => t.iqn === spec.iqn)) return;
      // The file's backstore when it has one: another target of the volume's, or one left unused by
      // an ensure that was interrupted.
      const existing = (await this.targetcli.fileioBackstores()).find((b) => b.file === spec.file);
      const name = existing?.name ?? backstoreName(spec.file);
      const { address, port } = splitPortal(this.portal);
      let madeBackstore = false;
      let madeTarget = false;
      try {
        if (!existing) {
          await this.targetcli.createFileio(name, spec.file);
          madeBackstore = true;
        }
        await this.targetcli.createTarget(spec.iqn);
        madeTarget = true;
        await this.targetcli.createLun(spec.iqn, name);
        await this.targetcli.createPortal(spec.iqn, address, port);
        await this.targetcli.openTpg(spec.iqn, spec.readonly);
        await this.targetcli.saveconfig();
      } catch (err) {
        if (!madeBackstore && !madeTarget) throw err;
        this.log.warn('undoing a half-made LIO target', { iqn: spec.iqn, madeBackstore, madeTarget });
        if (madeTarget) await this.targetcli.deleteTarget(spec.iqn).catch(() => undefined);
        // Only a backstore made here: deleting a storage object deletes the LUNs of other targets on it.
        if (madeBackstore) await this.targetcli.deleteFileio(name).catch(() => undefined);
        await this.targetcli.saveconfig().catch(() => undefined);
        throw err;
      }
    });
  }

  /**
   * Deletes the target, then every backstore of ours that no target uses any more: the target's own
   * when it was the last on its file, and any left by an ensure that was interrupted.
   */
  remove(iqn: string): Promise<void> {
    return this.queue.run(async () => {
      const targets = await this.targetcli.targets();
      let changed = false;
      if (targets.some((t) => t.iqn === iqn)) {
        await this.targetcli.deleteTarget(iqn);
        changed = true;
      }
      const used = new Set(targets.filter((t) => t.iqn !== iqn).flatMap((t) => t.backstores));
      for (const b of await this.targetcli.fileioBackstores())
        if (b.name.startsWith(BACKSTORE_PREFIX) && !used.has(b.name)) {
          await this.targetcli.deleteFileio(b.name);
          changed = true;
        }
      if (changed) await this.targetcli.saveconfig();
    });
  }
}
