import { promises as fs } from 'node:fs';
import path from 'node:path';
import { currentClient } from '../auth/principal.js';
import { BadRequestError, ConflictError, ForbiddenError, NotFoundError } from '../errors.js';
import { flushFile, writeFileAtomic, writeFlushed } from '../store/atomic.js';
import { BYTES_PER_GB, dataFileName } from '../store/layout.js';
import type { VolumeFields, VolumeMeta } from '../store/meta.js';
import { canReflink } from '../store/reflink.js';
import { FileCopier, type CopyAlg } from '../tools/file-copy.js';
import type { DiskFormat } from '../tools/qemu-img.js';
import { QemuImgLayers } from '../tools/qemu-img-layers.js';
import { MAX_LABELS } from '../schemas.js';
import { canSee, findVolume, readLockedMeta, requireNotInUse } from './access.js';
import type { Caller, StoreContext } from './context.js';
import { claimVolume, createResponse, fillClaim, type Claimed } from './create.js';
import { cephFields, fillCephVolume, imageOf, requireCeph, requireImageUnused } from './ceph.js';

/** The body of `clone` (schemas/clone.json): the source, and the requester who will own the copy. */
export type CloneRequest = {
  volume_id: string;
  creatorID: string;
  name?: string;
  alg?: CopyAlg | 'overlay';
  private?: boolean;
  labels?: Record<string, string>;
  async?: boolean;
};

export interface OperationOptions {
  signal?: AbortSignal;
  onProgress?: (percent: number) => void;
}

/** Files beside the data that describe it and travel with a copy (SPEC §3: an ISO volume's isoinfo.json). */
const SIDE_FILES = ['isoinfo.json'];

/** A volume's data file. */
function dataOf(dir: string, meta: VolumeMeta): string {
  return path.join(dir, dataFileName(meta.format));
}

/** The backing file of an overlay in `overlayDir`, named relative to it (the tree stays movable). */
function backingPath(overlayDir: string, base: { dir: string; meta: VolumeMeta }): { relative: string; format: DiskFormat } {
  return { relative: path.relative(overlayDir, dataOf(base.dir, base.meta)), format: base.meta.format as DiskFormat };
}

/** A base as the index knows it (its data does not change while it has overlays). */
function knownBase(ctx: StoreContext, uid: string): { dir: string; meta: VolumeMeta } {
  const base = ctx.index.get(uid);
  if (!base?.meta) throw new ConflictError(`the base volume ${uid} of this linked clone is missing`, { vid: uid });
  return { dir: base.dir, meta: base.meta };
}

/**
 * The new volume's meta.json: the source's description (labels included), owned by the requester,
 * with the request's name and privacy when given. `alg` stays the source's: it says how the new
 * volume is cloned in turn. A linked clone (and a copy of one) names its `base`.
 */
function cloneFields(source: VolumeMeta, req: CloneRequest, owner: string, alg: CopyAlg | 'overlay'): Omit<VolumeFields, 'volumeID'> & Record<string, unknown> {
  const base = alg === 'overlay' ? source.volumeID : (source.base as string | undefined);
  return {
    creatorID: owner,
    name: req.name ?? source.name,
    size: source.size,
    format: alg === 'overlay' ? 'qcow2' : source.format,
    private: req.private ?? source.private,
    bootable: source.bootable,
    readonly: source.readonly,
    shareable: source.shareable,
    clonable: source.clonable,
    alg: source.alg,
    bus: source.bus,
    cloudinit: source.cloudinit,
    ceph: false,
    labels: { ...source.labels, ...(req.labels ?? {}) },
    ...(source.iso_type !== undefined ? { iso_type: source.iso_type } : {}),
    ...(base ? { base } : {}),
  };
}

/**
 * A copy of a linked clone is pointed at its base's data file (qemu-img rebase -u), trusting meta.json's
 * `base`: when an operator rebased the image onto another file by hand, the copy read another base's bytes
 * than its source, silently. Refused before anything is claimed.
 */
