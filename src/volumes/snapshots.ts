import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BadRequestError, ConflictError, NotFoundError, translateErrno } from '../errors.js';
import { dataFileName } from '../store/layout.js';
import type { VolumeMeta } from '../store/meta.js';
import { faultPoint } from '../faults.js';
import { QemuImgLayers, type ImageSnapshot } from '../tools/qemu-img-layers.js';
import { findVolume, requireNoOverlays, requireNotInUse } from './access.js';
import type { Caller, StoreContext } from './context.js';
import { withOwnedVolume } from './modify.js';

export type SnapshotRequest = {
  vid: string;
  name: string;
};

type SnapshotAction = 'create' | 'revert' | 'delete';
/** How refusals name each action ("volume … cannot be snapshotted"). */
const PAST: Record<SnapshotAction, string> = { create: 'snapshotted', revert: 'reverted to a snapshot', delete: 'stripped of a snapshot' };

function requireQcow2(meta: VolumeMeta): void {
  if (meta.format !== 'qcow2') throw new BadRequestError(`only qcow2 volumes have snapshots; volume ${meta.volumeID} is ${meta.format}`, { field: 'vid' });
}

/**
 * Runs a snapshot change under the volume's lock (purpose `snapshot`), after the rules: the owner
 * only; qcow2 only; not while exported or attached unless read-only (a VM writing would race
 * qemu-img); not on a base whose linked clones read through to it.
 */
async function withSnapshots<T>(
  ctx: StoreContext,
  req: SnapshotRequest,
  caller: Caller,
  action: SnapshotAction,
  fn: (layers: QemuImgLayers, data: string, existing: ImageSnapshot[]) => Promise<T>,
): Promise<T> {
  const layers = new QemuImgLayers(ctx.runner, ctx.config.toolTimeoutMs);
  return withOwnedVolume(ctx, req.vid, caller, 'snapshot', `${action} a snapshot of`, async (dir, meta) => {
    requireQcow2(meta);
    if (!meta.readonly) requireNotInUse(await fs.readdir(dir), meta, PAST[action]);
    requireNoOverlays(ctx, meta, PAST[action]);
    const data = path.join(dir, dataFileName(meta.format));
    try {
      const done = await fn(layers, data, await layers.snapshots(data));
      faultPoint(`snapshot.after-${action}`);
      return done;
    } catch (err) {
      throw translateErrno(err, `volume ${req.vid}`);
    }
  });
}

function named(existing: ImageSnapshot[], req: SnapshotRequest): ImageSnapshot {
  const snapshot = existing.find((s) => s.name === req.name);
  if (!snapshot) throw new NotFoundError(`volume ${req.vid} has no snapshot named ${req.name}`, { vid: req.vid });
  return snapshot;
}

/** `snapshot/create`: an internal qcow2 snapshot of the volume as it is now. */
export async function createSnapshot(ctx: StoreContext, req: SnapshotRequest, caller: Caller) {
  const snapshot = await withSnapshots(ctx, req, caller, 'create', async (layers, data, existing) => {
    if (existing.some((s) => s.name === req.name))
      throw new ConflictError(`volume ${req.vid} already has a snapshot named ${req.name}`, { vid: req.vid });
    await layers.createSnapshot(data, req.name);
    return named(await layers.snapshots(data), req);
  });
  ctx.log.info('snapshot created', { vid: req.vid, snapshot: req.name });
  return { vid: req.vid, snapshot };
}

/** `snapshot/revert`: the volume's bytes become the snapshot's again (the snapshot stays). */
export async function revertSnapshot(ctx: StoreContext, req: SnapshotRequest, caller: Caller) {
  const snapshot = await withSnapshots(ctx, req, caller, 'revert', async (layers, data, existing) => {
    const found = named(existing, req);
    await layers.applySnapshot(data, found.name);
    return found;
  });
  ctx.log.info('volume reverted to a snapshot', { vid: req.vid, snapshot: req.name });
  return { vid: req.vid, snapshot };
}

/** `snapshot/delete`: forgets a snapshot and frees the clusters only it held. */
export async function deleteSnapshot(ctx: StoreContext, req: SnapshotRequest, caller: Caller) {
  await withSnapshots(ctx, req, caller, 'delete', async (layers, data, existing) => {
    await layers.deleteSnapshot(data, named(existing, req).name);
  });
  ctx.log.info('snapshot deleted', { vid: req.vid, snapshot: req.name });
  return { vid: req.vid, deleted: req.name };
}

/** `snapshot/list`: read without the lock (`qemu-img info -U`), by anyone who may see the volume. */
export async function listSnapshots(ctx: StoreContext, vid: string, caller: Caller) {
  const record = findVolume(ctx, vid, caller);
  requireQcow2(record.meta);
  const layers = new QemuImgLayers(ctx.runner, ctx.config.toolTimeoutMs);
  return { vid, snapshots: await layers.snapshots(path.join(record.dir, dataFileName(record.meta.format))) };
}
