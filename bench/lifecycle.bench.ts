/**
 * Clone, convert and compact through the daemon (HTTP on 127.0.0.1) against the bare tools on the
 * same files: `cp --sparse=always`, `cp --reflink=always` (on a loop-mounted XFS, as root),
 * `qemu-img convert`. Figures are throughput ratios daemon / bare (goal: at least 95%).
 * BENCH_GB (default 1) is the data written into the source volume; BENCH_REPS (default 3) the runs
 * of each side, alternated, of which the median counts.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { configWith } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';

const GiB = 1024 ** 3;
const OWNER = 'ffffffffffffffffffffffffffffffff';
const DATA_BYTES = Math.round(Number(process.env.BENCH_GB ?? 1) * GiB);
const REPS = Number(process.env.BENCH_REPS ?? 3);

interface Row {
  name: string;
  bare: string;
  bareSeconds: number;
  /** The bare tool plus `sync -f` of its output: what making the result durable costs. */
  bareDurableSeconds: number;
  daemonSeconds: number;
}

/** A daemon on a fresh tree in `base`, reached over real HTTP. */
class Bench {
  private constructor(
    readonly mnt: string,
    private readonly server: RunningServer,
  ) {}

  static async start(base: string): Promise<Bench> {
    const mnt = path.join(base, 'mnt');
    await fs.mkdir(path.join(mnt, 'a'), { recursive: true });
    await fs.writeFile(path.join(mnt, 'a', 'settings.json'), '{}');
    const config = configWith({ mnt, port: 0, logLevel: 'silent', rescanIntervalMs: 0 });
    return new Bench(mnt, await startServer(config, createLogger({ level: 'silent', format: 'json' })));
  }