async function requireBackingIsBase(ctx: StoreContext, dir: string, source: VolumeMeta): Promise<void> {
  const base = knownBase(ctx, source.base as string);
  const { backingFilename } = await ctx.qemuImg.info(dataOf(dir, source), 'qcow2');
  if (!backingFilename || path.resolve(dir, backingFilename) !== path.resolve(dataOf(base.dir, base.meta)))
    throw new ConflictError(
      `volume ${source.volumeID} is a linked clone of ${source.base} (its meta.json's base), but its image reads through ${backingFilename ? 'another file' : 'nothing'}: its backing file was changed by hand; correct meta.json's base or the image before cloning it`,
      { vid: source.volumeID },
    );
}

/** What may be cloned, and how: refusals come before anything is claimed. */
function checkClonable(source: VolumeMeta, files: string[], alg: CopyAlg | 'overlay'): void {
  const vid = source.volumeID;
  if (!source.clonable) throw new ForbiddenError(`volume ${vid} is not clonable`, { vid });
  if (source.format === 'rbd' && alg !== 'cp')
    throw new BadRequestError(`a Ceph volume is cloned inside its cluster (alg cp, an rbd cp), not with ${alg}`, { field: 'alg' });
  // A cloud image (cloudinit/create) is a template like any other; a seed ISO's files are one VM's.
  if (source.cloudinit && source.format === 'iso')
    throw new BadRequestError('a cloud-init seed volume cannot be cloned: its files are for one VM; send a new set with cloudinit/metadata', { field: 'volume_id' });
  if (alg === 'overlay' && source.format !== 'raw' && source.format !== 'qcow2')
    throw new BadRequestError(`a linked clone needs a raw or qcow2 base, not ${source.format}`, { field: 'alg' });
  // A writer could change the image mid-copy: only a volume nobody writes gives a consistent copy.
  if (!source.readonly) requireNotInUse(files, source, 'cloned while writable');
}

/**
 * `clone`: a new volume owned by the requester, with the source's data. The source's lock is held
 * (purpose `clone`) from the check to the end of the copy, so no other operation changes it
 * meanwhile; the new volume is claimed like a create (quotas, `create` marker, removed on failure
 * or cancel), in the source's root when a reflink or a linked clone is possible there.
 */
