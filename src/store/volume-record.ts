import type { Stats } from 'node:fs';
import path from 'node:path';
import { UnavailableError } from '../errors.js';
import { asyncReader, type TreeReader } from './tree-reader.js';
import { BrokenMetaError, LINK_REFUSED, readMeta, type VolumeMeta } from './meta.js';
import type { RbdImage } from '../tools/rbd.js';
import { parsePointer } from './rbd-pointer.js';
import { DATA_FILE_NAMES, dataFileName, isDeadClaimCandidate, META_FILE, parseLockMarker, uidOfDirName } from './layout.js';

/** A meta.json is a few hundred bytes; 64 labels of the longest make ~75 kB. */
const MAX_META_BYTES = 1024 * 1024;

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
  /** The length of its data file (the largest, when several), what a broken volume counts against its root's total. */
  dataBytes: number;
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

/**
 * The bytes a volume counts against its root's total: its size, or its data file's length when meta.json
 * cannot say. A raw image's length is its size: a raw volume counts at least that, so that a meta.json
 * whose size is smaller (written in GB by hand, `"size": 4` for a 4 GB image) does not free its quota.
 */
export function quotaBytes(record: VolumeRecord): number {
  if (!record.meta) return record.dataBytes;
  return record.meta.format === 'raw' ? Math.max(record.meta.size, record.dataBytes) : record.meta.size;
}

/**
 * The uid of a volume directory's name, `vid.<32 hex digits>.elimg`, in either case (lower-cased).
 * Only the lower-case name is a valid volume (SPEC §3); loadVolumeRecord answers the other broken.
 */
export function uidOfVolumeDir(name: string): string | null {
  const uid = uidOfDirName(name);
  if (uid || !name.startsWith('vid.') || !name.endsWith('.elimg')) return uid;
  return uidOfDirName(`vid.${name.slice(4, -6).toLowerCase()}.elimg`);
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
export async function loadVolumeRecord(root: string, dir: string, reader: TreeReader = asyncReader, isLink?: boolean): Promise<VolumeRecord | null> {
  const name = path.basename(dir);
  const uid = uidOfVolumeDir(name);
  if (!uid) return null;
  let files: string[];
  try {
    // `isLink`: what the root's listing said of the directory (a scan), so that it is not asked twice.
    if (isLink ?? (await reader.lstat(dir)).isSymbolicLink()) return blank(uid, root, dir, [], `the volume directory ${LINK_REFUSED}`);
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
  let dataBytes = 0;
  for (const [file, st] of stats) if (file !== META_FILE && st.isFile()) dataBytes = Math.max(dataBytes, st.size);
  // Counted, listed broken, never operated on: the sweep and the operations know only lower-case names.
  if (name !== `vid.${uid}.elimg`)
    return { ...blank(uid, root, dir, [], `the directory name is not lower case (SPEC §3): rename it vid.${uid}.elimg`), dataBytes };
  record.dataBytes = dataBytes;
  for (const [name, st] of stats)
    if (!st.isFile()) {
      record.problem = `${name} ${st.isSymbolicLink() ? LINK_REFUSED : 'is not a plain file'}`;
      return record;
    }
  const metaBytes = stats.get(META_FILE)?.size ?? 0;
  if (metaBytes > MAX_META_BYTES) {
    // Read whole, it took its size in memory at every rescan (600 MB: 1.3 GB resident).
    record.problem = `meta.json is ${metaBytes} bytes, too large for a volume description (at most ${MAX_META_BYTES}): was an image copied over it?`;
    return record;
  }
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
  const image = stats.get(dataName);
  if (!image) {
    if (!locks.includes('create')) record.problem = `${dataName} is missing`;
    return record;
  }
  record.sizeOnDisk = image.blocks * 512;
  record.lastUpdatedMs = Math.max(image.mtimeMs, stats.get(META_FILE)?.mtimeMs ?? 0);
  if (record.meta.format === 'rbd') await readRbdPointer(record, path.join(dir, dataName), reader);
  return record;
}

/** lstat of meta.json and of every data file the directory lists (one that vanished meanwhile is left out). */
async function fileStats(dir: string, files: string[], reader: TreeReader): Promise<Map<string, Stats>> {
  const stats = new Map<string, Stats>();
  for (const name of files) {
    if (name !== META_FILE && !DATA_FILE_NAMES.includes(name)) continue;
    try {
      stats.set(name, await reader.lstat(path.join(dir, name)));
    } catch {
      // gone since the readdir: as if it had not been listed
    }
  }
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
  return { uid, root, dir, meta: null, problem, locks: [], exports: [], files, sizeOnDisk: 0, lastUpdatedMs: 0, dataBytes: 0 };
}

/**
 * What the index answers for a uid found in several directories (`copies`, sorted): broken, naming
 * them all, so that neither copy is operated on until the operator removes one.
 */
export function conflictRecord(copies: VolumeRecord[]): VolumeRecord {
  const dirs = copies.map((c) => c.dir);
  const places = new Set(copies.map((c) => c.root)).size === dirs.length ? 'roots' : 'directories';
  const where = `${dirs.length === 2 ? 'two' : dirs.length} ${places}: ${dirs.slice(0, -1).join(', ')} and ${dirs.at(-1)}`;
  return { ...blank(copies[0].uid, copies[0].root, copies[0].dir, [], `vid ${copies[0].uid} is in ${where} (remove all but one)`), copies: dirs };
}

