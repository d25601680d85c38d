import type { Config } from './config.js';
import { createExporter } from './exporters/select.js';
import { ExportService } from './exporters/service.js';
import { JobRegistry } from './jobs/registry.js';
import type { Logger } from './log.js';
import { LockManager } from './store/locks.js';
import { Placement } from './store/placement.js';
import { Purger } from './store/purge.js';
import { recoverVolume } from './store/recovery.js';
import { sweepAgain, sweepRoots } from './store/sweep.js';
import { VolumeIndex } from './store/volume-index.js';
import { BlankImages } from './tools/blank-images.js';
import { QemuImg } from './tools/qemu-img.js';
import { Rbd } from './tools/rbd.js';
import { ExecaRunner, TOOL_NAMES, type CommandRunner } from './tools/runner.js';
import { cephImageReleaser } from './volumes/ceph.js';
import type { StoreContext } from './volumes/context.js';

/** How often purges that failed are tried again. */
const PURGE_RETRY_MS = 60_000;

/**
 * The daemon without its HTTP face: the index, the locks, the tools, and the start-up sequence
 * (sweep what a crash left, scan the tree, watch it).
 */
export class Daemon {
  readonly ctx: StoreContext;
  /** Exports to hypervisors: the chosen iSCSI backend and the markers kept in step with it. */
  readonly exports: ExportService;
  readonly startedAt = new Date();
  /** Run by stop() before the jobs are cancelled (pending uploads and cloud-init sets are abandoned). */
  private readonly stopHooks: (() => Promise<void>)[] = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  private purgeTimer: NodeJS.Timeout | null = null;
  /** Volume directories waiting for the next sweep pass (sweepLater). */
  private readonly toSweep = new Set<string>();
  private stopped = false;

  constructor(
    readonly config: Config,
    readonly log: Logger,
    runner: CommandRunner = new ExecaRunner(),
  ) {
    const qemuImg = new QemuImg(runner, config.toolTimeoutMs);
    const rbd = config.cephPool ? new Rbd(runner, { conf: config.cephConf, id: config.cephId, pool: config.cephPool }, config.toolTimeoutMs) : null;
    const purger = new Purger(log.child({ module: 'purge' }), cephImageReleaser(rbd));
    const locks = new LockManager(config.lockStaleMs, log.child({ module: 'locks' }));
    const recovery = { qemuImg, rbd, log: log.child({ module: 'recovery' }), purge: (binned: string) => purger.later(binned) };
    locks.setRecovery((dir, markers) => recoverVolume(dir, markers, recovery));
    const index = new VolumeIndex(config.mnt, log.child({ module: 'index' }));
    const placement = new Placement(index, locks);
    this.ctx = { config, log: log.child({ module: 'volumes' }), index, locks, placement, runner, qemuImg, rbd, blankImages: new BlankImages(qemuImg), jobs: new JobRegistry(log.child({ module: 'jobs' })), purger };
    this.exports = new ExportService(createExporter(config, runner, log.child({ module: 'exporter' })), index, config, log.child({ module: 'exports' }), rbd);
  }

  async start(): Promise<void> {
    const { index, locks } = this.ctx;
    await index.scanAll({ beforeServing: true });
    // Only the volumes the scan saw leftovers in need the sweep, and a reload after it; what the sweep
    // must leave (a dead holder's lock still fresh) is swept again until done.
    const unfinished = index.unfinishedDirs();
    const later = await sweepRoots(index.rootList(), locks, this.log.child({ module: 'sweep' }), { suspects: unfinished, purge: (p) => this.ctx.purger.later(p) });
    for (const dir of unfinished) await index.reloadDir(dir);
    if (later.length) this.log.child({ module: 'sweep' }).info('volumes left by a dead operation will be recovered once its lock is stale', { count: later.length });
    this.sweepLater(later);
    // Leftovers that appear while the daemon runs (a marker left by hand, a peer on a shared root that
    // died) are swept too, not obeyed until the next start; a live operation's own are left by the sweep.
    index.onLeftovers((dirs) => this.sweepLater(dirs));
    if (this.config.watch) await index.watch(this.config.rescanIntervalMs);
    // A purge the cluster refused (an RBD image still open, a cluster down) is tried again, not only at the next start.
    this.purgeTimer = setInterval(() => this.ctx.purger.retry(), PURGE_RETRY_MS);
    this.purgeTimer.unref();
    await this.exports.start();
    this.log.info('tree loaded', { mnt: this.config.mnt, roots: index.rootList().length, volumes: index.size, skipped: index.skippedRoots().length });
  }

  /**
   * Sweeps, every half stale period, the volumes handed to it: what the start-up sweep had to leave
   * (a dead holder's lock still fresh, dead claims, which need the root lock) and leftovers the index
   * finds later. Each pass sweeps what is pending; what must wait is kept for the next.
   */
  private sweepLater(dirs: string[]): void {
    for (const dir of dirs) this.toSweep.add(dir);
    if (!this.toSweep.size || this.sweepTimer || this.stopped) return;
    const { index, locks } = this.ctx;
    const log = this.log.child({ module: 'sweep' });
    log.debug('volumes to sweep once their lock is free or stale', { count: this.toSweep.size });
    this.sweepTimer = setTimeout(async () => {
      const batch = [...this.toSweep];
      this.toSweep.clear();
      const still = await sweepAgain(batch, locks, log);
      for (const dir of batch) await index.reloadDir(dir).catch(() => undefined);
      this.sweepTimer = null;
      this.sweepLater(still);
    }, Math.max(500, this.config.lockStaleMs / 2));
    this.sweepTimer.unref();
  }

  onStop(hook: () => Promise<void>): void {
    this.stopHooks.push(hook);
  }

  /** True once stop() (or stopWork()) began: the HTTP face refuses new requests (503). */
  get stopping(): boolean {
    return this.stopped;
  }

  /**
   * The first half of stop(): what runs ends now (pending uploads and cloud-init sets abandoned, jobs
   * cancelled: their requests answer 503), so that the HTTP server, which waits for its answers, need
   * not wait for an import or a copy to run its course.
   */
  async stopWork(): Promise<void> {
    this.stopped = true;
    for (const hook of this.stopHooks.splice(0)) await hook();
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = null;
    if (this.purgeTimer) clearInterval(this.purgeTimer);
    await this.ctx.jobs.cancelAll();
  }

  async stop(): Promise<void> {
    await this.stopWork();
    await this.ctx.purger.stop();
    await this.exports.stop();
    await this.ctx.index.close();
  }

  /** Which external tools this host has, for `status`. */
  tools(): Record<string, string | null> {
    return Object.fromEntries(TOOL_NAMES.map((t) => [t, this.ctx.runner.which(t)]));
  }
}
