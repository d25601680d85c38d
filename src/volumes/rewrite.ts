import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConflictError, translateErrno } from '../errors.js';
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
  if (src.format === 'qcow2') await requireRecordedBackingFormats(ctx, vid, src.file);
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

/**
 * `qemu-img convert` reads a qcow2's whole backing chain. A backing file whose format the image does not
 * record (an overlay made by a qemu older than 6.1, which did not require -F) is probed: a raw volume whose
 * guest wrote a qcow2 header naming a host file as its own backing was then read through, and that file's
 * bytes landed in the converted volume (docs/SECURITY.md). Each level is read with its recorded format only.
 */
async function requireRecordedBackingFormats(ctx: StoreContext, vid: string, file: string): Promise<void> {
  for (let level = 0, image = file; level < 64; level++) {
    const { backingFilename, backingFormat } = await ctx.qemuImg.info(image, 'qcow2');
    if (!backingFilename) return;
    if (!backingFormat)
      throw new ConflictError(
        `volume ${vid} reads through a backing file whose format its image does not record: qemu-img would guess it, which a guest's bytes can fool; record it by hand (qemu-img rebase -u -F <format> -b <same backing file>)`,
        { vid },
      );
    if (backingFormat !== 'qcow2') return;
    image = path.resolve(path.dirname(image), backingFilename);
  }
}
