import { promises as fs } from 'node:fs';
import { checkDocument } from '../schemas.js';
import type { RbdImage } from '../tools/rbd.js';
import { dataFileName } from './layout.js';

/**
 * `data.rbd` (seed 002: "the real volume stays on the ceph cluster, this file is just a tool to
 * allow the storage server to manage the volume"): JSON naming the pool and the image, so an
 * operator can find the bytes with `rbd info <pool>/<image>`.
 */
export type RbdPointer = RbdImage;

export const RBD_POINTER_FILE = dataFileName('rbd');

/**
 * The image of volume `uid`. Named after the volume, so that what a crash left between `rbd create`
 * and the pointer's publication is found again by the volume's uid alone.
 */
export function imageNameOf(uid: string): string {
  return `elemento-${uid}`;
}

/** The volume uid an image was named after by imageNameOf, or null for an image that is not a volume's. */
export function uidOfImageName(image: string): string | null {
  return /^elemento-([0-9a-f]{32})$/.exec(image)?.[1] ?? null;
}

export function pointerText(pointer: RbdPointer): string {
  return JSON.stringify({ pool: pointer.pool, image: pointer.image }) + '\n';
}

/**
 * Reads and checks the pointer of volume `uid`; null when it does not exist; throws with the reason
 * when it is unusable. A pointer must name the volume's own image, `elemento-<uid>`: one copied from
 * another volume's directory (or edited) must never make the daemon resize, export or remove an image
 * that is not this volume's.
 */
export async function readPointer(file: string, uid: string): Promise<RbdPointer | null> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return parsePointer(text, uid);
}

/** Checks a pointer file's text against schemas/rbd-pointer.json and volume `uid`; throws with the reason. */
export function parsePointer(text: string, uid: string): RbdPointer {
  let doc: RbdPointer;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error(`${RBD_POINTER_FILE} is not valid JSON`);
  }
  const problem = checkDocument('rbd-pointer', doc);
  if (problem) throw new Error(`${RBD_POINTER_FILE} is invalid: ${problem}`);
  if (doc.image !== imageNameOf(uid)) throw new Error(`${RBD_POINTER_FILE} names the image ${doc.image}, not this volume's ${imageNameOf(uid)}`);
  return { pool: doc.pool, image: doc.image };
}
