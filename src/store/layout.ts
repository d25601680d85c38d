import { randomUUID } from 'node:crypto';
import path from 'node:path';

/**
 * The on-disk format's names (SPEC §3), in one place: every path the daemon builds comes from here.
 */
export const SETTINGS_FILE = 'settings.json';
export const META_FILE = 'meta.json';
/** Where destroyed volumes wait for their purge, inside their own root (so the move is a rename). */
export const BIN_DIR = '.elemento-bin';
/** proper-lockfile's mutex directory inside a volume, and the one beside a root's settings.json. */
export const VOLUME_MUTEX = '.elemento.lock';
export const ROOT_MUTEX = '.elemento-root.lock';
/** A root's usage stamp: rewritten under the root's lock whenever a volume there grows (src/store/placement.ts). */
export const USAGE_STAMP = '.elemento-usage';

const VOLUME_DIR_RE = /^vid\.([0-9a-f]{32})\.elimg$/;
const UID_RE = /^[0-9a-f]{32}$/;
const LOCK_MARKER_RE = /^elemento\.([a-z0-9-]+)\.([0-9a-f]{32})\.ignore$/;
const TEMP_RE = /\.tmp-[0-9a-f]+(\.[a-z0-9]+)?$/;

export type VolumeFormat = 'raw' | 'qcow2' | 'iso' | 'rbd';

const EXT_OF: Record<VolumeFormat, string> = { raw: 'img', qcow2: 'qcow2', iso: 'iso', rbd: 'rbd' };

export function newUid(): string {
  return randomUUID().replace(/-/g, '');
}

export function isUid(value: string): boolean {
  return UID_RE.test(value);
}

export function volumeDirName(uid: string): string {
  if (!isUid(uid)) throw new Error(`not a volume uid: ${uid}`);
  return `vid.${uid}.elimg`;
}

/** The uid in a directory name `vid.<uid>.elimg`, or null for anything else. */
export function uidOfDirName(name: string): string | null {
  return VOLUME_DIR_RE.exec(name)?.[1] ?? null;
}

/** The uid of a volume directory moved into a bin (`vid.<uid>.elimg.<operation uid>`, see moveToBin), or null. */
export function uidOfBinEntry(name: string): string | null {
  return /^vid\.([0-9a-f]{32})\.elimg\.[0-9a-f]+$/.exec(name)?.[1] ?? null;
}

export function dataFileName(format: VolumeFormat): string {
  return `data.${EXT_OF[format]}`;
}

/** Every name a data file can have, to find strays left by an interrupted convert. */
export const DATA_FILE_NAMES = Object.values(EXT_OF).map((ext) => `data.${ext}`);

export function lockMarkerName(purpose: string, operationUid: string): string {
  return `elemento.${purpose}.${operationUid}.ignore`;
}

export function parseLockMarker(name: string): { purpose: string; operationUid: string } | null {
  const m = LOCK_MARKER_RE.exec(name);
  return m ? { purpose: m[1], operationUid: m[2] } : null;
}

/** A temp name in the same directory as `target` (so the final rename is atomic). */
export function tempNameFor(target: string, operationUid: string = newUid().slice(0, 12)): string {
  const ext = path.extname(target);
  return path.join(path.dirname(target), `.${path.basename(target, ext)}.tmp-${operationUid}${ext}`);
}

/**
 * A create killed between its mkdir and its meta.json leaves only the daemon's own entries (its
 * mutex, its lock marker, meta.json's temp file), or nothing. A directory holding anything else
 * (an operator's image, a note) is not a dead claim, whatever it lacks: it is reported broken, never removed.
 */
export function isDeadClaimCandidate(files: string[]): boolean {
  return files.every((f) => f === VOLUME_MUTEX || isTempName(f) || parseLockMarker(f) !== null);
}

export function isTempName(name: string): boolean {
  return TEMP_RE.test(name);
}

/** True when `child` is `parent` or lies below it (after resolving `..`). */
export function isInside(parent: string, child: string): boolean {
  const rel = path.relative(path.resolve(parent), path.resolve(child));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Sizes: GB in requests are decimal, and byte sizes are rounded up to a whole 512-byte sector. */
export const BYTES_PER_GB = 1_000_000_000;
export function gbToBytes(gb: number): number {
  return sectors(decimalBytes(gb, BYTES_PER_GB));
}

/** `bytes` rounded up to whole 512-byte sectors: every size the tree records. */
export const sectors = (bytes: number) => Math.ceil(bytes / 512) * 512;

/**
 * `amount` × `unit` bytes. 0.536 × 1e9 is 536000000.00000006 in binary floating point, 0.57 × 1e9 is
 * 569999999.9999999: the product is rounded to 15 significant digits (what a double holds exactly),
 * so a decimal size that is a whole number of bytes stays that number.
 */
export function decimalBytes(amount: number, unit: number): number {
  return Number((amount * unit).toPrecision(15));
}

/** `iqn.2004-10.cloud.elemento:01:<client XOR volume>.exported`: present while the volume is exported to that client. */
export function exportMarkerName(iqn: string): string {
  return `${iqn}.exported`;
}

/** The state of a live migration in progress (see src/store/migration-state.ts). */
export const MIGRATION_FILE = 'migration.json';
