import { promises as fs } from 'node:fs';
import { moveToBin } from '../store/recovery.js';
import { findVolume, readLockedMeta, requireNoOverlays, requireNotInUse, requireOwnedAfresh, requireOwner } from './access.js';
import { requireImageRemovable } from './ceph.js';
import type { Caller, StoreContext } from './context.js';
import { faultPoint } from '../faults.js';

/**
 * `destroy`: refused while the volume is exported or attached. The volume leaves its root in one
 * rename into the root's bin (the commit point); the bin entry is purged after the answer (a purge
 * cut short is finished by the next start-up sweep).
 */
export async function destroyVolume(ctx: StoreContext, vid: string, caller: Caller): Promise<{ vid: string }> {
  const record = await findVolume(ctx, vid, caller);
  requireOwner(record.meta, caller, 'destroy');
  const binned = await ctx.locks.withVolumeLock(record.dir, 'destroy', vid, async (lock) => {
    const meta = requireOwnedAfresh(await readLockedMeta(record.dir, vid), caller, 'destroy');
    requireNotInUse(await fs.readdir(record.dir), meta, 'destroyed');
    await requireNoOverlays(ctx, meta, 'destroyed');
    await requireImageRemovable(ctx, record.dir, meta);
    faultPoint('destroy.before-bin-rename');
    const binned = await moveToBin(record.dir, lock.operationUid);
    faultPoint('destroy.after-bin-rename');
    return binned;
  });
  ctx.index.forget(vid);
  ctx.log.info('volume destroyed', { vid });
  faultPoint('destroy.before-purge');
  ctx.purger.later(binned);
  return { vid };
}
