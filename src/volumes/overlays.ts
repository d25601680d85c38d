import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BadRequestError } from '../errors.js';
import { dataFileName } from '../store/layout.js';
import { writeMeta } from '../store/meta.js';
import { requireNoSnapshots, requireNotInUse } from './access.js';
import type { OperationOptions } from './clone.js';
import type { Caller, StoreContext } from './context.js';
import { withOwnedVolume } from './modify.js';
import { convertIntoPlace } from './rewrite.js';
import { jobStarted } from '../jobs/registry.js';

/**
 * `overlay/compact`: turns a linked clone into a standalone volume. Steps, each safe to die after:
 * the whole chain is read into a temp qcow2 (`qemu-img convert`, which follows the backing files);
 * the temp is renamed over `data.qcow2` (the data's commit point); meta.json loses its `base`.
 * recoverVolume finishes the last step when a daemon died between the two renames.
 */
export async function compactOverlay(ctx: StoreContext, req: { vid: string }, caller: Caller, opts: OperationOptions = {}) {
  const result = await withOwnedVolume(ctx, req.vid, caller, 'compact', 'compact', async (dir, meta) => {
    if (!meta.base) throw new BadRequestError(`volume ${req.vid} is not a linked clone: it has no base to compact`, { field: 'vid' });
    requireNotInUse(await fs.readdir(dir), meta, 'compacted');
    const data = path.join(dir, dataFileName(meta.format));
    await requireNoSnapshots(ctx, data, req.vid, 'compacting');
    jobStarted();
    await convertIntoPlace(ctx, 'compact', req.vid, { file: data, format: 'qcow2' }, { file: data, format: 'qcow2' }, opts);
    const { base, ...standalone } = meta;
    await writeMeta(dir, standalone);
    return { vid: meta.volumeID, creatorID: meta.creatorID, base: null, former_base: base as string };
  });
  ctx.log.info('linked clone compacted', { vid: req.vid, base: result.former_base });
  return result;
}
