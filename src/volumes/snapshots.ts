import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BadRequestError, ConflictError, NotFoundError, translateErrno } from '../errors.js';
import { dataFileName } from '../store/layout.js';
import type { VolumeMeta } from '../store/meta.js';
import { faultPoint } from '../faults.js';
import { QemuImgLayers, type ImageSnapshot } from '../tools/qemu-img-layers.js';
import { findVolume, requireImageOfItsFormat, requireNoOverlays, requireNotInUse } from './access.js';
import { imageOf, requireCeph, requireImageUnused } from './ceph.js';
import type { Caller, StoreContext } from './context.js';
import { withOwnedVolume } from './modify.js';

export type SnapshotRequest = {
  vid: string;
  name: string;
};

type SnapshotAction = 'create' | 'revert' | 'delete';
/** How refusals name each action ("volume … cannot be snapshotted"). */
const PAST: Record<SnapshotAction, string> = { create: 'snapshotted', revert: 'reverted to a snapshot', delete: 'stripped of a snapshot' };

/** A volume's snapshots, whichever kind of image holds them, and the image's size. */
interface SnapshotStore {
  list(): Promise<ImageSnapshot[]>;
  create(name: string): Promise<void>;
  /** The tool's rollback: the image's bytes and its size become the snapshot's. */
  rollback(name: string): Promise<void>;
  remove(name: string): Promise<void>;
  size(): Promise<number>;
  grow(size: number): Promise<void>;
}

/** qcow2's internal snapshots (`qemu-img snapshot`), or a Ceph volume's RBD snapshots (`rbd snap`); 400 for any other format. */
async function snapshotStore(ctx: StoreContext, dir: string, meta: VolumeMeta): Promise<SnapshotStore> {
  if (meta.format === 'rbd') {
    const rbd = requireCeph(ctx);
    const image = await imageOf(dir, meta);
    return {
      list: () => rbd.snapshots(image),
      create: (name) => rbd.createSnapshot(image, name),
      rollback: (name) => rbd.rollback(image, name),
      remove: (name) => rbd.deleteSnapshot(image, name),
      size: async () => (await rbd.size(image)) ?? meta.size,
      grow: (size) => rbd.resize(image, size),
    };
  }
  if (meta.format !== 'qcow2')
    throw new BadRequestError(`only qcow2 and Ceph volumes have snapshots; volume ${meta.volumeID} is ${meta.format}`, { field: 'vid' });
  // snapshot/list reads without the lock, so without readLockedMeta's check.
  await requireImageOfItsFormat(dir, meta);
  const layers = new QemuImgLayers(ctx.runner, ctx.config.toolTimeoutMs);
  const data = path.join(dir, dataFileName(meta.format));
  return {
    list: () => layers.snapshots(data),
    create: (name) => layers.createSnapshot(data, name),
    rollback: (name) => layers.applySnapshot(data, name),
    remove: (name) => layers.deleteSnapshot(data, name),
    size: async () => (await ctx.qemuImg.info(data, 'qcow2')).virtualSize,
    grow: (size) => ctx.qemuImg.resize(data, 'qcow2', size),
  };
}

/**
 * Brings the volume back to a snapshot. Both tools also give the image the size it had when the
 * snapshot was taken; volumes only grow, so the image is grown again to the volume's size (the bytes
 * past the snapshot's end read as zeros) and meta.json stays true. Recovery finishes a revert that
 * died between the two steps.
 */
async function revertTo(store: SnapshotStore, name: string, volumeSize: number): Promise<void> {
  await store.rollback(name);
  faultPoint('snapshot.after-rollback');
  if ((await store.size()) < volumeSize) await store.grow(volumeSize);
}

/**
 * Runs a snapshot change under the volume's lock (purpose `snapshot`), after the rules: the owner
 * only; qcow2 or Ceph only; not while exported or attached (a VM writing would race the tool), except
 * the creation of one on a read-only volume; not on a base whose linked clones read through to it.
 */
async function withSnapshots<T>(
  ctx: StoreContext,
  req: SnapshotRequest,
  caller: Caller,
  action: SnapshotAction,
  fn: (store: SnapshotStore, existing: ImageSnapshot[], meta: VolumeMeta) => Promise<T>,
): Promise<T> {
  return withOwnedVolume(ctx, req.vid, caller, 'snapshot', `${action} a snapshot of`, async (dir, meta) => {
    const store = await snapshotStore(ctx, dir, meta);
    // Only taking a snapshot of a read-only volume leaves its image as a hypervisor reads it; a revert or
    // a delete rewrites the tables that hypervisor has cached.
    if (!meta.readonly || action !== 'create') requireNotInUse(await fs.readdir(dir), meta, PAST[action]);
    // A Ceph image may also be open by a hypervisor directly; RBD itself snapshots and forgets snapshots of a live image.
    if (action === 'revert') await requireImageUnused(ctx, dir, meta, PAST[action]);
    await requireNoOverlays(ctx, meta, PAST[action]);
    // Each rewrites a qcow2's tables in place; of an RBD image's, only a rollback changes what a download reads.
    if (meta.format !== 'rbd' || action === 'revert') ctx.locks.rewriteInPlace(dir, req.vid, PAST[action]);
    try {
      const done = await fn(store, await store.list(), meta);
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

/** `snapshot/create`: a snapshot of the volume as it is now (internal to a qcow2 image, or an RBD snapshot). */
export async function createSnapshot(ctx: StoreContext, req: SnapshotRequest, caller: Caller) {
  const snapshot = await withSnapshots(ctx, req, caller, 'create', async (store, existing) => {
    if (existing.some((s) => s.name === req.name))
      throw new ConflictError(`volume ${req.vid} already has a snapshot named ${req.name}`, { vid: req.vid });
    await store.create(req.name);
    return named(await store.list(), req);
  });
  ctx.log.info('snapshot created', { vid: req.vid, snapshot: req.name });
  return { vid: req.vid, snapshot };
}

/** `snapshot/revert`: the volume's bytes become the snapshot's again (the snapshot stays). */
export async function revertSnapshot(ctx: StoreContext, req: SnapshotRequest, caller: Caller) {
  const snapshot = await withSnapshots(ctx, req, caller, 'revert', async (store, existing, meta) => {
    const found = named(existing, req);
    await revertTo(store, found.name, meta.size);
    return found;
  });
  ctx.log.info('volume reverted to a snapshot', { vid: req.vid, snapshot: req.name });
  return { vid: req.vid, snapshot };
}

/** `snapshot/delete`: forgets a snapshot and frees the clusters only it held. */
export async function deleteSnapshot(ctx: StoreContext, req: SnapshotRequest, caller: Caller) {
  await withSnapshots(ctx, req, caller, 'delete', async (store, existing) => {
    await store.remove(named(existing, req).name);
  });
  ctx.log.info('snapshot deleted', { vid: req.vid, snapshot: req.name });
  return { vid: req.vid, deleted: req.name };
}

/** `snapshot/list`: read without the lock (`qemu-img info -U`, `rbd snap ls`), by anyone who may see the volume. */
export async function listSnapshots(ctx: StoreContext, vid: string, caller: Caller) {
  const record = await findVolume(ctx, vid, caller);
  return { vid, snapshots: await (await snapshotStore(ctx, record.dir, record.meta)).list() };
}
