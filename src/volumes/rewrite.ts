import { promises as fs } from 'node:fs';
import { translateErrno } from '../errors.js';
import { faultPoint } from '../faults.js';
import { flushFile, renameDurable, writeFlushed } from '../store/atomic.js';
import { tempNameFor } from '../store/layout.js';
import type { DiskFormat } from '../tools/qemu-img.js';
import type { StoreContext } from './context.js';

/**
 * Writes the image `src` anew as `target` in `format` (convert, compact): `qemu-img convert` into a
 * temp file beside `target`, flushed (the rename may replace the only copy of the data, so the new
 * bytes must be on disk first), then renamed over it, the commit point. On failure or cancel the
 * temp file goes and nothing has changed. Caller holds the volume's lock. Fault points
 * `<step>.after-temp-image` and `<step>.after-rename` are the crash harness's.
 */
export async function convertIntoPlace(
  ctx: StoreContext,
  step: string,
  vid: string,
  src: { file: string; format: string },
  target: { file: string; format: DiskFormat },
  opts: { onProgress?: (percent: number) => void; signal?: AbortSignal } = {},
): Promise<void> {
  const temp = tempNameFor(target.file);
  try {
    await writeFlushed(temp, ctx.qemuImg.convert(src.file, src.format, temp, target.format, opts));
    await flushFile(temp);
    faultPoint(`${step}.after-temp-image`);
    await renameDurable(temp, target.file);
    faultPoint(`${step}.after-rename`);
  } catch (err) {
    await fs.rm(temp, { force: true });
    throw translateErrno(err, `volume ${vid}`);
  }
}
