import type { Stats } from 'node:fs';
import path from 'node:path';
import { UnavailableError } from '../errors.js';
import { asyncReader, type TreeReader } from './tree-reader.js';
import { BrokenMetaError, LINK_REFUSED, readMeta, type VolumeMeta } from './meta.js';
import type { RbdImage } from '../tools/rbd.js';
import { parsePointer } from './rbd-pointer.js';
import { DATA_FILE_NAMES, dataFileName, META_FILE, parseLockMarker, uidOfDirName } from './layout.js';

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
  /** Set while the volume's root is unavailable (the root's reason): last known as it was, never operated on. */
  unavailable?: string;
  /** Set when the uid is in several directories (an operator's copy into another root): each of them. */
  copies?: string[];
}

/** SPEC §3: a volume on an unavailable root is neither absent nor usable (503). */
export function unavailableError(record: VolumeRecord): UnavailableError {
  return new UnavailableError(`volume ${record.uid} is on storage root ${record.root}, which is not available (${record.unavailable!.replace(/^unavailable: /, '')})`, { vid: record.uid });
}

/** A volume being created: its create lock is held, or it is claimed and has no meta.json yet. */
export function isCreating(record: VolumeRecord): boolean {
  return record.locks.includes('create') || (record.meta === null && record.problem === null);
}

/**
 * Reads one volume directory. Returns null when the directory no longer exists. The directory, its
 * meta.json and its data files are looked at with lstat before anything is read through them: a
 * symbolic link (or anything but a plain file) there makes the volume broken, so that no operation
 * reads or writes through it.
 */
export async function loadVolumeRecord(root: string, dir: string, reader: TreeReader = asyncReader): Promise<VolumeRecord | null> {
  const uid = uidOfDirName(path.basename(dir));
  if (!uid) return null;
  let files: string[];
  try {
    if ((await reader.lstat(dir)).isSymbolicLink()) return blank(uid, root, dir, [], `the volume directory ${LINK_REFUSED}`);
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
  const stats = await fileStats(dir, files, reader);
  for (const [name, st] of stats)
    if (!st.isFile()) {
      record.problem = `${name} ${st.isSymbolicLink() ? LINK_REFUSED : 'is not a plain file'}`;
      return record;
    }
  try {
    record.meta = await readMeta(dir, uid, reader);
  } catch (err) {
    if (!(err instanceof BrokenMetaError)) throw err;
    // A directory with neither meta.json nor data is a claim (live, or dead and swept), not broken.
    const claimed = locks.includes('create') || !files.some((f) => DATA_FILE_NAMES.includes(f));
    record.problem = claimed ? null : err.message;
    return record;
  }
  const dataName = dataFileName(record.meta.format);
  const data = stats.get(dataName);
  if (!data) {
    if (!locks.includes('create')) record.problem = `${dataName} is missing`;
    return record;
  }
  record.sizeOnDisk = data.blocks * 512;
  record.lastUpdatedMs = Math.max(data.mtimeMs, stats.get(META_FILE)?.mtimeMs ?? 0);
  if (record.meta.format === 'rbd') await readRbdPointer(record, path.join(dir, dataName), reader);
  return record;
}

/** lstat of meta.json and of every data file the directory lists (one that vanished meanwhile is left out). */
async function fileStats(dir: string, files: string[], reader: TreeReader): Promise<Map<string, Stats>> {
  const stats = new Map<string, Stats>();
  const look = async (name: string) => {
    try {
      stats.set(name, await reader.lstat(path.join(dir, name)));
    } catch {
      // gone since the readdir: as if it had not been listed
    }
  };
  await Promise.all([META_FILE, ...DATA_FILE_NAMES].filter((n) => files.includes(n)).map(look));
  return stats;
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

/**
 * What the index answers for a uid found in several directories (`copies`, sorted): broken, naming
 * them all, so that neither copy is operated on until the operator removes one.
 */
export function conflictRecord(copies: VolumeRecord[]): VolumeRecord {
  const dirs = copies.map((c) => c.dir);
  const where = dirs.length === 2 ? `two roots: ${dirs[0]} and ${dirs[1]}` : `${dirs.length} roots: ${dirs.slice(0, -1).join(', ')} and ${dirs.at(-1)}`;
  return { ...blank(copies[0].uid, copies[0].root, copies[0].dir, [], `vid ${copies[0].uid} is in ${where} (remove all but one)`), copies: dirs };
}

