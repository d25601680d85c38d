import { promises as fs } from 'node:fs';
import path from 'node:path';
import fse from 'fs-extra';
import { BadRequestError, translateErrno } from '../errors.js';
import { flushFile, renameDurable } from '../store/atomic.js';
import { dataFileName, gbToBytes, newUid, tempNameFor, volumeDirName } from '../store/layout.js';
import type { LockHandle } from '../store/locks.js';
import { writeMeta, type VolumeFields, type VolumeMeta } from '../store/meta.js';
import { moveToBin } from '../store/recovery.js';
import type { Root } from '../store/roots.js';
import type { DiskFormat } from '../tools/qemu-img.js';
import type { StoreContext } from './context.js';
import { faultPoint } from '../faults.js';
import { jobStarted } from '../jobs/registry.js';
import { cephFields, fillCephVolume, requireCeph } from './ceph.js';

/** The body of `create` after schema defaults (schemas/create.json). */
export interface CreateRequest {
  creatorID: string;
  name?: string;
  size: number;
  format: DiskFormat;
  private: boolean;
  readonly: boolean;
  shareable: boolean;
  bootable: boolean;
  clonable: boolean;
  alg: VolumeMeta['alg'];
  bus: VolumeMeta['bus'];
  labels?: Record<string, string>;
  /** An RBD image in the host's Ceph pool (src/volumes/ceph.ts). */
  ceph?: boolean;
}

/** A volume claimed in a root: its directory exists, meta.json written, lock held. */
export interface Claimed {
  root: Root;
  uid: string;
  dir: string;
  meta: VolumeMeta;
  lock: LockHandle;
}

/** SPEC §3: a volume cannot be both bootable and shareable. */
export function assertConsistent(meta: Pick<VolumeMeta, 'bootable' | 'shareable'>): void {
  if (meta.bootable && meta.shareable) throw new BadRequestError('a volume cannot be both bootable and shareable', { field: 'shareable' });
}

/**
 * Claims a new volume directory in the best root with room: under the root's lock, `mkdir` (never
 * shared by two creates), then the volume's lock with purpose `purpose`, then meta.json, so the
 * volume counts against the quota before the root lock is let go.
 */
export async function claimVolume(
  ctx: StoreContext,
  fields: Omit<VolumeFields, 'volumeID'> & { [extra: string]: unknown },
  purpose: string,
  preferredRoot?: string,
): Promise<Claimed> {
  const claimed = await ctx.placement.claim(
    fields.size,
    async (root) => {
      const uid = newUid();
      const dir = path.join(root.path, volumeDirName(uid));
      await fs.mkdir(dir);
      faultPoint('create.after-mkdir');
      let lock: LockHandle | undefined;
      try {
        lock = await ctx.locks.acquireVolume(dir, purpose, uid);
        const meta: VolumeMeta = { volumeID: uid, ...fields, creatorID: fields.creatorID.toLowerCase() };
        await writeMeta(dir, meta);
        faultPoint('create.after-meta');
        return { root, uid, dir, meta, lock };
      } catch (err) {
        await lock?.release();
        await fse.remove(dir);
        throw translateErrno(err, 'the new volume');
      }
    },
    preferredRoot,
  );
  jobStarted(claimed.uid); // the quotas said yes: a job making this volume has started
  return claimed;
}

/** Publishes a claimed volume's data: the temp image is renamed to `data.<ext>` (the commit point). */
export async function publishData(claimed: Claimed, tempData: string): Promise<void> {
  await renameDurable(tempData, path.join(claimed.dir, dataFileName(claimed.meta.format)));
}

/**
 * Undoes a claim whose filling failed: the directory leaves the root in one rename, then is purged.
 * The lock goes before the purge: its mutex left with the directory, and a purge slower than the
 * mutex's refresh (a large file, a Ceph cluster that does not answer) would have it found lost.
 */
export async function abandonClaim(ctx: StoreContext, claimed: Claimed): Promise<void> {
  let binned: string;
  try {
    binned = await moveToBin(claimed.dir, claimed.lock.operationUid);
  } finally {
    await claimed.lock.release();
    ctx.index.forget(claimed.uid);
  }
  await ctx.purger.now(binned);
}

