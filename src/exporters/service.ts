import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.js';
import { ConflictError, NotSupportedError } from '../errors.js';
import { errorFields, type Logger } from '../log.js';
import { faultPoint } from '../faults.js';
import { isOwnMarker, markerPath, readMarker, removeMarker, touchMarker, writeMarker } from '../store/export-marker.js';
import { dataFileName, isInside } from '../store/layout.js';
import { readPointer, uidOfImageName } from '../store/rbd-pointer.js';
import type { VolumeMeta } from '../store/meta.js';
import type { Rbd } from '../tools/rbd.js';
import type { VolumeIndex } from '../store/volume-index.js';
import { EXPORT_MARKER_RE } from '../store/volume-record.js';
import { SerialQueue } from '../store/mutex.js';
import type { ExistingTarget, Exporter, TargetSpec } from './base.js';
import { IQN_PREFIX } from './iqn.js';

export interface ReconcileReport {
  kept: number;
  recreated: number;
  removed: number;
  dropped: number;
}

/** What a volume's export target is made of: its data file, or a Ceph volume's RBD image read with the host's Ceph client. */
export async function targetSpec(dir: string, meta: VolumeMeta, iqn: string, config: Config): Promise<TargetSpec> {
  const file = path.join(dir, dataFileName(meta.format));
  if (meta.format !== 'rbd') return { iqn, file, readonly: meta.readonly };
  const pointer = await readPointer(file, meta.volumeID);
  if (!pointer) throw new Error(`${file} is missing`);
  return { iqn, file: `${pointer.pool}/${pointer.image}`, readonly: meta.readonly, rbd: { conf: config.cephConf, id: config.cephId } };
}

/**
 * Keeps the `.exported` markers (the truth, in the tree) and the backend's targets in step.
 * Every change of both goes through one queue in this process, so reconciliation never sees an
 * export half-made by a request. Order of steps, so that a crash is always repaired by the next
 * reconciliation: publish writes the marker, then the target (a marker without target is
 * recreated); withdraw removes the marker, then the target (a target without marker is removed).
 */
export class ExportService {
  private readonly queue = new SerialQueue();
  private timer: NodeJS.Timeout | null = null;
  private started = false;
  /**
   * The Ceph volumes the index held at the last reconciliation: an RBD target names only its image, which
   * another daemon of the host sharing tgtd and the pool (another tree) names the same way, as a volume
   * of a root not mounted yet at the start does. Only a volume this daemon knew and no root holds any
   * more is certainly ours and gone.
   */
  private knownCeph = new Set<string>();
  /** The markers whose target could not be made, with the error last said in the log (said again only when it changes). */
  private readonly markerErrors = new Map<string, string>();
  /** The backend as the last reconciliation found it (GET status): null before the first one, or with exports off. */
  private backend: { reachable: boolean; since: string; error?: string } | null = null;

  constructor(
    readonly exporter: Exporter,
    private readonly index: VolumeIndex,
    private readonly config: Config,
    private readonly log: Logger,
    /** The Ceph pool's tool; null on a host without Ceph (its Ceph volumes are then not exported). */
    private readonly rbd: Rbd | null = null,
  ) {}