export async function cloneVolume(ctx: StoreContext, req: CloneRequest, caller: Caller, opts: OperationOptions = {}) {
  const found = await findVolume(ctx, req.volume_id, caller);
  const copier = new FileCopier(ctx.runner, ctx.config.toolTimeoutMs);
  const claimed = await ctx.locks.withVolumeLock(found.dir, 'clone', found.uid, async () => {
    const source = await readLockedMeta(found.dir, found.uid);
    if (!canSee(source, caller)) throw new NotFoundError(`volume ${found.uid} does not exist`, { vid: found.uid });
    // The request's alg (schemas/clone.json never lets 'no' through), else the source's meta.json says
    // how; a Ceph volume has one way only (rbd cp), whatever alg it was given.
    const alg = req.alg ?? (source.alg === 'no' || source.format === 'rbd' ? 'cp' : source.alg);
    checkClonable(source, await fs.readdir(found.dir), alg);
    if (alg !== 'overlay' && source.format === 'qcow2' && source.base) await requireBackingIsBase(ctx, found.dir, source);
    // A linked clone pins its base (its owner can no longer destroy, resize, convert, snapshot or export it
    // writable): a tenant (client token) may pin another client's volume only when it is read-only, a template.
    const tenant = currentClient();
    if (alg === 'overlay' && tenant !== null && source.creatorID !== tenant && !source.readonly)
      throw new ForbiddenError(
        `volume ${found.uid} belongs to another client and is not read-only: a linked clone would keep its owner from destroying, resizing or converting it (clone it with alg cp)`,
        { vid: found.uid, field: 'alg' },
      );
    if (!source.readonly) await requireImageUnused(ctx, found.dir, source, 'cloned while writable');
    const rbd = source.format === 'rbd' ? requireCeph(ctx) : null;
    if (!rbd && alg !== 'overlay') copier.requireTool(alg);
    const reflink = !rbd && alg === 'cp' && (await canReflink(found.dir));
    const sameRoot = alg === 'overlay' || reflink;
    // The requester owns the copy: the caller a token names, else the body's creatorID (an admin may clone for anyone).
    const fields = { ...cloneFields(source, req, caller ?? req.creatorID, alg), ...(rbd ? cephFields(rbd) : {}) };
    const labels = Object.keys(fields.labels ?? {}).length;
    if (labels > MAX_LABELS)
      throw new BadRequestError(`the clone would carry ${labels} labels (the source's and the request's), more than the ${MAX_LABELS} a volume may have`, { field: 'labels' });
    const claim = await claimVolume(ctx, fields, 'create', sameRoot ? found.root : undefined);
    await fillClaim(ctx, claim, (temp) => fillClone(ctx, copier, { dir: found.dir, meta: source }, claim, alg, temp, { ...opts, reflink }));
    return claim;
  });
  ctx.log.info('volume cloned', { vid: claimed.uid, source: found.uid, root: claimed.root.path, base: claimed.meta.base });
  // create's answer echoes the GB asked; a clone's are the source's bytes in GB, to the kB (sizes are rounded up to 512 bytes).
  return createResponse(claimed.meta, Math.round(claimed.meta.size / 1000) / (BYTES_PER_GB / 1000));
}

/** Writes the clone's data into `temp` (in the new volume's directory). */
async function fillClone(
  ctx: StoreContext,
  copier: FileCopier,
  source: { dir: string; meta: VolumeMeta },
  claim: Claimed,
  alg: CopyAlg | 'overlay',
  temp: string,
  opts: OperationOptions & { reflink: boolean },
): Promise<void> {
  const layers = new QemuImgLayers(ctx.runner, ctx.config.toolTimeoutMs);
  if (source.meta.format === 'rbd') {
    const rbd = requireCeph(ctx);
    const from = await imageOf(source.dir, source.meta);
    // The copy lives in the cluster: only its pointer is in the tree (fillCephVolume writes and flushes it).
    return fillCephVolume(rbd, claim, temp, (image) => rbd.copy(from, image, opts.signal));
  }
  if (alg === 'overlay') {
    const backing = backingPath(claim.dir, source);
    await layers.createOverlay(temp, backing.relative, backing.format);
  } else {
    const { reflinked } = await writeFlushed(temp, copier.copy(alg, dataOf(source.dir, source.meta), temp, opts));
    ctx.log.debug('clone data copied', { vid: claim.uid, alg, reflinked });
    for (const name of SIDE_FILES) {
      const content = await fs.readFile(path.join(source.dir, name)).catch(() => null);
      if (content !== null) await writeFileAtomic(path.join(claim.dir, name), content);
    }
    // A clone carries the source's bytes as they are now, not its owner's past: its internal snapshots stay behind.
    // (qemu-img deletes by name, and names made by hand may repeat: listed again after each.)
    if (claim.meta.format === 'qcow2')
      for (let left = await layers.snapshots(temp); left.length; left = await layers.snapshots(temp)) await layers.deleteSnapshot(temp, left[0].name);
    // A copy of a linked clone reads through to the same base: name it from the new directory.
    if (claim.meta.base) {
      const backing = backingPath(claim.dir, knownBase(ctx, claim.meta.base as string));
      await layers.renameBacking(temp, backing.relative, backing.format);
    }
  }
  // fillClaim's rename publishes the image: its bytes must be on disk first (a reflink flushes metadata only).
  await flushFile(temp);
}
