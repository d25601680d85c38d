import { constants as fsConstants, promises as fs } from 'node:fs';
import path from 'node:path';
import { checkDocument } from '../schemas.js';
import { writeJsonAtomic } from './atomic.js';
import { asyncReader, parseTreeJson, type TreeReader } from './tree-reader.js';
import { dataFileName, META_FILE, type VolumeFormat } from './layout.js';

/** meta.json (SPEC §3), field names as the seed writes them. */
export interface VolumeFields {
  volumeID: string;
  creatorID: string;
  name: string;
  /** Virtual size in bytes. */
  size: number;
  format: VolumeFormat;
  private: boolean;
  bootable: boolean;
  readonly: boolean;
  shareable: boolean;
  clonable: boolean;
  alg: 'cp' | 'rclone' | 'rsync' | 'no';
  bus: 'virtio' | 'scsi' | 'sata' | 'ide';
  cloudinit: boolean;
  ceph: boolean;
  labels: Record<string, string>;
}

/** meta.json as read: anything else an operator or a later version wrote is kept as it was. */
export type VolumeMeta = VolumeFields & { [extra: string]: unknown };

/** Why a file or directory of a volume that is a symbolic link makes it broken. */
export const LINK_REFUSED = 'is a symbolic link: the daemon never follows one out of its tree';

/** A meta.json that cannot be used: the volume is listed as broken with this reason, never rewritten. */
export class BrokenMetaError extends Error {}

/** The virtual size of an image read from its own bytes, for hand-made meta.json without `size`. */
async function sizeFromImage(file: string, format: VolumeFormat): Promise<number> {
  // data.rbd is a pointer: the image's size is in the cluster, which a scan never asks.
  if (format === 'rbd') throw new BrokenMetaError('meta.json of a Ceph volume must give its size');
  // lstat and O_NOFOLLOW: a data file that is a symbolic link is not read (loadVolumeRecord marks it broken).
  const st = await fs.lstat(file);
  if (!st.isFile()) throw new BrokenMetaError(`meta.json has no size and ${path.basename(file)} is not a plain file`);
  if (format !== 'qcow2') return st.size;
  const handle = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    const header = Buffer.alloc(32);
    await handle.read(header, 0, 32, 0);
    if (header.readUInt32BE(0) !== 0x514649fb) throw new BrokenMetaError(`${path.basename(file)} is not a qcow2 image`);
    return Number(header.readBigUInt64BE(24));
  } finally {
    await handle.close();
  }
}

/**
 * Reads and checks `<dir>/meta.json` against schemas/meta.json, filling the seed's defaults.
 * Throws BrokenMetaError with the reason when it cannot be used.
 */
export async function readMeta(dir: string, uid: string, reader: TreeReader = asyncReader): Promise<VolumeMeta> {
  let text: string;
  try {
    text = await reader.readText(path.join(dir, META_FILE));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new BrokenMetaError(`meta.json ${LINK_REFUSED}`);
    throw new BrokenMetaError(code === 'ENOENT' ? 'meta.json is missing' : `meta.json cannot be read (${code})`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseTreeJson(text) as Record<string, unknown>;
  } catch {
    throw new BrokenMetaError('meta.json is not valid JSON');
  }
  const problem = checkDocument('meta', doc);
  if (problem) throw new BrokenMetaError(`meta.json is invalid: ${problem}`);
  // Ids are accepted in either case (docs/decisions.md) and kept lower-case, as the directory name is.
  if (doc.volumeID !== undefined && String(doc.volumeID).toLowerCase() !== uid)
    throw new BrokenMetaError(`meta.json names volume ${String(doc.volumeID)}, not the ${uid} of its directory`);
  doc.volumeID = uid;
  doc.creatorID = String(doc.creatorID).toLowerCase();
  if (doc.size === undefined) {
    const format = doc.format as VolumeFormat;
    try {
      doc.size = await sizeFromImage(path.join(dir, dataFileName(format)), format);
    } catch (err) {
      if (err instanceof BrokenMetaError) throw err;
      throw new BrokenMetaError(`meta.json has no size and ${dataFileName(format)} cannot be read`);
    }
  }
  return doc as VolumeMeta;
}

/** Replaces meta.json atomically. Caller holds the volume's lock. */
export async function writeMeta(dir: string, meta: VolumeMeta): Promise<void> {
  await writeJsonAtomic(path.join(dir, META_FILE), meta);
}
