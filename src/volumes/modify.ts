import { promises as fs } from 'node:fs';
import path from 'node:path';
import { errorFields } from '../log.js';
import { BadRequestError, ConflictError, translateErrno } from '../errors.js';
import { BYTES_PER_GB, dataFileName, gbToBytes } from '../store/layout.js';
import { writeMeta, type VolumeMeta } from '../store/meta.js';
import type { DiskFormat } from '../tools/qemu-img.js';
import { findVolume, readLockedMeta, requireNoOverlays, requireNoSnapshots, requireNotInUse, requireOwnedAfresh, requireOwner } from './access.js';
import type { Caller, StoreContext } from './context.js';
import { assertConsistent } from './create.js';
import { convertIntoPlace } from './rewrite.js';
import { faultPoint } from '../faults.js';
import { jobStarted } from '../jobs/registry.js';
import { imageOf, requireCeph } from './ceph.js';

/** Fields `update` may change (SPEC §3: never format, creatorID or cloudinit). */
const UPDATABLE = ['name', 'private', 'readonly', 'shareable', 'bootable', 'clonable', 'alg', 'bus', 'labels'] as const;

/** Fields the export rules and an export's LUN depend on (SPEC §4). */
const IN_USE_FLAGS = ['private', 'readonly', 'shareable'] as const;

export type UpdateRequest = { vid: string; creatorID: string; format?: unknown; cloudinit?: unknown } & Partial<Pick<VolumeMeta, (typeof UPDATABLE)[number]>>;

/**
 * Runs `fn` on a volume under its lock with meta.json read afresh from disk (another host may have
 * changed it), after the caller has been checked as its owner: against the index first (a quick
 * refusal), then against that fresh meta.json (a transfer may have happened meanwhile).
 */
export async function withOwnedVolume<T>(
  ctx: StoreContext,
  vid: string,
  caller: Caller,
  purpose: string,
  action: string,
  fn: (dir: string, meta: VolumeMeta) => Promise<T>,
): Promise<T> {
  const record = await findVolume(ctx, vid, caller);
  requireOwner(record.meta, caller, action);
  try {
    return await ctx.locks.withVolumeLock(record.dir, purpose, vid, async () => fn(record.dir, requireOwnedAfresh(await readLockedMeta(record.dir, vid), caller, action)));
  } finally {
    await ctx.index.reloadDir(record.dir);
  }
}

/** `update`: changes a volume's metadata; answers the seed's update shape. */
export async function updateVolume(ctx: StoreContext, req: UpdateRequest): Promise<Record<string, unknown>> {
  const meta = await withOwnedVolume(ctx, req.vid, req.creatorID, 'update', 'update', async (dir, current) => {
    if (req.format !== undefined && req.format !== current.format)
      throw new BadRequestError(`the format of a volume cannot be changed by update (use update/convert)`, { field: 'format' });
    if (req.cloudinit !== undefined && req.cloudinit !== current.cloudinit)
      throw new BadRequestError(`whether a volume is a cloud-init volume cannot be changed`, { field: 'cloudinit' });
    const next: VolumeMeta = { ...current };
    for (const key of UPDATABLE) if (req[key] !== undefined) (next as Record<string, unknown>)[key] = req[key];
    // A rule broken by a hand-written meta.json, which this request does not touch, is not the request's fault.
    if (next.bootable && next.shareable && req.bootable === undefined && req.shareable === undefined)
      throw new ConflictError(
        `volume ${req.vid} is both bootable and shareable, as its meta.json says (the daemon never makes one so): send bootable or shareable false with the update, or correct meta.json by hand`,
        { vid: req.vid },
      );
    assertConsistent(next);
    if (next.format === 'iso' && !next.readonly && req.readonly === undefined)
      throw new ConflictError(`volume ${req.vid} is an ISO image that its meta.json says is not read-only: send readonly true with the update, or correct meta.json by hand`, { vid: req.vid });
    if (next.format === 'iso' && !next.readonly) throw new BadRequestError(`volume ${req.vid} is an ISO image, which is read-only`, { field: 'readonly' });
    // The export rules and the LUN's mode were decided on these: they change only when no one uses the volume.
    const inUseFlags = IN_USE_FLAGS.filter((key) => next[key] !== current[key]);
    if (inUseFlags.length) requireNotInUse(await fs.readdir(dir), current, `made ${inUseFlags.map((k) => `${k}: ${next[k]}`).join(', ')}`);
    faultPoint('update.before-meta');
    await writeMeta(dir, next);
    faultPoint('update.after-meta');
    return next;
  });
  ctx.log.info('volume updated', { vid: req.vid });
  return {
    vid: meta.volumeID,
    creatorID: meta.creatorID,
    name: meta.name,
    private: meta.private,
    readonly: meta.readonly,
    shareable: meta.shareable,
    bootable: meta.bootable,
    clonable: meta.clonable,
    alg: meta.alg,
    bus: meta.bus,
    labels: meta.labels,
  };
}

function assertDiskFormat(meta: VolumeMeta, action: string): asserts meta is VolumeMeta & { format: DiskFormat } {
  if (meta.format !== 'raw' && meta.format !== 'qcow2')
    throw new BadRequestError(`a volume of format ${meta.format} cannot be ${action}`, { field: 'vid' });
}