  /** Starts the backend, reconciles once, then heartbeats and reconciles every exportHeartbeatMs. */
  async start(): Promise<void> {
    if (this.exporter.name === 'none') return;
    await this.reconcile().catch(() => {});
    let running = false;
    this.timer = setInterval(() => {
      // A reconciliation slower than the heartbeat is not queued again behind itself.
      if (running) return;
      running = true;
      this.reconcile()
        .catch(() => {})
        .finally(() => (running = false));
    }, this.config.exportHeartbeatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.queue.run(async () => {
      // A backend out of reach (a managed tgtd that died) has nothing left to release: the markers stay, the next start makes the targets again.
      if (this.started)
        await this.exporter.stop((t) => this.isOwnTarget(t)).catch((err) => this.log.warn('the export backend could not be released at the stop', errorFields(err)));
      this.started = false;
    });
  }

  private async ensureStarted(): Promise<void> {
    if (this.started) return;
    await this.exporter.start();
    this.started = true;
  }

  /**
   * Writes the marker, then makes the target; a new marker goes again if the target cannot be made
   * (the marker of an export that already existed stays: its target may only be out of reach). Volume lock held.
   */
  publish(dir: string, meta: VolumeMeta, client: string, iqn: string): Promise<void> {
    return this.queue.run(async () => {
      await this.ensureStarted();
      const existed = (await readMarker(markerPath(dir, iqn))) !== null;
      await writeMarker(dir, iqn, { client_uid: client, portal: this.config.iscsiPortal });
      faultPoint('publish.after-marker');
      try {
        await this.ensureTarget(await targetSpec(dir, meta, iqn, this.config));
      } catch (err) {
        if (!existed) await removeMarker(dir, iqn);
        throw err;
      }
    });
  }

  /** Removes the marker, then the target. Volume lock held. */
  withdraw(dir: string, iqn: string): Promise<void> {
    return this.queue.run(async () => {
      await this.ensureStarted();
      await removeMarker(dir, iqn);
      faultPoint('withdraw.after-marker-removed');
      await this.exporter.remove(iqn);
    });
  }

  /** The backend's state for GET status. */
  get backendState(): { reachable: boolean; since: string; error?: string } | null {
    return this.backend;
  }

  /**
   * Records what the backend answered; the log says the outage once (not at every heartbeat), and its end.
   */
  private backendIs(reachable: boolean, err?: unknown): void {
    const error = err === undefined ? undefined : errorFields(err).error as string;
    const was = this.backend;
    if (was && was.reachable === reachable) {
      // Still down: status shows the latest reason (the first failure of tgtadm's list and the next start's word it differently).
      if (error !== undefined) this.backend = { ...was, error };
      return;
    }
    this.backend = { reachable, since: new Date().toISOString(), ...(error === undefined ? {} : { error }) };
    if (!reachable) this.log.warn('the export backend cannot be reached: exports are not reconciled; retrying at each heartbeat', errorFields(err));
    else if (was) this.log.info('the export backend answers again', { down: was.error, since: was.since });
  }

  /**
   * Markers against targets: a target with its marker is kept and its marker touched; a marker of
   * this host without target is recreated while its heartbeat is recent, and dropped once it is
   * older than exportStaleMs; a target of ours (our IQN prefix, a file of an available root under the
   * mount directory) that no marker claims is removed.
   */
  reconcile(): Promise<ReconcileReport> {
    return this.queue.run(async () => {
      let targets: Map<string, ExistingTarget>;
      try {
        await this.ensureStarted();
        targets = new Map((await this.exporter.list()).map((t) => [t.iqn, t]));
      } catch (err) {
        // The backend is out of reach (a managed tgtd that died is started again at the next
        // heartbeat). The daemon still holds its exports: their heartbeat goes on, so that a long
        // outage does not make them look abandoned once the backend is back.
        this.started = false;
        await this.touchOwnMarkers();
        this.backendIs(false, err);
        throw err;
      }
      this.backendIs(true);
      const report: ReconcileReport = { kept: 0, recreated: 0, removed: 0, dropped: 0 };
      const claimed = new Set<string>();
      const ceph = new Set<string>();
      for (const record of [...this.index.all()]) {
        if (record.rbd) ceph.add(record.uid);
        if (!record.meta) continue;
        let changed = false;
        for (const iqn of await markersIn(record.dir)) {
          // A marker whose target cannot be made now is claimed all the same: its target is not removed.
          claimed.add(iqn);
          try {
            const outcome = await this.reconcileMarker(record.dir, record.meta, iqn, targets.get(iqn));
            if (this.markerErrors.delete(iqn)) this.log.info('export marker reconciled again', { vid: record.uid, iqn });
            if (outcome) report[outcome] += 1;
            if (outcome === 'dropped') {
              claimed.delete(iqn);
              changed = true;
            }
          } catch (err) {
            // Said once, not at every heartbeat: tried again at each one all the same.
            const error = errorFields(err).error as string;
            if (this.markerErrors.get(iqn) !== error) this.log.error('export marker not reconciled; trying again at each heartbeat', { vid: record.uid, iqn, ...errorFields(err) });
            this.markerErrors.set(iqn, error);
          }
        }
        if (changed) await this.index.reloadDir(record.dir);
      }
      for (const target of targets.values()) {
        if (claimed.has(target.iqn) || !target.iqn.startsWith(IQN_PREFIX)) continue;
        if (target.file !== '' && !(await this.isOrphan(target.file, target.iqn))) continue;
        await this.exporter.remove(target.iqn);
        report.removed += 1;
        this.log.warn('export target removed: no marker claims it', { iqn: target.iqn, file: target.file });
      }
      this.knownCeph = ceph;
      for (const iqn of this.markerErrors.keys()) if (!claimed.has(iqn)) this.markerErrors.delete(iqn);
      return report;
    });
  }

  /**
   * The heartbeat of every marker of this host, whatever its target's state. The markers are those
   * the index knows (not a readdir of 10,000 volumes at every heartbeat of an outage): one written
   * a moment ago is touched at the next heartbeat.
   */
  private async touchOwnMarkers(): Promise<void> {
    for (const record of [...this.index.all()])
      for (const iqn of record.exports) {
        const file = markerPath(record.dir, iqn);
        const marker = await readMarker(file).catch(() => null);
        if (marker && isOwnMarker(marker.content)) await touchMarker(file).catch(() => undefined);
      }
  }

  /**
   * Whether an unclaimed target's file is ours and certainly unclaimed: under the mount directory,
   * in a root that is available, in a volume directory that can be read (or is gone) and holds no
   * marker for it. A root unmounted for a moment, or a volume whose meta.json is broken, keeps its exports.
   * An RBD image (`pool/elemento-<uid>`) is found by its uid; one whose volume no root holds any more
   * (its directory removed by hand) is an orphan only while every root is there to say so, and only if
   * the volume was this daemon's at the last reconciliation (knownCeph).
   */
  private async isOrphan(file: string, iqn: string): Promise<boolean> {
    let dir = path.dirname(file);
    if (!path.isAbsolute(file)) {
      const uid = volumeOfImage(file);
      if (!uid) return false;
      const record = await this.index.lookup(uid);
      if (!record) return this.knownCeph.has(uid) && this.index.everyRootAvailable();
      dir = record.dir;
    }
    if (!isInside(this.config.mnt, dir)) return false;
    if (!this.index.root(path.dirname(dir))) return false;
    try {
      return !(await fs.readdir(dir)).includes(path.basename(markerPath(dir, iqn)));
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT';
    }
  }

  /** A target this daemon made: our IQN prefix and the file of a volume under its mount directory (or a known volume's RBD image). */
  private isOwnTarget(target: ExistingTarget): boolean {
    if (!target.iqn.startsWith(IQN_PREFIX) || target.file === '') return false;
    const dir = path.isAbsolute(target.file) ? path.dirname(target.file) : this.cephVolumeDir(target.file);
    return dir !== null && isInside(this.config.mnt, dir);
  }

  /** The directory of the known volume whose RBD image is `pool/image`, or null (not ours, or its volume not seen now). */
  private cephVolumeDir(poolImage: string): string | null {
    const uid = volumeOfImage(poolImage);
    return (uid && this.index.get(uid)?.dir) || null;
  }

  /**
   * Makes a target. A Ceph volume's image is first looked up with rbd: tgtd opens it in its one
   * thread with ceph.conf's timeouts (300 s by default), so a cluster that does not answer would
   * hold tgtd, and every LUN it serves, that long; rbd's own calls are bounded (src/tools/rbd.ts).
   */
  private async ensureTarget(spec: TargetSpec): Promise<void> {
    if (spec.rbd) {
      if (!this.rbd) throw new NotSupportedError('this storage host has no Ceph pool configured (ELEMENTO_CEPH_POOL)');
      const [pool, image] = spec.file.split('/');
      if ((await this.rbd.size({ pool, image })) === null)
        throw new ConflictError(`the RBD image ${spec.file} does not exist: the volume is broken`);
    }
    await this.exporter.ensure(spec);
  }

  /** One marker against its target (queue held). Returns what was done, or null for another host's marker. */
  private async reconcileMarker(dir: string, meta: VolumeMeta, iqn: string, target: ExistingTarget | undefined) {
    const file = markerPath(dir, iqn);
    const marker = await readMarker(file);
    if (!marker || !isOwnMarker(marker.content)) return null;
    const spec = await targetSpec(dir, meta, iqn, this.config);
    let outcome: 'kept' | 'recreated' | 'dropped' = 'kept';
    if (!target || target.file !== spec.file) {
      if (Date.now() - marker.heartbeatMs >= this.config.exportStaleMs) {
        await removeMarker(dir, iqn);
        this.log.warn('export marker dropped: its heartbeat is long dead and it has no target', { vid: meta.volumeID, iqn });
        return 'dropped';
      }
      // A target that lost its LUN or serves another file is made again.
      if (target) await this.exporter.remove(iqn);
      await this.ensureTarget(spec);
      outcome = 'recreated';
      this.log.info('export target recreated for its marker', { vid: meta.volumeID, iqn });
    }
    await touchMarker(file);
    return outcome;
  }
}

/** The uid of the volume whose RBD image a target serves (`pool/elemento-<uid>`), or null: not one of ours. */
function volumeOfImage(poolImage: string): string | null {
  return uidOfImageName(poolImage.split('/').at(-1) ?? '');
}

/** The IQNs of a volume directory's `.exported` markers; none when it cannot be read now (or was just destroyed). */
async function markersIn(dir: string): Promise<string[]> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  return names.map((name) => EXPORT_MARKER_RE.exec(name)?.[1]).filter((iqn): iqn is string => Boolean(iqn));
}
