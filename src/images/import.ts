import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BadRequestError, NoRoomError } from '../errors.js';
import { faultPoint } from '../faults.js';
import { writeFlushed } from '../store/atomic.js';
import { sectors, tempNameFor } from '../store/layout.js';
import { writeMeta } from '../store/meta.js';
import type { DiskFormat } from '../tools/qemu-img.js';
import type { StoreContext } from '../volumes/context.js';
import { fillClaim, type Claimed } from '../volumes/create.js';
import { fillCephVolume, requireCeph } from '../volumes/ceph.js';
import { rbdFailure } from '../tools/rbd.js';
import type { StreamLimits } from './transfer.js';
import { assertIso9660, probeUntrusted } from './untrusted.js';

/** Where the bytes of a new volume come from: a stream written into a file, or a file already in the volume. */
export type ImageSource =
  | {
      kind: 'stream';
      /**
       * Called once, before the volume is claimed: how many bytes the source announces (a Content-Length, a
       * URL's answer headers), or undefined. `signal` aborts when the claim fails or the job is cancelled; a
       * source opened and then not read for another reason is ended by its idle timeout.
       */
      open(signal: AbortSignal): Promise<number | undefined>;
      writeTo(file: string, limits: StreamLimits): Promise<number>;
    }
  | { kind: 'file'; path: string };

export interface ImportOptions {
  /** Grow the image to at least this many bytes (`size` in the request). */
  sizeBytes?: number;
  signal?: AbortSignal;
  onProgress?: (percent: number, bytesDone?: number) => void;
  /** Extra files written (atomically) before the data is published, e.g. isoinfo.json. */
  beforePublish?: (claimed: Claimed) => Promise<void>;
}

/** Share of the progress bar given to the transfer; conversion takes the rest. */
const TRANSFER_SHARE = 90;

/** A volume of size 0 is refused by `create`: an empty image (a wrong path given to curl, an empty file) too. */
export function assertNotEmpty(bytes: number | undefined): void {
  if (bytes === 0) throw new BadRequestError('the image is empty (0 bytes)');
}

/**
 * Learns how many bytes `source` announces and claims the volume with `claim(announced)`, so that
 * placement picks a root that can hold them (not merely the one with the most free quota); a failed
 * claim ends the source (a download's connection).
 */
export async function claimForSource(source: ImageSource, claim: (announced: number | undefined) => Promise<Claimed>, signal?: AbortSignal): Promise<Claimed> {
  if (source.kind === 'file') return claim((await fs.stat(source.path)).size);
  const stop = new AbortController();
  try {
    const announced = await source.open(signal ? AbortSignal.any([signal, stop.signal]) : stop.signal);
    assertNotEmpty(announced);
    return await claim(announced);
  } catch (err) {
    stop.abort();
    throw err;
  }
}

/**
 * Makes the claim count `size` bytes against the quota: growing is decided under the root's lock
 * (placement.grow), shrinking a claim is always allowed. Caller holds the volume's create lock.
 */
export async function setClaimedSize(ctx: StoreContext, claimed: Claimed, size: number): Promise<void> {
  if (size === claimed.meta.size) return;
  const next = { ...claimed.meta, size };
  if (size > claimed.meta.size) await ctx.placement.grow(claimed.root, claimed.dir, claimed.meta.size, size, () => writeMeta(claimed.dir, next));
  else {
    await writeMeta(claimed.dir, next);
    await ctx.index.reloadDir(claimed.dir); // the quota use shown and decided on drops at once, not at the watcher's next event
  }
  claimed.meta = next;
}

/** How far ahead of the bytes received a stream of unannounced length claims room: one root lock per step, and at most this much room held unused from others. */
const RESERVE_STEP = 64 * 1024 * 1024;

/**
 * Grows the claim to cover `bytes` received, and a step ahead as far as the quota seems to allow (the
 * root's lock decides): bytes that counted only once the image was probed let concurrent unannounced
 * streams each fill the same free room (a review had three chunked uploads put 228 MB in a root of
 * 100 MB). Fails with 507 once the bytes themselves do not fit.
 */
async function reserveFor(ctx: StoreContext, claimed: Claimed, bytes: number): Promise<number> {
  const s = claimed.root.settings;
  const free = s.maxTotalSize === undefined ? Infinity : s.maxTotalSize - ctx.index.usage(claimed.root.path).bytes + claimed.meta.size;
  const ahead = Math.floor(Math.min(bytes + RESERVE_STEP, free, s.maxVolumeSize ?? Infinity) / 512) * 512;
  const exact = sectors(bytes);
  try {
    await setClaimedSize(ctx, claimed, Math.max(exact, ahead));
  } catch (err) {
    if (!(err instanceof NoRoomError) || ahead <= exact) throw err;
    await setClaimedSize(ctx, claimed, exact); // the usage read above was stale
  }
  return claimed.meta.size;
}

/** The most bytes a transfer into this claim may bring (the root's per-volume and total room). */
function roomFor(ctx: StoreContext, claimed: Claimed): number | undefined {
  const s = claimed.root.settings;
  const free = s.maxTotalSize === undefined ? undefined : s.maxTotalSize - ctx.index.usage(claimed.root.path).bytes + claimed.meta.size;
  const limits = [s.maxVolumeSize, free].filter((x): x is number => x !== undefined);
  // A qcow2 file may carry a little metadata beyond its virtual size: allow 1% + 16 MB of slack.
  return limits.length ? Math.floor(Math.min(...limits) * 1.01) + 16 * 1024 * 1024 : undefined;
}

