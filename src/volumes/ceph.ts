import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConflictError, NotSupportedError, UnavailableError } from '../errors.js';
import { writeFileAtomic } from '../store/atomic.js';
import { BrokenMetaError, readMeta, type VolumeMeta } from '../store/meta.js';
import { imageNameOf, pointerText, readPointer, RBD_POINTER_FILE } from '../store/rbd-pointer.js';
import { uidOfBinEntry } from '../store/layout.js';
import type { Rbd, RbdImage } from '../tools/rbd.js';
import type { StoreContext } from './context.js';
import { faultPoint } from '../faults.js';
import type { Claimed } from './create.js';

/**
 * Ceph volumes (SPEC §1, §5; seed 002's `ceph` field and `data.rbd`): the bytes are an RBD image in
 * the configured pool, the volume directory holds meta.json and the pointer `data.rbd` like any
 * other volume, so placement, quotas, locks, labels and the index treat it as one. The image is made
 * before its pointer is published and removed when the volume leaves the tree (the purge of its bin
 * entry), so a crash at any step leaves at most an image that the next purge or recovery removes.
 */

/** The host's Ceph pool, or a 501 saying how to configure one. */
export function requireCeph(ctx: StoreContext): Rbd {
  if (!ctx.rbd) throw new NotSupportedError('this storage host has no Ceph pool configured (ELEMENTO_CEPH_POOL)');
  return ctx.rbd;
}

/** The image a Ceph volume's pointer names (volume lock held or the volume read-only). */
export async function imageOf(dir: string, meta: VolumeMeta): Promise<RbdImage> {
  const pointer = await readPointer(path.join(dir, RBD_POINTER_FILE), meta.volumeID).catch((err: Error) => {
    throw new ConflictError(`volume ${meta.volumeID} is broken: ${err.message}`, { vid: meta.volumeID });
  });
  if (!pointer) throw new ConflictError(`volume ${meta.volumeID} is broken: ${RBD_POINTER_FILE} is missing`, { vid: meta.volumeID });
  return pointer;
}

/**
 * Refuses (409) to act on a Ceph volume whose image a client has open: a hypervisor may open it
 * directly (info shows it), and the daemon sees it only as a watcher. For what would change or copy
 * bytes under a running VM (destroy, a snapshot revert, a clone of a writable volume).
 */
export async function requireImageUnused(ctx: StoreContext, dir: string, meta: VolumeMeta, action: string): Promise<void> {
  if (meta.format !== 'rbd' || !ctx.rbd) return;
  if (await ctx.rbd.inUse(await imageOf(dir, meta)))
    throw new ConflictError(`volume ${meta.volumeID} is open by a client of its Ceph image and cannot be ${action}`, { vid: meta.volumeID });
}

/**
 * What destroy checks of a Ceph volume's image: no client has it open, and no snapshot of it is
 * protected (an operator's `rbd snap protect`, usually for clones of it): the purge could not remove it.
 */
export async function requireImageRemovable(ctx: StoreContext, dir: string, meta: VolumeMeta): Promise<void> {
  await requireImageUnused(ctx, dir, meta, 'destroyed');
  if (meta.format !== 'rbd' || !ctx.rbd) return;
  const guarded = await ctx.rbd.protectedSnapshots(await imageOf(dir, meta));
  if (guarded.length)
    throw new ConflictError(`volume ${meta.volumeID} has a protected RBD snapshot (${guarded.join(', ')}: rbd snap unprotect) and cannot be destroyed`, { vid: meta.volumeID });
}

/**
 * Fills a claimed Ceph volume: `make` creates the image named after the volume, then its pointer is
 * written to `temp` (fillClaim publishes it as data.rbd). An image made before a failure is removed by
 * the purge of the abandoned claim (cephImageReleaser), once: a second try here would double the wait
 * on a cluster that does not answer.
 */
export async function fillCephVolume(rbd: Rbd, claimed: Claimed, temp: string, make: (image: RbdImage) => Promise<void>): Promise<void> {
  const image = { pool: rbd.target.pool, image: imageNameOf(claimed.uid) };
  await make(image);
  faultPoint('ceph.after-image');
  await writeFileAtomic(temp, pointerText(image));
}

/** meta.json's fields of a new Ceph volume: its format, and the pool its image is made in (kept for the purge). */
export function cephFields(rbd: Rbd): { format: 'rbd'; ceph: true; ceph_pool: string } {
  return { format: 'rbd', ceph: true, ceph_pool: rbd.target.pool };
}

/**
 * The images a volume directory leaving the tree (a bin entry) may still hold in the cluster. Only
 * ever the one named after the entry's own volume, `elemento-<uid>`, whatever its files say: in the
 * pool its valid pointer names and in the one meta.json recorded at its claim (a pointer edited to
 * another pool must not leak the image its create made), else this host's.
 */
async function leftImages(entry: string, pool: string | undefined): Promise<RbdImage[]> {
  const uid = uidOfBinEntry(path.basename(entry));
  if (!uid || !(await fs.stat(entry)).isDirectory()) return [];
  const pointer = await readPointer(path.join(entry, RBD_POINTER_FILE), uid).catch(() => null);
  const meta = await readMeta(entry, uid).catch((err) => {
    if (err instanceof BrokenMetaError) return null;
    throw err;
  });
  const files = await fs.readdir(entry);
  if (!pointer && !meta?.ceph && meta?.format !== 'rbd' && !files.includes(RBD_POINTER_FILE)) return [];
  const recorded = typeof meta?.ceph_pool === 'string' ? meta.ceph_pool : undefined;
  const pools = new Set([pointer?.pool, recorded].filter((p): p is string => Boolean(p)));
  if (!pools.size && pool) pools.add(pool);
  if (!pools.size) throw new NotSupportedError(`${entry} is a Ceph volume but no Ceph pool is known to remove its image from`);
  return [...pools].map((from) => ({ pool: from, image: imageNameOf(uid) }));
}

/** How long the purge leaves the cluster alone after it did not answer. */
const CLUSTER_PAUSE_MS = 30_000;

/**
 * The Purger's release step: removes the RBD images of a bin entry before the entry itself is
 * removed. Throws when the cluster cannot be reached: the entry then stays in the bin for the next
 * try. Once the cluster did not answer, the next entries fail at once for a while instead of each
 * waiting out rbd's timeout, with every purge queued behind them (a file volume's freed space too).
 */
export function cephImageReleaser(rbd: Rbd | null, pauseMs = CLUSTER_PAUSE_MS): (entry: string) => Promise<void> {
  let down: { until: number; err: UnavailableError } | null = null;
  return async (entry) => {
    const images = await leftImages(entry, rbd?.target.pool);
    if (images.length && down && Date.now() < down.until) throw down.err;
    for (const image of images) {
      if (!rbd) throw new NotSupportedError(`${entry} holds the RBD image ${image.pool}/${image.image} but no Ceph cluster is configured`);
      await rbd.remove(image).catch((err) => {
        if (err instanceof UnavailableError) down = { until: Date.now() + pauseMs, err };
        throw err;
      });
    }
  };
}
