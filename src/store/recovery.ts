import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.js';
import type { QemuImg } from '../tools/qemu-img.js';
import type { Rbd } from '../tools/rbd.js';
import { readPointer } from './rbd-pointer.js';
import { recoverMigration } from './migration-state.js';
import { BrokenMetaError, readMeta, writeMeta } from './meta.js';
import { BIN_DIR, DATA_FILE_NAMES, dataFileName, isDeadClaimCandidate, isTempName, newUid, parseLockMarker, uidOfDirName } from './layout.js';
import { NotFoundError } from '../errors.js';
import { faultPoint } from '../faults.js';

/**
 * Moves a volume directory (or a file of one, then naming `rootPath`) out of its root into the root's
 * bin in one rename: the commit point of a destroy. Answers the bin entry, named after what it was.
 */
export async function moveToBin(entry: string, operationUid: string, rootPath = path.dirname(entry)): Promise<string> {
  const bin = path.join(rootPath, BIN_DIR);
  await fs.mkdir(bin, { recursive: true });
  const target = path.join(bin, `${path.relative(rootPath, entry).split(path.sep).join('.')}.${operationUid}`);
  await fs.rename(entry, target);
  return target;
}

/** What recovery works with: the image tool, the log, and the purge of what leaves the tree (src/store/purge.ts). */
export interface RecoveryTools {
  qemuImg: QemuImg;
  /** The Ceph pool's tool, null on a host without Ceph. */
  rbd: Rbd | null;
  log: Logger;
  /** Queues a bin entry's purge, not awaited: a slow one (a Ceph cluster that does not answer) must not outlive the lock, whose mutex left with the directory. */
  purge: (binned: string) => void;
}

/**
 * A volume's image as recovery sizes it: a file through qemu-img, or a Ceph volume's RBD image (its
 * pointer read once) through rbd. `info` gives the size and backing file, `grow` makes it larger.
 */
async function imageOps(data: string, uid: string, format: 'raw' | 'qcow2' | 'rbd', { qemuImg, rbd }: RecoveryTools) {
  if (format !== 'rbd')
    return { info: () => qemuImg.info(data, format), grow: (size: number) => qemuImg.resize(data, format, size) };
  const pointer = await readPointer(data, uid);
  if (!pointer) throw new Error(`${data} is missing`);
  return {
    info: async (): Promise<{ virtualSize: number; backingFilename?: string }> => {
      const size = await rbd!.size(pointer);
      if (size === null) throw new Error(`the RBD image named by ${data} does not exist`);
      return { virtualSize: size };
    },
    grow: (size: number) => rbd!.resize(pointer, size),
  };
}

/** Removes a volume whose creation died before its data was published, and says it is gone. */
async function removeDeadCreate(dir: string, uid: string, { log, purge }: RecoveryTools): Promise<never> {
  log.warn('removing a volume whose creation died', { vid: uid });
  const binned = await moveToBin(dir, newUid());
  faultPoint('recovery.after-bin-rename');
  purge(binned);
  throw new NotFoundError(`volume ${uid} does not exist (its creation never finished)`);
}

/**
 * Finishes or undoes what a dead operation left in a volume (STYLE lesson 8). Called with the
 * volume's mutex held, before a new operation starts, with the markers the dead one left:
 * - a create that never published its data file: the volume is removed;
 * - temp files: removed;
 * - a convert that died between its steps: meta.json is the truth, the other data file goes (only then:
 *   another data file beside another dead operation is an operator's);
 * - a resize that died before meta.json was rewritten: meta.json takes the image's real size;
 * - a migration step (prepare, conclude, revert) that died half-way: reverted or finished;
 * - a compact that died after its data's rename: meta.json loses the `base` the image no longer has;
 * - a snapshot revert that died after the rollback (the image has the snapshot's, smaller, size): the
 *   image is grown back to the volume's size.
 */
export async function recoverVolume(dir: string, staleMarkers: string[], tools: RecoveryTools): Promise<void> {
  const { rbd, log } = tools;
  const uid = uidOfDirName(path.basename(dir))!;
  const files = await fs.readdir(dir);
  for (const name of files.filter(isTempName)) await fs.rm(path.join(dir, name), { force: true, recursive: true });
  const purposes = staleMarkers.map((m) => parseLockMarker(m)!.purpose);
  let meta;
  try {
    meta = await readMeta(dir, uid);
  } catch (err) {
    if (!(err instanceof BrokenMetaError)) throw err;
    // meta.json is written whole (temp file, rename): a create that died before it left nothing else.
    // Anything more is not the daemon's to remove: the volume stays, reported broken.
    if (purposes.includes('create') && isDeadClaimCandidate(await fs.readdir(dir))) return removeDeadCreate(dir, uid, tools);
    meta = null;
  }
  const data = meta ? dataFileName(meta.format) : null;
  if (meta && purposes.includes('create') && !files.includes(data!)) return removeDeadCreate(dir, uid, tools);
  if (meta && files.includes(data!)) {
    // Only a convert makes a second data file: beside any other dead operation, it is an operator's.
    for (const stray of purposes.includes('convert') ? DATA_FILE_NAMES.filter((n) => n !== data && files.includes(n)) : []) {
      log.warn('removing a data file left by an interrupted convert', { vid: uid, file: stray });
      await fs.rm(path.join(dir, stray), { force: true });
    }
    if (meta.format === 'raw' || meta.format === 'qcow2' || (meta.format === 'rbd' && rbd)) {
      const image = await imageOps(path.join(dir, data!), uid, meta.format, tools);
      const info = await image.info();
      if (info.virtualSize < meta.size && purposes.includes('snapshot')) {
        // A revert died between the tool's rollback (which gives back the snapshot's size) and growing
        // the image again: finish it; volumes only grow.
        log.warn('image grown back to the volume size after an interrupted snapshot revert', { vid: uid, was: info.virtualSize, now: meta.size });
        await image.grow(meta.size);
      } else if (info.virtualSize !== meta.size) {
        log.warn('meta.json size corrected from the image after an interrupted operation', { vid: uid, was: meta.size, now: info.virtualSize });
        meta = { ...meta, size: info.virtualSize };
        await writeMeta(dir, meta);
        faultPoint('recovery.after-size-fix');
      }
      if (meta.base && !info.backingFilename) {
        log.warn('meta.json loses its base after an interrupted compact: the image is standalone', { vid: uid, base: meta.base });
        const { base: _compacted, ...standalone } = meta;
        await writeMeta(dir, standalone);
      }
    }
  }
  if (purposes.includes('migrate')) await recoverMigration(dir, uid, log);
  for (const marker of staleMarkers) await fs.rm(path.join(dir, marker), { force: true });
}