/** Runs `fill` on a claimed volume; on success publishes it, on failure removes every trace. */
export async function fillClaim(ctx: StoreContext, claimed: Claimed, fill: (tempData: string) => Promise<void>): Promise<void> {
  const tempData = tempNameFor(path.join(claimed.dir, dataFileName(claimed.meta.format)), claimed.lock.operationUid.slice(0, 12));
  try {
    await fill(tempData);
    await flushFile(tempData);
    faultPoint('create.after-temp-image');
    await publishData(claimed, tempData);
    faultPoint('create.after-publish');
  } catch (err) {
    ctx.log.warn('volume creation failed; removing it', { vid: claimed.uid, error: (err as Error).message });
    await abandonClaim(ctx, claimed);
    throw translateErrno(err, 'the new volume');
  }
  await claimed.lock.release();
  await ctx.index.reloadDir(claimed.dir);
}

/** Makes a blank image; on a `file-system: unique` root it carries its own ext4 filesystem. */
async function makeBlankImage(ctx: StoreContext, file: string, format: DiskFormat, sizeBytes: number, root: Root): Promise<void> {
  if (root.settings.fileSystem !== 'unique') return ctx.blankImages.create(file, format, sizeBytes, root.path);
  const raw = format === 'raw' ? file : tempNameFor(file);
  try {
    await ctx.qemuImg.create(raw, 'raw', sizeBytes);
    await ctx.runner.run('mkfs.ext4', ['-F', '-q', raw], { timeoutMs: ctx.config.toolTimeoutMs });
    if (format !== 'raw') await ctx.qemuImg.convert(raw, 'raw', file, format);
  } finally {
    if (raw !== file) await fs.rm(raw, { force: true });
  }
}

/** meta.json's fields for a new volume from a create-like body (`format` and `cloudinit` may be overridden). */
export function fieldsOf(
  req: Omit<CreateRequest, 'size' | 'format'> & { format: VolumeMeta['format'] },
  size: number,
  extra: { cloudinit?: boolean } = {},
): Omit<VolumeFields, 'volumeID'> {
  return {
    creatorID: req.creatorID,
    name: req.name ?? '',
    size,
    format: req.format,
    private: req.private,
    bootable: req.bootable,
    readonly: req.readonly,
    shareable: req.shareable,
    clonable: req.clonable,
    alg: req.alg,
    bus: req.bus,
    cloudinit: extra.cloudinit ?? false,
    ceph: false,
    labels: req.labels ?? {},
  };
}

/** `create`: a blank raw or qcow2 volume, or with `ceph` an RBD image. Answers the seed's create shape. */
export async function createVolume(ctx: StoreContext, req: CreateRequest): Promise<Record<string, unknown>> {
  assertConsistent(req);
  const size = gbToBytes(req.size);
  if (req.ceph) {
    // An RBD image is raw bytes: the `format` asked (the seed's clients always send one) has no say.
    const rbd = requireCeph(ctx);
    const claimed = await claimVolume(ctx, { ...fieldsOf({ ...req, format: 'rbd' }, size), ...cephFields(rbd) }, 'create');
    await fillClaim(ctx, claimed, (temp) => fillCephVolume(rbd, claimed, temp, (image) => rbd.create(image, size)));
    ctx.log.info('Ceph volume created', { vid: claimed.uid, root: claimed.root.path, pool: rbd.target.pool, size });
    return createResponse(claimed.meta, req.size);
  }
  const claimed = await claimVolume(ctx, fieldsOf(req, size), 'create');
  await fillClaim(ctx, claimed, (temp) => makeBlankImage(ctx, temp, req.format, size, claimed.root));
  ctx.log.info('volume created', { vid: claimed.uid, root: claimed.root.path, format: req.format, size });
  return createResponse(claimed.meta, req.size);
}

/** The seed's answer to `create` (size as asked, in GB; `img_format`; the new `vid`). */
export function createResponse(meta: VolumeMeta, sizeGB: number): Record<string, unknown> {
  return {
    alg: meta.alg,
    bootable: meta.bootable,
    bus: meta.bus,
    clonable: meta.clonable,
    creatorID: meta.creatorID,
    img_format: meta.format,
    name: meta.name,
    private: meta.private,
    readonly: meta.readonly,
    shareable: meta.shareable,
    size: sizeGB,
    vid: meta.volumeID,
    labels: meta.labels,
  };
}
