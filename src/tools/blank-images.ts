import { promises as fs } from 'node:fs';
import type { DiskFormat, QemuImg } from './qemu-img.js';

/** What `qemu-img create` wrote for one format and size: its first bytes, then a hole up to `length`. */
interface Template {
  head: Buffer;
  length: number;
}

/** Larger blank images (qcow2 of many TB) are not kept: they are rare and qemu-img makes them. */
const MAX_HEAD_BYTES = 4 * 1024 * 1024;

/**
 * Blank images, made by `qemu-img create` and remembered by root, format and size. A blank image's bytes
 * depend on nothing else (a qcow2 header has no timestamp and no UUID; a raw image is zeros, the
 * first block allocated by qemu-img's alignment probe), so a later create of the same format and
 * size writes the same bytes again, with the same allocation, instead of forking qemu-img: the fork
 * from the daemon's ~100 MB process is about half of a create's time. qemu-img still makes the first
 * image of every size (and every image of a `file-system: unique` root, which carries a new ext4).
 */
export class BlankImages {
  private readonly templates = new Map<string, Template>();

  constructor(
    private readonly qemuImg: QemuImg,
    private readonly maxEntries = 32,
  ) {}

  /**
   * Makes a blank image at `file`, which must not exist, in the root `rootPath`: what qemu-img
   * allocates depends on the filesystem, so each root learns its own.
   */
  async create(file: string, format: DiskFormat, sizeBytes: number, rootPath: string): Promise<void> {
    const key = `${rootPath}\0${format}:${sizeBytes}`;
    const template = this.templates.get(key);
    if (template) {
      this.templates.delete(key); // least recently used first
      this.templates.set(key, template);
      return writeTemplate(file, template);
    }
    await this.qemuImg.create(file, format, sizeBytes);
    const learned = await readTemplate(file, format);
    if (!learned) return;
    this.templates.set(key, learned);
    if (this.templates.size > this.maxEntries) this.templates.delete(this.templates.keys().next().value!);
  }
}

async function readTemplate(file: string, format: DiskFormat): Promise<Template | null> {
  const st = await fs.stat(file);
  if (format === 'raw') {
    const allocated = Math.min(st.blocks * 512, st.size);
    return allocated <= MAX_HEAD_BYTES ? { head: Buffer.alloc(allocated), length: st.size } : null;
  }
  return st.size <= MAX_HEAD_BYTES ? { head: await fs.readFile(file), length: st.size } : null;
}

async function writeTemplate(file: string, template: Template): Promise<void> {
  const handle = await fs.open(file, 'wx', 0o644);
  try {
    await handle.writeFile(template.head);
    if (template.length > template.head.length) await handle.truncate(template.length);
  } finally {
    await handle.close();
  }
}
