import { constants as fsConstants, promises as fs } from 'node:fs';
import path from 'node:path';
import { ConflictError, ForbiddenError, NotFoundError } from '../errors.js';
import { dataFileName } from '../store/layout.js';
import { QemuImgLayers } from '../tools/qemu-img-layers.js';
import { BrokenMetaError, readMeta, type VolumeMeta } from '../store/meta.js';
import { EXPORT_MARKER_RE, isCreating, unavailableError, type VolumeRecord } from '../store/volume-record.js';
import type { Caller, StoreContext } from './context.js';
import { unknownVolumes } from './unknown-volumes.js';

/** SPEC §2: a client sees its own volumes and every non-private one; the controller sees all. */
export function canSee(meta: VolumeMeta, caller: Caller): boolean {
  return caller === null || meta.creatorID === caller || !meta.private;
}

/**
 * The volume `uid` as `caller` may know it: 404 when unknown or private to someone else (a private
 * volume is invisible, not forbidden), 409 while it is being created, when its meta.json is broken, or
 * when it is in several roots (naming each copy); 503 while its root is unavailable. A volume the index
 * does not know yet (made through another daemon sharing the tree) is looked for on disk.
 */
export async function findVolume(ctx: StoreContext, uid: string, caller: Caller): Promise<VolumeRecord & { meta: VolumeMeta }> {
  let record = await ctx.index.lookup(uid);
  // Broken as the index last read it: read again before saying so. A meta.json rewritten in place by hand (an editor,
  // `echo >`) is empty for a moment, and a watcher's reload that read it then kept the volume broken until the next event.
  if (record && !record.copies && !record.unavailable && !isCreating(record) && (!record.meta || record.problem)) record = (await ctx.index.reloadDir(record.dir)) ?? undefined;
  if (record?.copies) throw new ConflictError(record.problem!, { vid: uid, dirs: record.copies });
  if (!record || (record.meta && !canSee(record.meta, caller))) throw new NotFoundError(`volume ${uid} does not exist`, { vid: uid });
  if (record.unavailable) throw unavailableError(record);
  if (isCreating(record)) throw new ConflictError(`volume ${uid} is still being created`, { vid: uid });
  if (!record.meta || record.problem) throw new ConflictError(`volume ${uid} is broken: ${record.problem}`, { vid: uid });
  return record as VolumeRecord & { meta: VolumeMeta };
}

/** Only the creator (or the controller/an admin) may change or destroy a volume. */
export function requireOwner(meta: VolumeMeta, caller: Caller, action: string): void {
  if (caller !== null && meta.creatorID !== caller)
    throw new ForbiddenError(`only the creator of volume ${meta.volumeID} may ${action} it`, { vid: meta.volumeID });
}

/**
 * Under the volume's lock, before its files are written or read through: the directory and its data
 * file are themselves, not links (the index refuses links when it reads a volume; this closes the moment
 * between a link swapped in by hand and the watcher seeing it).
 */
export async function requireNoLinks(dir: string, meta: VolumeMeta): Promise<void> {
  for (const file of [dir, path.join(dir, dataFileName(meta.format))]) {
    const st = await fs.lstat(file).catch(() => null);
    if (st?.isSymbolicLink())
      throw new ConflictError(`volume ${meta.volumeID} is broken: ${path.basename(file)} is a symbolic link, which the daemon never follows`, { vid: meta.volumeID });
  }
}

/** The first bytes of every qcow2 image (QEMU's docs/interop/qcow2.txt). */
const QCOW2_MAGIC = Buffer.from('QFI\xfb', 'latin1');

/**
 * Under the volume's lock: a data.qcow2 is a qcow2 image. qemu-img is always told the format meta.json
 * names (never left to probe), so a file that lies (an operator's raw image renamed data.qcow2) made every
 * operation fail in qemu-img with a 500 that named nothing. A raw volume's bytes are the guest's and may
 * be anything, a qcow2 header included: nothing is checked for it.
 */