/**
 * A staging directory inside the claimed volume (`.<purpose>.tmp-<op>/`, a temp name): incoming bytes are
 * written there, where the tree watcher does not look (it ignores temp names and so never watches the
 * directory), so a multi-GB write does not wake it for every chunk. Removed with the claim on failure.
 */
export async function makeStagingDir(claimed: Claimed, purpose: string): Promise<string> {
  const dir = tempNameFor(path.join(claimed.dir, purpose), claimed.lock.operationUid.slice(0, 12));
  await fs.mkdir(dir, { recursive: true });
  return dir;
}

/** Brings the source's bytes into a staging file inside the claimed directory; returns its path and size. */
async function receive(ctx: StoreContext, claimed: Claimed, source: ImageSource, opts: ImportOptions): Promise<{ file: string; bytes: number }> {
  if (source.kind === 'file') {
    const bytes = (await fs.stat(source.path)).size;
    assertNotEmpty(bytes);
    return { file: source.path, bytes };
  }
  const file = path.join(await makeStagingDir(claimed, 'incoming'), 'image');
  const writing = source.writeTo(file, {
    signal: opts.signal,
    maxBytes: roomFor(ctx, claimed),
    reserve: (bytes) => reserveFor(ctx, claimed, bytes),
    reserved: claimed.meta.size,
    onBytes: (done, total) => opts.onProgress?.(total ? (done / total) * TRANSFER_SHARE : 0, done),
  });
  // Into a raw volume, raw bytes are kept as they come (finishDisk): flushed as they arrive. Bytes
  // that will be converted are read once and dropped, so writing them to disk would be wasted.
  const bytes = claimed.meta.format === 'raw' ? await writeFlushed(file, writing) : await writing;
  assertNotEmpty(bytes);
  return { file, bytes };
}

/** A disk image from outside: probed as untrusted, converted to the volume's format, grown if asked. */
async function finishDisk(ctx: StoreContext, claimed: Claimed, incoming: string, tempData: string, opts: ImportOptions): Promise<void> {
  const info = await probeUntrusted(ctx.qemuImg, incoming);
  const finalSize = sectors(Math.max(info.virtualSize, opts.sizeBytes ?? 0));
  if (finalSize === 0) throw new BadRequestError("the image's virtual size is 0 bytes (send a size to grow it to)");
  await setClaimedSize(ctx, claimed, finalSize);
  const convertOpts = {
    signal: opts.signal,
    onProgress: (p: number) => opts.onProgress?.(TRANSFER_SHARE + (p * (100 - TRANSFER_SHARE)) / 100),
  };
  if (claimed.meta.format === 'rbd') {
    // rbd makes the image (its failures say which of pool or cluster is missing), qemu-img fills it
    // in the cluster; only the pointer lands in the tree.
    const rbd = requireCeph(ctx);
    return fillCephVolume(rbd, claimed, tempData, async (image) => {
      await rbd.create(image, finalSize);
      await ctx.qemuImg.convert(incoming, info.format, rbd.qemuUrl(image), 'raw', { ...convertOpts, existingTarget: true }).catch((err) => {
        throw rbdFailure(err) ?? err;
      });
    });
  }
  const format = claimed.meta.format as DiskFormat;
  if (info.format === 'raw' && format === 'raw') {
    // Raw into raw needs no rewrite: the bytes are the image (nothing in them is interpreted).
    await fs.rename(incoming, tempData);
  } else {
    await writeFlushed(tempData, ctx.qemuImg.convert(incoming, info.format, tempData, format, convertOpts));
    await fs.rm(incoming, { force: true });
  }
  // qemu reads a raw file's size rounded up to a whole sector: the file itself may still be shorter.
  const size = format === 'raw' ? (await fs.stat(tempData)).size : info.virtualSize;
  if (finalSize > size) await ctx.qemuImg.resize(tempData, format, finalSize);
}

/**
 * Fills a claimed volume from `source` and publishes it (fillClaim: on any failure the volume
 * directory, temp files included, is removed). Steps: receive into a temp file inside the volume;
 * check it (ISO 9660 signature, or qemu-img probe refusing backing/data files and extents); claim
 * the final size under the root's lock; convert/grow into the temp data file; rename into place.
 */
export async function fillFromSource(ctx: StoreContext, claimed: Claimed, source: ImageSource, opts: ImportOptions = {}): Promise<void> {
  await fillClaim(ctx, claimed, async (tempData) => {
    const { file, bytes } = await receive(ctx, claimed, source, opts);
    faultPoint('import.after-receive');
    if (claimed.meta.format === 'iso') {
      await assertIso9660(file);
      // An ISO's size is its own: the `size` asked only sized the first claim.
      await setClaimedSize(ctx, claimed, bytes);
      await fs.rename(file, tempData);
    } else {
      await finishDisk(ctx, claimed, file, tempData, opts);
    }
    faultPoint('import.after-convert');
    if (path.dirname(file) !== claimed.dir) await fs.rm(path.dirname(file), { recursive: true, force: true });
    await opts.beforePublish?.(claimed);
  });
  ctx.log.info('volume imported', { vid: claimed.uid, format: claimed.meta.format, size: claimed.meta.size });
}
