import path from 'node:path';
import { asyncReader, type TreeReader } from './tree-reader.js';
import { BrokenMetaError, readMeta, type VolumeMeta } from './meta.js';
import type { RbdImage } from '../tools/rbd.js';
import { parsePointer } from './rbd-pointer.js';
import { dataFileName, isDeadClaimCandidate, parseLockMarker, uidOfDirName } from './layout.js';

export const EXPORT_MARKER_RE = /^(iqn\.2004-10\.cloud\.elemento:01:[0-9a-f]{32})\.exported$/;

/** What the index knows of one volume directory: read from the tree, never from memory of it. */
export interface VolumeRecord {
  uid: string;
  root: string;
  dir: string;
  /** null when the volume is broken (see `problem`) or still being created. */
  meta: VolumeMeta | null;
  problem: string | null;
  /** Purposes of the lock markers present (`create`, `convert`, ...). */
  locks: string[];
  /** IQNs of the `.exported` markers present. */
  exports: string[];
  files: string[];
  sizeOnDisk: number;
  lastUpdatedMs: number;
  /** A Ceph volume's RBD image, as its data.rbd names it. */
  rbd?: RbdImage;
}

/** A volume being created: its create lock is held, or it is claimed and has no meta.json yet. */
export function isCreating(record: VolumeRecord): boolean {
  return record.locks.includes('create') || (record.meta === null && record.problem === null);
}

/** Reads one volume directory. Returns null when the directory no longer exists. */
export async function loadVolumeRecord(root: string, dir: string, reader: TreeReader = asyncReader): Promise<VolumeRecord | null> {
  const uid = uidOfDirName(path.basename(dir));
  if (!uid) return null;
  let files: string[];
  try {
    files = await reader.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
    return blank(uid, root, dir, [], `volume directory cannot be read (${(err as NodeJS.ErrnoException).code})`);
  }
  const locks = files.map(parseLockMarker).filter((m) => m !== null).map((m) => m.purpose);
  const exports = files.map((f) => EXPORT_MARKER_RE.exec(f)?.[1]).filter((x): x is string => Boolean(x));
  const record = blank(uid, root, dir, files, null);
  record.locks = locks;
  record.exports = exports;
  try {
    record.meta = await readMeta(dir, uid, reader);
  } catch (err) {
    if (!(err instanceof BrokenMetaError)) throw err;
    // A directory holding only the daemon's own entries is a claim (live, or dead and swept), not broken.
    const claimed = locks.includes('create') || isDeadClaimCandidate(files);
    record.problem = claimed ? null : err.message;
    return record;
  }
  const dataName = dataFileName(record.meta.format);
  try {
    const [data, meta] = await Promise.all([reader.stat(path.join(dir, dataName)), reader.stat(path.join(dir, 'meta.json'))]);
    record.sizeOnDisk = data.blocks * 512;
    record.lastUpdatedMs = Math.max(data.mtimeMs, meta.mtimeMs);
  } catch {
    if (!locks.includes('create')) record.problem = `${dataName} is missing`;
    return record;
  }
  if (record.meta.format === 'rbd') await readRbdPointer(record, path.join(dir, dataName), reader);
  return record;
}

/** A Ceph volume's pointer, read into the record; one that cannot be used makes the volume broken. */
async function readRbdPointer(record: VolumeRecord, file: string, reader: TreeReader): Promise<void> {
  try {
    record.rbd = parsePointer(await reader.readText(file), record.uid);
  } catch (err) {
    record.problem = (err as Error).message;
  }
}

function blank(uid: string, root: string, dir: string, files: string[], problem: string | null): VolumeRecord {
  return { uid, root, dir, meta: null, problem, locks: [], exports: [], files, sizeOnDisk: 0, lastUpdatedMs: 0 };
}