export async function requireImageOfItsFormat(dir: string, meta: VolumeMeta): Promise<void> {
  if (meta.format !== 'qcow2') return;
  const name = dataFileName(meta.format);
  const handle = await fs.open(path.join(dir, name), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW).catch(() => null);
  if (!handle) return;
  try {
    const { bytesRead, buffer } = await handle.read(Buffer.alloc(4), 0, 4, 0);
    if (bytesRead < 4 || !buffer.equals(QCOW2_MAGIC))
      throw new ConflictError(`volume ${meta.volumeID} is broken: ${name} is not a qcow2 image, as its name and meta.json's format say: correct one or the other by hand`, { vid: meta.volumeID });
  } finally {
    await handle.close();
  }
}

/**
 * A volume's meta.json read afresh (under its lock, or by a download), once its directory and data file
 * are known not to be links. One broken or gone since the index read it (a hand edit the watcher has not
 * reported yet) is 409 naming why, as findVolume answers once the index knows.
 */
export async function readLockedMeta(dir: string, vid: string): Promise<VolumeMeta> {
  const meta = await readMeta(dir, vid).catch(async (err) => {
    if (!(err instanceof BrokenMetaError)) throw err;
    // Gone altogether (destroyed since a download, which takes no lock, looked it up): unknown, not broken.
    if (!(await fs.lstat(dir).catch(() => null))) throw new NotFoundError(`volume ${vid} does not exist`, { vid });
    throw new ConflictError(`volume ${vid} is broken: ${err.message}`, { vid });
  });
  await requireNoLinks(dir, meta);
  await requireImageOfItsFormat(dir, meta);
  return meta;
}

/** The owner check again on meta.json read under the volume's lock: 404 if it became private to another, 403 if no longer the caller's. */
export function requireOwnedAfresh(meta: VolumeMeta, caller: Caller, action: string): VolumeMeta {
  if (!canSee(meta, caller)) throw new NotFoundError(`volume ${meta.volumeID} does not exist`, { vid: meta.volumeID });
  requireOwner(meta, caller, action);
  return meta;
}

/** qemu-img convert does not carry internal snapshots over: an operation that rewrites the image refuses rather than lose them. */
export async function requireNoSnapshots(ctx: StoreContext, data: string, vid: string, doing: string): Promise<void> {
  if ((await new QemuImgLayers(ctx.runner, ctx.config.toolTimeoutMs).snapshots(data)).length)
    throw new ConflictError(`volume ${vid} has snapshots, which ${doing} would lose: delete them first`, { vid });
}

/** Refuses an operation that must not run while the volume is in use by a hypervisor. */
export function requireNotInUse(files: string[], meta: VolumeMeta, action: string): void {
  const exported = files.filter((f) => EXPORT_MARKER_RE.test(f));
  if (exported.length) throw new ConflictError(`volume ${meta.volumeID} is exported and cannot be ${action}`, { vid: meta.volumeID });
  const attachments = (meta.attachments as unknown[] | undefined) ?? [];
  if (attachments.length) throw new ConflictError(`volume ${meta.volumeID} is attached to a VM and cannot be ${action}`, { vid: meta.volumeID });
}

/**
 * Volumes whose meta.json names `uid` as their `base` (linked clones reading through to it): those the
 * index knows, and any volume directory of a root it has not read with its meta.json yet (one another
 * daemon sharing the tree made a moment ago, before this daemon's watcher or rescan saw it). Called
 * under the base's lock, which a linked clone of it holds until its meta.json is written.
 */
export async function overlaysOf(ctx: StoreContext, uid: string): Promise<string[]> {
  const found = new Set<string>();
  for (const r of ctx.index.all()) if (r.meta?.base === uid) found.add(r.uid);
  for (const root of ctx.index.rootList()) for (const other of await unknownVolumes(ctx, root.path)) if (other.base === uid && other.uid !== uid) found.add(other.uid);
  return [...found].sort();
}

/** A base with overlays cannot be destroyed or have its data changed: its overlays read through to it. */
export async function requireNoOverlays(ctx: StoreContext, meta: VolumeMeta, action: string): Promise<void> {
  const overlays = await overlaysOf(ctx, meta.volumeID);
  if (overlays.length)
    throw new ConflictError(`volume ${meta.volumeID} is the base of ${overlays.length} linked clone(s) and cannot be ${action}`, { vid: meta.volumeID, overlays });
}
