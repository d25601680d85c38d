import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BadRequestError } from '../errors.js';
import type { ImageInfo, QemuImg } from '../tools/qemu-img.js';

/** Image formats accepted from outside; anything else qemu-img detects is refused. */
export const FOREIGN_FORMATS = ['raw', 'qcow2', 'vmdk', 'vdi', 'vhdx', 'vpc'] as const;

/**
 * Probes an image that came from outside (a download, an upload) and refuses what could make
 * qemu-img or a hypervisor read files other than this one: a backing file, an external data file,
 * a multi-extent (split) image (Proxmox treats imported images the same way). An encrypted image is
 * refused too: without its key it cannot be converted or read by a guest.
 */
export async function probeUntrusted(qemuImg: QemuImg, file: string): Promise<ImageInfo> {
  let info: ImageInfo;
  try {
    info = await qemuImg.info(file);
  } catch {
    throw new BadRequestError('the image could not be read by qemu-img (not a disk image, or damaged)');
  }
  if (!(FOREIGN_FORMATS as readonly string[]).includes(info.format))
    throw new BadRequestError(`images of format ${info.format} are not accepted (accepted: ${FOREIGN_FORMATS.join(', ')})`);
  if (info.encrypted) throw new BadRequestError('encrypted images are not accepted');
  if (info.backingFilename) throw new BadRequestError('the image has a backing file; only self-contained images are accepted');
  if (info.dataFile) throw new BadRequestError('the image has an external data file; only self-contained images are accepted');
  if (info.extents > 1) throw new BadRequestError('the image is split into several extents; only single-file images are accepted');
  if (info.extentFiles.some((f) => path.resolve(path.dirname(file), f) !== path.resolve(file)))
    throw new BadRequestError('the image keeps its data in another file; only single-file images are accepted');
  return info;
}

/** The ISO 9660 signature: "CD001" at byte 32769 (the first volume descriptor, sector 16, offset 1). */
const ISO_MAGIC_OFFSET = 32769;
const ISO_MAGIC = 'CD001';

export async function isIso9660(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r');
  try {
    const buf = Buffer.alloc(ISO_MAGIC.length);
    const { bytesRead } = await handle.read(buf, 0, buf.length, ISO_MAGIC_OFFSET);
    return bytesRead === buf.length && buf.toString('latin1') === ISO_MAGIC;
  } finally {
    await handle.close();
  }
}

export async function assertIso9660(file: string): Promise<void> {
  if (!(await isIso9660(file))) throw new BadRequestError('the content is not an ISO 9660 image (no CD001 signature in its first volume descriptor)');
}
