import { promises as fs } from 'node:fs';
import path from 'node:path';

/**
 * The flushes and renames `work` makes through node:fs in this process, in order (`sync <file>`,
 * `rename <from> <to>`, paths relative to `base`, `.` for `base` itself). A power cut, not a kill,
 * loses what was not flushed: the order of these calls is all a test can see of durability.
 */
export async function traceFlushes(base: string, work: () => Promise<unknown>): Promise<string[]> {
  const calls: string[] = [];
  const name = (file: unknown) => path.relative(base, String(file)) || '.';
  const { open, rename } = fs;
  fs.open = (async (...args: Parameters<typeof open>) => {
    const handle = await open(...args);
    const sync = handle.sync.bind(handle);
    handle.sync = async () => {
      calls.push(`sync ${name(args[0])}`);
      return sync();
    };
    return handle;
  }) as typeof open;
  fs.rename = async (from, to) => {
    calls.push(`rename ${name(from)} ${name(to)}`);
    return rename(from, to);
  };
  try {
    await work();
  } finally {
    Object.assign(fs, { open, rename });
  }
  return calls;
}
