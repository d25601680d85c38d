/**
 * Images in and out: upload (multipart create/upload, and one tus PATCH) and download
 * (GET /volumes/<vid>/data) of a 2 GB raw image through a real daemon process, against a plain
 * `cat` to and from the same disk, with the daemon's resident memory sampled throughout.
 * Goal (issue 3): at least 90% of cat's throughput, resident memory under 150 MB.
 * Size: ELEMENTO_BENCH_IMAGE_MB (default 2048).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { PROJECT_ROOT } from '../src/project.js';
import { NODE_FLAGS } from './lib/daemon-process.js';

const MB = 1024 * 1024;
const SIZE_MB = Number(process.env.ELEMENTO_BENCH_IMAGE_MB ?? 2048);
const OWNER = 'ffffffffffffffffffffffffffffffff';

/** Resident memory of a process, in MB, from /proc (VmRSS). */
function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/** Runs `fn` while sampling the daemon's RSS every 20 ms; returns seconds taken and peak RSS. */
async function measure(pid: number, fn: () => Promise<unknown>): Promise<{ seconds: number; peakMb: number }> {
  let peak = rssMb(pid);
  const timer = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 20);
  const start = process.hrtime.bigint();
  try {
    await fn();
  } finally {
    clearInterval(timer);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { seconds, peakMb: Math.max(peak, rssMb(pid)) };
}

/** A non-sparse image whose blocks differ (so neither side can skip holes or dedupe). */
async function makeImage(file: string): Promise<void> {
  const handle = await fs.open(file, 'w');
  const chunk = Buffer.alloc(8 * MB);
  for (let i = 0; i < SIZE_MB / 8; i++) {
    chunk.fill(i % 251 + 1);
    chunk.writeUInt32LE(i, 0);
    await handle.write(chunk);
  }
  await handle.close();
}

/** `cat src > dst`, the baseline: the kernel copies, nothing passes through node. */
function catTo(src: string, dst: string): Promise<void> {
  const out = openSync(dst, 'w');
  return new Promise<void>((resolve, reject) => {
    const child = spawn('cat', [src], { stdio: ['ignore', out, 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`cat exited ${code}`))));
  }).finally(() => closeSync(out));
}

/** The bare node:http pipe (bench/lib/bare-pipe-server.mjs) in its own process, as the daemon runs. */
async function startBarePipe(dir: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(PROJECT_ROOT, 'bench/lib/bare-pipe-server.mjs'), dir, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve) => child.stdout!.once('data', resolve));
  return child;
}