  async post(endpoint: string, body: object): Promise<Record<string, unknown>> {
    const res = await fetch(`http://127.0.0.1:${this.server.port}/api/v1.0/${endpoint}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = (await res.json()) as Record<string, unknown>;
    if (!res.ok) throw new Error(`${endpoint} answered ${res.status}: ${JSON.stringify(json)}`);
    return json;
  }

  dataOf(vid: string, file = 'data.img'): string {
    return path.join(this.mnt, 'a', `vid.${vid}.elimg`, file);
  }

  /** A raw source volume holding DATA_BYTES of written data (clonable, so linked clones work too). */
  async source(): Promise<string> {
    const sizeGB = Math.ceil((DATA_BYTES * 1.25) / 1e9);
    const { vid } = (await this.post('create', { creatorID: OWNER, size: sizeGB, format: 'raw', clonable: true, alg: 'cp' })) as { vid: string };
    const chunk = 256 * 1024 ** 2;
    for (let off = 0; off < DATA_BYTES; off += chunk)
      await execa('qemu-io', ['-f', 'raw', '-c', `write -P ${((off / chunk) % 250) + 1} ${off} ${Math.min(chunk, DATA_BYTES - off)}`, this.dataOf(vid)]);
    await execa('sync');
    return vid;
  }

  async stop(): Promise<void> {
    await this.server.stop();
  }
}

async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Runs bare and daemon REPS times each, alternated (so the page cache favours neither), with an
 * untimed `prepare` before and `cleanup` + `sync` after every run. After the bare tool, `sync -f`
 * of the output's filesystem is timed apart: the daemon flushes what it must not lose (compact
 * replaces the only copy of an overlay's data), the bare tool never does.
 */
async function compare(
  name: string,
  bare: string,
  outDir: string,
  sides: { bare: () => Promise<unknown>; daemon: () => Promise<unknown>; cleanup: () => Promise<unknown>; prepare?: () => Promise<unknown> },
): Promise<Row> {
  const b: number[] = [];
  const bd: number[] = [];
  const d: number[] = [];
  for (let i = 0; i < REPS; i++) {
    await sides.prepare?.();
    await execa('sync');
    const tool = await seconds(sides.bare);
    b.push(tool);
    bd.push(tool + (await seconds(() => execa('sync', ['-f', outDir]))));
    await sides.cleanup();
    await sides.prepare?.();
    await execa('sync');
    d.push(await seconds(sides.daemon));
    await sides.cleanup();
  }
  return { name, bare, bareSeconds: median(b), bareDurableSeconds: median(bd), daemonSeconds: median(d) };
}

/** Clone (sparse copy), convert and compact on whatever filesystem holds the temp directory. */
async function onPlainFilesystem(base: string): Promise<Row[]> {
  const bench = await Bench.start(base);
  const rows: Row[] = [];
  try {
    const src = await bench.source();
    const srcData = bench.dataOf(src);
    const bareOut = path.join(base, 'bare-out');
    let made: string | null = null;
    const destroyMade = async () => {
      if (made) await bench.post('destroy', { volume_id: made });
      made = null;
      await fs.rm(bareOut, { force: true });
    };

    rows.push(
      await compare('clone, alg cp (sparse copy)', 'cp --sparse=always', base, {
        bare: () => execa('cp', ['--sparse=always', srcData, bareOut]),
        daemon: async () => (made = ((await bench.post('clone', { volume_id: src, creatorID: OWNER, alg: 'cp' })) as { vid: string }).vid),
        cleanup: destroyMade,
      }),
    );

    let target = '';
    rows.push(
      await compare('update/convert raw → qcow2', 'qemu-img convert -O qcow2', base, {
        prepare: async () => (target = made = ((await bench.post('clone', { volume_id: src, creatorID: OWNER, alg: 'cp' })) as { vid: string }).vid),
        bare: () => execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', bench.dataOf(target), bareOut]),
        daemon: () => bench.post('update/convert', { vid: target, creatorID: OWNER, format: 'qcow2' }),
        cleanup: destroyMade,
      }),
    );

    rows.push(
      await compare('overlay/compact', 'qemu-img convert -O qcow2 (overlay)', base, {
        prepare: async () => {
          target = made = ((await bench.post('clone', { volume_id: src, creatorID: OWNER, alg: 'overlay' })) as { vid: string }).vid;
          await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 0 64M', bench.dataOf(target, 'data.qcow2')]);
        },
        bare: () => execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', bench.dataOf(target, 'data.qcow2'), bareOut]),
        daemon: () => bench.post('overlay/compact', { vid: target, creatorID: OWNER }),
        cleanup: destroyMade,
      }),
    );
  } finally {
    await bench.stop();
  }
  return rows;
}

/** Clone by reflink on a loop-mounted XFS (root only). */
async function onReflinkFilesystem(base: string): Promise<Row[] | string> {
  if (process.getuid?.() !== 0) return 'not root: no loop-mounted XFS';
  const image = path.join(base, 'xfs.img');
  const mountpoint = path.join(base, 'xfs');
  await fs.mkdir(mountpoint);
  try {
    await execa('truncate', ['-s', `${Math.ceil((DATA_BYTES * 2.5) / GiB) + 1}G`, image]);
    await execa('mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
    await execa('mount', ['-o', 'loop', image, mountpoint]);
  } catch (err) {
    return `XFS could not be loop-mounted (${(err as Error).message.split('\n')[0]})`;
  }
  try {
    const bench = await Bench.start(mountpoint);
    try {
      const src = await bench.source();
      const bareOut = path.join(mountpoint, 'bare-out');
      let made: string | null = null;
      return [
        await compare('clone, alg cp (reflink, XFS)', 'cp --reflink=always', mountpoint, {
          bare: () => execa('cp', ['--reflink=always', bench.dataOf(src), bareOut]),
          daemon: async () => (made = ((await bench.post('clone', { volume_id: src, creatorID: OWNER, alg: 'cp' })) as { vid: string }).vid),
          cleanup: async () => {
            if (made) await bench.post('destroy', { volume_id: made });
            made = null;
            await fs.rm(bareOut, { force: true });
          },
        }),
      ];
    } finally {
      await bench.stop();
    }
  } finally {
    await execa('umount', [mountpoint]).catch(() => execa('umount', ['-l', mountpoint]));
  }
}

function table(rows: Row[]): string {
  const mbps = (s: number) => (DATA_BYTES / 1e6 / s).toFixed(0);
  const pct = (bare: number, daemon: number) => `${((bare / daemon) * 100).toFixed(1)}%`;
  const lines = [
    '| operation | bare tool | bare (s) | bare + sync (s) | daemon (s) | bare MB/s | daemon MB/s | daemon / bare | daemon / (bare + sync) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.name} | \`${r.bare}\` | ${r.bareSeconds.toFixed(3)} | ${r.bareDurableSeconds.toFixed(3)} | ${r.daemonSeconds.toFixed(3)} | ` +
        `${mbps(r.bareSeconds)} | ${mbps(r.daemonSeconds)} | ${pct(r.bareSeconds, r.daemonSeconds)} | ${pct(r.bareDurableSeconds, r.daemonSeconds)} |`,
    ),
  ];
  return lines.join('\n');
}

export default async function run(): Promise<void> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-bench-'));
  try {
    console.log(`data: ${(DATA_BYTES / GiB).toFixed(2)} GiB written into a raw volume; median of ${REPS} runs per side`);
    const rows = await onPlainFilesystem(path.join(base));
    const reflink = await onReflinkFilesystem(base);
    if (typeof reflink === 'string') console.log(`reflink clone not measured: ${reflink}`);
    else rows.push(...reflink);
    console.log(table(rows));
  } finally {
    await fs.rm(base, { recursive: true, force: true });
  }
}
