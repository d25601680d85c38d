import fs from 'node:fs';
import { promisify } from 'node:util';

/**
 * `node:fs`'s callback API, promisified, for the reads of the index's full scan. Each call costs
 * about a third of its `fs.promises` twin (no FileHandle object per file): with 10,000 volumes the
 * scan at start takes ~0.4 s instead of ~1.1 s (docs/BENCHMARKS.md). Same errors, same codes.
 */
export const readdir = promisify(fs.readdir);
export const readFile = promisify(fs.readFile);
export const stat = promisify(fs.stat);