async function startDaemon(mnt: string, port: number): Promise<ChildProcess> {
  // With the service unit's V8 flags, as it runs in production.
  const child = spawn(process.execPath, [...NODE_FLAGS, path.join(PROJECT_ROOT, 'dist/src/main.js'), '--mnt', mnt, '--port', String(port), '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 200; i++) {
    if (await fetch(`http://127.0.0.1:${port}/api/v1.0/status`).then((r) => r.ok, () => false)) return child;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the daemon did not start');
}

export default async function run(): Promise<void> {
  await execa('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: PROJECT_ROOT });
  const work = path.join(PROJECT_ROOT, '.bench', 'images');
  await fs.rm(work, { recursive: true, force: true });
  const mnt = path.join(work, 'mnt');
  await fs.mkdir(path.join(mnt, 'a'), { recursive: true });
  await fs.writeFile(path.join(mnt, 'a', 'settings.json'), '{}');
  const src = path.join(work, 'source.img');
  await makeImage(src);
  const port = 17772 + Math.floor(Math.random() * 1000);
  const api = `http://127.0.0.1:${port}/api/v1.0`;
  const daemon = await startDaemon(mnt, port);
  const pid = daemon.pid!;
  // In a fresh directory of the same root as the daemon's volumes: where a file lands on the disk matters.
  const bareDir = path.join(mnt, 'a', 'bare-pipe');
  await fs.mkdir(bareDir);
  const bare = await startBarePipe(bareDir, port + 1000);
  const bareUrl = `http://127.0.0.1:${port + 1000}`;
  const rows: string[][] = [];
  const row = (what: string, r: { seconds: number; peakMb: number }, base?: number) =>
    rows.push([what, `${(SIZE_MB / r.seconds).toFixed(0)} MB/s`, base ? `${((base / r.seconds) * 100).toFixed(0)}%` : '(baseline)', `${r.peakMb.toFixed(0)} MB`]);
  try {
    const idle = rssMb(pid);
    const catIn = await measure(pid, () => catTo(src, path.join(mnt, 'a', 'cat-copy.img')));
    row('upload baseline: cat source > disk', catIn);
    await fs.rm(path.join(mnt, 'a', 'cat-copy.img'));
    // The daemon flushes an image before publishing it: the fair baseline for an upload flushes too.
    const catSync = await measure(pid, async () => {
      await catTo(src, path.join(mnt, 'a', 'cat-copy.img'));
      await execa('sync', [path.join(mnt, 'a', 'cat-copy.img')]);
    });
    row('upload baseline: cat source > disk; sync', catSync);
    await fs.rm(path.join(mnt, 'a', 'cat-copy.img'));

    // The ceiling: the same curl upload into a bare node:http server that only pipes the body to a file.
    row('upload ceiling: bare node:http, body piped to a file (flushed)', await measure(bare.pid!, () => execa('curl', ['-sS', '--fail', '-X', 'POST', '-T', src, '-H', 'Content-Type: application/octet-stream', `${bareUrl}/bare.img`])), catSync.seconds);

    let vid = '';
    const raw = await measure(pid, async () => {
      const { stdout } = await execa('curl', ['-sS', '--fail-with-body', '-X', 'POST', '-T', src, '-H', 'Content-Type: application/octet-stream', `${api}/create/upload?creatorID=${OWNER}&format=raw&name=bench`]);
      vid = JSON.parse(stdout).vid;
    });
    row('upload: create/upload (raw body)', raw, catSync.seconds);

    const up = await measure(pid, async () => {
      await execa('curl', ['-sS', '--fail-with-body', '-F', `fields=${JSON.stringify({ creatorID: OWNER, format: 'raw', name: 'bench' })}`, '-F', `file=@${src}`, `${api}/create/upload`]);
    });
    row('upload: create/upload (multipart, raw)', up, catSync.seconds);

    const tus = await measure(pid, async () => {
      const meta = `endpoint ${Buffer.from('create/upload').toString('base64')},fields ${Buffer.from(JSON.stringify({ creatorID: OWNER, format: 'raw' })).toString('base64')}`;
      const created = await fetch(`${api}/files`, { method: 'POST', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(SIZE_MB * MB), 'Upload-Metadata': meta } });
      const location = created.headers.get('location')!;
      await execa('curl', ['-sS', '--fail-with-body', '-X', 'PATCH', '-T', src, '-H', 'Tus-Resumable: 1.0.0', '-H', 'Upload-Offset: 0', '-H', 'Content-Type: application/offset+octet-stream', `http://127.0.0.1:${port}${location}`]);
    });
    row('upload: tus (one PATCH, raw)', tus, catSync.seconds);

    const data = path.join(mnt, 'a', `vid.${vid}.elimg`, 'data.img');
    const catOut = await measure(pid, () => catTo(data, path.join(work, 'cat-out.img')));
    row('download baseline: cat volume > file', catOut);
    row('download ceiling: bare node:http, file piped to the response', await measure(bare.pid!, () => execa('curl', ['-sS', '--fail', '-o', path.join(work, 'bare-out.img'), `${bareUrl}/bare.img`])), catOut.seconds);
    await fs.rm(path.join(work, 'bare-out.img'));
    const down = await measure(pid, () => execa('curl', ['-sS', '--fail', '-o', path.join(work, 'download.img'), `${api}/volumes/${vid}/data`]));
    row('download: GET /volumes/<vid>/data', down, catOut.seconds);
    await execa('cmp', [src, path.join(work, 'download.img')]);

    console.log(`image: ${SIZE_MB} MB raw; daemon RSS idle ${idle.toFixed(0)} MB; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}; ${os.cpus().length} CPUs`);
    console.log('uploads are compared with cat + sync (the daemon flushes before it publishes), the download with cat; the ceilings are a bare node:http server that only pipes');
    console.log('| transfer | throughput | vs cat | peak RSS (daemon, or the bare server) |');
    console.log('| --- | --- | --- | --- |');
    for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  } finally {
    bare.kill('SIGTERM');
    daemon.kill('SIGTERM');
    await new Promise((r) => daemon.once('exit', r));
    await fs.rm(work, { recursive: true, force: true });
  }
}