/** `update/resize`: grows a volume (never shrinks), within its root's quotas. */
export async function resizeVolume(ctx: StoreContext, req: { vid: string; creatorID: string; size: number }) {
  const newSize = gbToBytes(req.size);
  const record = await findVolume(ctx, req.vid, req.creatorID);
  const root = ctx.index.root(record.root);
  if (!root) throw new BadRequestError(`volume ${req.vid} is in a root that is not available`);
  await withOwnedVolume(ctx, req.vid, req.creatorID, 'resize', 'resize', async (dir, meta) => {
    if (meta.format !== 'rbd') assertDiskFormat(meta, 'resized');
    // A target's LUN keeps the size it was made with, and a hypervisor holding a qcow2 open
    // would write over the metadata a resize moves: unexport, resize, export again.
    requireNotInUse(await fs.readdir(dir), meta, 'resized');
    await requireNoOverlays(ctx, meta, 'resized');
    if (newSize < meta.size)
      throw new BadRequestError(`volumes only grow: ${req.vid} has ${meta.size} bytes, more than the ${newSize} asked`, { field: 'size' });
    if (newSize === meta.size) return;
    if (meta.format !== 'rbd') await requireImageWithin(ctx, dir, meta as VolumeMeta & { format: DiskFormat }, newSize);
    // A raw image only grows at its end (a download reads the old length); a qcow2's tables and an RBD image change in place.
    if (meta.format !== 'raw') ctx.locks.rewriteInPlace(dir, req.vid, 'resized');
    await ctx.placement.grow(root, dir, meta.size, newSize, async () => {
      const grown =
        meta.format === 'rbd'
          ? requireCeph(ctx).resize(await imageOf(dir, meta), newSize)
          : ctx.qemuImg.resize(path.join(dir, dataFileName(meta.format)), meta.format as DiskFormat, newSize);
      await grown.catch((err) => {
        throw translateErrno(err, `volume ${req.vid}`);
      });
      faultPoint('resize.after-image');
      await writeMeta(dir, { ...meta, size: newSize });
      faultPoint('resize.after-meta');
    });
  });
  ctx.log.info('volume resized', { vid: req.vid, size: newSize });
  return { vid: req.vid, creatorID: req.creatorID, size: req.size };
}

/**
 * An image an operator grew by hand (`qemu-img resize`) past meta.json's size is not shrunk back to
 * a size between the two: qemu-img refuses it (500 "qemu-img failed"), and a shrink would cut data.
 */
async function requireImageWithin(ctx: StoreContext, dir: string, meta: VolumeMeta & { format: DiskFormat }, newSize: number): Promise<void> {
  const name = dataFileName(meta.format);
  const file = path.join(dir, name);
  const held = meta.format === 'raw' ? (await fs.stat(file)).size : (await ctx.qemuImg.info(file, 'qcow2')).virtualSize;
  if (held > newSize)
    throw new ConflictError(
      `volume ${meta.volumeID}: ${name} holds ${held} bytes, more than the ${meta.size} of meta.json and the ${newSize} asked; volumes only grow: ask for ${held / BYTES_PER_GB} GB or more, or correct meta.json's size by hand`,
      { vid: meta.volumeID },
    );
}

/**
 * `update/convert`: rewrites the image in another format, keeping the data. Steps, each safe to
 * die after: convert into a temp file; rename it to `data.<new>`; meta.json names the new format
 * (the commit point); the old data file goes. recoverVolume finishes any of them.
 */
export async function convertVolume(
  ctx: StoreContext,
  req: { vid: string; creatorID: string; format: DiskFormat },
  opts: { onProgress?: (percent: number) => void; signal?: AbortSignal } = {},
) {
  await withOwnedVolume(ctx, req.vid, req.creatorID, 'convert', 'convert', async (dir, meta) => {
    assertDiskFormat(meta, 'converted');
    requireNotInUse(await fs.readdir(dir), meta, 'converted');
    await requireNoOverlays(ctx, meta, 'converted');
    if (meta.format === req.format) return;
    const oldData = path.join(dir, dataFileName(meta.format));
    // Under the lock no convert of ours is half done (recovery removed its leftovers): the file is an operator's.
    if ((await fs.readdir(dir)).includes(dataFileName(req.format)))
      throw new ConflictError(
        `volume ${req.vid} holds a ${dataFileName(req.format)} that its meta.json does not name (format ${meta.format}): move it out of the volume first, the convert would replace it`,
        { vid: req.vid },
      );
    if (meta.format === 'qcow2') await requireNoSnapshots(ctx, oldData, req.vid, 'converting');
    jobStarted();
    const newData = path.join(dir, dataFileName(req.format));
    await convertIntoPlace(ctx, 'convert', req.vid, { file: oldData, format: meta.format }, { file: newData, format: req.format }, opts);
    // convert reads through a linked clone's whole chain: the result stands alone, so `base` goes.
    const { base: _flattened, ...standalone } = meta;
    await writeMeta(dir, { ...standalone, format: req.format });
    faultPoint('convert.after-meta');
    // After the commit point the convert has happened: the old image goes, whichever way works.
    await ctx.purger.bin(oldData, path.dirname(dir)).catch(async (err) => {
      ctx.log.warn('old image not moved to the bin; removing it in place', { vid: req.vid, ...errorFields(err) });
      await fs.rm(oldData, { force: true });
    });
    faultPoint('convert.after-old-removed');
  });
  ctx.log.info('volume converted', { vid: req.vid, format: req.format });
  return { vid: req.vid, creatorID: req.creatorID, format: req.format };
}
