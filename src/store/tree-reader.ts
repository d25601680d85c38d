import fs, { type Stats } from 'node:fs';
import { promisify } from 'node:util';

/**
 * The reads of a scan of the tree (readdir, meta.json, lstat), in two flavours with the same errors:
 * - `asyncReader`: `node:fs`'s callback API, promisified. Each call costs about a third of its
 *   `fs.promises` twin (no FileHandle object per file). Used while the daemon serves.
 * - `blockingReader`: the synchronous calls, about half the CPU again and no thread-pool round trip
 *   (10,000 volumes: ~0.3 s of CPU against ~0.65 s). Only for the first scan, before the daemon
 *   listens, when there is no request to keep waiting (docs/BENCHMARKS.md, start-up), and only for
 *   roots on local filesystems: on a network filesystem each call waits for the network, and the
 *   asynchronous reader keeps four of them in flight.
 * A caller `await`s either: a synchronous answer or throw behaves as a settled promise would.
 * Neither follows a symbolic link where it can tell: `lstat`, and `readText` fails with ELOOP on one
 * (a link in the tree could lead the daemon's reads, and through them its writes, out of the mount directory).
 */
export interface TreeReader {
  readdir(dir: string): Promise<string[]> | string[];
  readText(file: string): Promise<string> | string;
  lstat(file: string): Promise<Stats> | Stats;
}

const readdirAsync = promisify(fs.readdir);
const readFileAsync = promisify(fs.readFile);
const lstatAsync = promisify(fs.lstat);
// Node passes a numeric flag through to open(2); its types only name the string forms.
const NO_FOLLOW = { encoding: 'utf8' as const, flag: (fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW) as unknown as string };

export const asyncReader: TreeReader = {
  readdir: (dir) => readdirAsync(dir),
  readText: (file) => readFileAsync(file, NO_FOLLOW),
  lstat: (file) => lstatAsync(file),
};

export const blockingReader: TreeReader = {
  readdir: (dir) => fs.readdirSync(dir),
  readText: (file) => fs.readFileSync(file, NO_FOLLOW),
  lstat: (file) => fs.lstatSync(file),
};

/** statfs `f_type` of filesystems whose calls wait on a network (linux/magic.h). */
const NETWORK_FILESYSTEMS = new Set([
  0x6969, // NFS
  0x65735546, // FUSE (GlusterFS, ceph-fuse, sshfs)
  0xff534d42, // CIFS
  0xfe534d42, // SMB2
  0x00c36400, // CephFS
  0x01021997, // 9P
  0x5346414f, // AFS
  0x47504653, // GPFS
  0x7461636f, // OCFS2
  0x01161970, // GFS2
]);

/** Whether `dir` is on a network filesystem (one whose calls wait on a network, and which other hosts write). */
export async function onNetworkFilesystem(dir: string): Promise<boolean> {
  const type = await fs.promises.statfs(dir).then((st) => st.type, () => -1);
  return NETWORK_FILESYSTEMS.has(type);
}

/** The reader for a root's first scan: blocking on a local filesystem, asynchronous on a network one. */
export async function firstScanReader(rootPath: string): Promise<TreeReader> {
  return (await onNetworkFilesystem(rootPath)) ? asyncReader : blockingReader;
}

/**
 * JSON as an operator's editor writes it: a leading byte order mark (Windows editors put one in UTF-8
 * files) is not JSON's, and made a hand-edited settings.json skip its whole root and a meta.json break
 * its volume. CRLF line ends and indentation are JSON's whitespace already.
 */
export function parseTreeJson(text: string): unknown {
  return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
}
