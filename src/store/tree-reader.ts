import fs, { type Stats } from 'node:fs';
import { promisify } from 'node:util';

/**
 * The reads of a scan of the tree (readdir, meta.json, stat), in two flavours with the same errors:
 * - `asyncReader`: `node:fs`'s callback API, promisified. Each call costs about a third of its
 *   `fs.promises` twin (no FileHandle object per file). Used while the daemon serves.
 * - `blockingReader`: the synchronous calls, about half the CPU again and no thread-pool round trip
 *   (10,000 volumes: ~0.3 s of CPU against ~0.65 s). Only for the first scan, before the daemon
 *   listens, when there is no request to keep waiting (docs/BENCHMARKS.md, start-up).
 * A caller `await`s either: a synchronous answer or throw behaves as a settled promise would.
 */
export interface TreeReader {
  readdir(dir: string): Promise<string[]> | string[];
  readText(file: string): Promise<string> | string;
  stat(file: string): Promise<Stats> | Stats;
}

const readdirAsync = promisify(fs.readdir);
const readFileAsync = promisify(fs.readFile);
const statAsync = promisify(fs.stat);

export const asyncReader: TreeReader = {
  readdir: (dir) => readdirAsync(dir),
  readText: (file) => readFileAsync(file, 'utf8'),
  stat: (file) => statAsync(file),
};

export const blockingReader: TreeReader = {
  readdir: (dir) => fs.readdirSync(dir),
  readText: (file) => fs.readFileSync(file, 'utf8'),
  stat: (file) => fs.statSync(file),
};
