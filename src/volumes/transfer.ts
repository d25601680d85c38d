import { promises as fs } from 'node:fs';
import { faultPoint } from '../faults.js';
import { writeMeta } from '../store/meta.js';
import { requireNotInUse } from './access.js';
import type { Caller, StoreContext } from './context.js';
import { withOwnedVolume } from './modify.js';

/**
 * `update/transfer` (seed 002 also names it `transfer`): the owner, or the controller/an admin,
 * hands a volume to another `creatorID`. Everything else stays, privacy included: a private volume
 * becomes the new owner's private volume, invisible to the former one. As Cinder's transfers, only
 * a volume not in use (not exported, not attached) changes hands: its exports belong to the old owner.
 */
export async function transferVolume(ctx: StoreContext, req: { vid: string; new_creatorID: string }, caller: Caller) {
  const meta = await withOwnedVolume(ctx, req.vid, caller, 'transfer', 'transfer', async (dir, current) => {
    requireNotInUse(await fs.readdir(dir), current, 'transferred');
    const next = { ...current, creatorID: req.new_creatorID };
    if (current.creatorID !== req.new_creatorID) await writeMeta(dir, next);
    faultPoint('transfer.after-meta');
    return { previous: current.creatorID, next };
  });
  ctx.log.info('volume transferred', { vid: req.vid, from: meta.previous, to: req.new_creatorID });
  return { vid: req.vid, creatorID: meta.next.creatorID, previous_creatorID: meta.previous, private: meta.next.private };
}
