import { constants, promises as fs } from 'node:fs';
import { tempNameFor } from './layout.js';

/**
 * Whether the filesystem holding `dir` can share blocks between files (FICLONE: XFS with reflink,
 * btrfs), found by cloning a one-byte temp file there. `dir` should be a volume directory whose
 * lock the caller holds: a probe left by a crash is a temp file, which the volume's recovery removes.
 */
export async function canReflink(dir: string): Promise<boolean> {
  const probe = tempNameFor(`${dir}/reflink-probe`);
  const copy = tempNameFor(`${dir}/reflink-probe`);
  try {
    await fs.writeFile(probe, 'x', { flag: 'wx' });
    await fs.copyFile(probe, copy, constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false;
  } finally {
    await Promise.all([fs.rm(probe, { force: true }), fs.rm(copy, { force: true })]);
  }
}
