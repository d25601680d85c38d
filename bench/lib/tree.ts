import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** The client whose `accessible` the listing benchmark asks for: it sees every volume of the tree. */
export const BENCH_CLIENT = 'b0000000000000000000000000000001';
const OTHER_CLIENTS = Array.from({ length: 9 }, (_, i) => `c${String(i).padStart(31, '0')}`);

export interface GeneratedVolume {
  uid: string;
  /** The data file inside the volume directory (`data.img` or `data.qcow2`). */
  dataFile: string;
  format: 'raw' | 'qcow2';
}

export interface GeneratedTree {
  mnt: string;
  root: string;
  volumes: GeneratedVolume[];
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function eachLimited<T>(items: T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export async function tempDir(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `elemento-bench-${prefix}-`));
}

/** A mount directory with one root and no quotas. */
export async function emptyTree(prefix: string): Promise<{ mnt: string; root: string }> {
  const mnt = await tempDir(prefix);
  const root = path.join(mnt, 'pool');
  await fs.mkdir(root);
  await fs.writeFile(path.join(root, 'settings.json'), JSON.stringify({ 'file-system': 'default' }));
  return { mnt, root };
}

/**
 * `count` volumes written straight into a root: half raw (sparse, 64 MiB virtual), half qcow2
 * (copies of one 64 MiB image made by qemu-img), each with a meta.json as the daemon writes it.
 * One in ten is private to BENCH_CLIENT, the rest are public volumes of other clients, so
 * BENCH_CLIENT's `accessible` lists all of them (the largest answer).
 */
export async function generateTree(count: number): Promise<GeneratedTree> {
  const { mnt, root } = await emptyTree('tree');
  const template = path.join(mnt, 'template.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', template, String(64 * 1024 * 1024)]);
  const templateBytes = await fs.readFile(template);
  await fs.rm(template);
  const volumes: GeneratedVolume[] = Array.from({ length: count }, (_, i) => {
    const uid = randomBytes(16).toString('hex');
    const format = i % 2 === 0 ? 'raw' : 'qcow2';
    const dataFile = path.join(root, `vid.${uid}.elimg`, format === 'raw' ? 'data.img' : 'data.qcow2');
    return { uid, dataFile, format };
  });
  await eachLimited(volumes, 64, async (v, i) => {
    const dir = path.dirname(v.dataFile);
    await fs.mkdir(dir);
    const mine = i % 10 === 0;
    const meta = {
      volumeID: v.uid,
      creatorID: mine ? BENCH_CLIENT : OTHER_CLIENTS[i % OTHER_CLIENTS.length],
      name: `bench-${i}`,
      size: 64 * 1024 * 1024,
      format: v.format,
      private: mine,
      bootable: i % 3 === 0,
      readonly: false,
      shareable: false,
      clonable: true,
      alg: 'no',
      bus: 'virtio',
      cloudinit: false,
      ceph: false,
      labels: { bench: 'listing', shard: String(i % 16) },
    };
    await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify(meta));
    if (v.format === 'qcow2') await fs.writeFile(v.dataFile, templateBytes);
    else {
      await fs.writeFile(v.dataFile, '');
      await fs.truncate(v.dataFile, 64 * 1024 * 1024);
    }
  });
  return { mnt, root, volumes };
}

const shared = new Map<number, Promise<GeneratedTree>>();

/**
 * One generated tree per size for the whole run (the listing and start-up benchmarks read the same
 * one, which is never written to); removed when the run's process exits.
 */
export function sharedTree(count: number): Promise<GeneratedTree> {
  let tree = shared.get(count);
  if (!tree) {
    tree = generateTree(count);
    shared.set(count, tree);
    tree.then((t) => process.once('exit', () => rmSync(t.mnt, { recursive: true, force: true })));
  }
  return tree;
}

export async function removeDir(dir: string): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
}
