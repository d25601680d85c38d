import { promises as fs } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from './atomic.js';
import { newUid, tempNameFor, USAGE_STAMP } from './layout.js';

/*
 * A root's usage stamp (`.elemento-usage`): a token rewritten, under the root's lock, by whoever grows
 * a volume there. A daemon whose index was read at one token and finds another knows that some size
 * changed behind it (another host sharing the tree) and reads the sizes again (src/store/placement.ts).
 */

/** The root's usage stamp: a token rewritten by whoever grows a volume there ('' while none was written). */
export async function readUsageStamp(rootPath: string): Promise<string> {
  return fs.readFile(path.join(rootPath, USAGE_STAMP), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
}

/** Root lock held: a temp file of the stamp found now is a crash's leftover, and goes. */
export async function writeUsageStamp(rootPath: string): Promise<string> {
  const target = path.join(rootPath, USAGE_STAMP);
  const leftover = path.basename(tempNameFor(target, ''));
  for (const name of await fs.readdir(rootPath)) if (name.startsWith(leftover)) await fs.rm(path.join(rootPath, name), { force: true });
  const stamp = newUid();
  await writeFileAtomic(target, stamp);
  return stamp;
}
