/**
 * Create throughput: the daemon's `create` (through HTTP, one request after the other) against a
 * bare `qemu-img create` loop and libvirt's `vol-create-as` on a dir pool, all making the same
 * blank 1 GB qcow2 images on the same filesystem.
 * Goals (issue 6): at least as fast as libvirt, and at least 80% of the bare loop's rate.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import os from 'node:os';
import { API, cpuMsOf, startDaemon } from './lib/daemon-process.js';
import { closeConnections, postOk } from './lib/http.js';
import { startLibvirt } from './lib/libvirt.js';
import { emptyReport, type BenchOptions, type BenchReport } from './lib/report.js';
import { formatMs, median, nowMs } from './lib/stats.js';
import { barChart } from './lib/svg-chart.js';
import { BENCH_CLIENT, emptyTree, removeDir, tempDir } from './lib/tree.js';

const run = promisify(execFile);
const SIZE_BYTES = 1_000_000_000;

interface Result {
  system: string;
  how: string;
  /** Wall time of the whole batch, and each create's own time when it can be measured alone. */
  totalMs: number;
  each: number[];
  count: number;
  ours?: boolean;
}

const perSecond = (r: Result) => (r.count * 1000) / r.totalMs;

async function timed(count: number, one: (i: number) => Promise<unknown>): Promise<{ totalMs: number; each: number[] }> {
  const each: number[] = [];
  const started = nowMs();
  for (let i = 0; i < count; i++) {
    const t = nowMs();
    await one(i);
    each.push(nowMs() - t);
  }
  return { totalMs: nowMs() - started, each };
}

export default async function create({ quick, say }: BenchOptions): Promise<BenchReport> {
  const report = emptyReport('create');
  const count = quick ? 20 : 200;
  const results: Result[] = [];
  let daemonCpuPerCreate = NaN;
  const loadBefore = os.loadavg()[0];

  say(`bare loop: ${count} × qemu-img create`);
  const bareDir = await tempDir('bare');
  try {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(bareDir, 'warmup.qcow2'), String(SIZE_BYTES)]);
    const t = await timed(count, (i) => run('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(bareDir, `v${i}.qcow2`), String(SIZE_BYTES)]));
    results.push({ system: 'bare loop', how: 'qemu-img create, one after the other', count, ...t });
  } finally {
    await removeDir(bareDir);
  }

  say(`daemon: ${count} × POST /create`);
  const tree = await emptyTree('create');
  const daemon = await startDaemon(tree.mnt, BENCH_CLIENT);
  try {
    const body = { creatorID: BENCH_CLIENT, name: 'bench', private: false, readonly: false, shareable: false, bootable: false, clonable: false, alg: 'no', format: 'qcow2', bus: 'virtio', size: 1 };
    await postOk(daemon.port, `${API}/create`, body);
    const cpuBefore = await cpuMsOf(daemon.child.pid!);
    const t = await timed(count, () => postOk(daemon.port, `${API}/create`, body));
    daemonCpuPerCreate = ((await cpuMsOf(daemon.child.pid!)) - cpuBefore) / count;
    results.push({ system: 'elemento-storage', how: 'POST /create (HTTP, sequential)', count, ours: true, ...t });
    // Every size different: no blank image of that size made before, so qemu-img runs for each create.
    const fresh = await timed(count, (i) => postOk(daemon.port, `${API}/create`, { ...body, size: 2 + (i + 1) / 1e6 }));
    results.push({ system: 'elemento-storage, new sizes', how: 'POST /create, a size never made before each time', count, ...fresh });
  } finally {
    await daemon.stop();
    closeConnections();
    await removeDir(tree.mnt);
  }

  say(`libvirt: ${count} × vol-create-as`);
  const started = await startLibvirt();
  if ('skipped' in started) report.notes.push(`libvirt column skipped: ${started.skipped}`);
  else {
    const { virsh } = started.libvirt;
    const poolDir = await tempDir('pool');
    try {
      await virsh(['pool-create-as', 'bench', 'dir', '--target', poolDir]);
      const make = (name: string) => ['vol-create-as', 'bench', name, String(SIZE_BYTES), '--format', 'qcow2'];
      await virsh(make('warmup.qcow2'));
      const each = await timed(count, (i) => virsh(make(`a${i}.qcow2`)));
      results.push({ system: 'libvirt (virsh per create)', how: 'virsh vol-create-as, one process each', count, ...each });
      // The same creates in one virsh session: no process start per create (virsh's own `;` separator, not a shell).
      const script = Array.from({ length: count }, (_, i) => make(`b${i}.qcow2`).join(' ')).join(' ; ');
      const t0 = nowMs();
      await virsh([script]);
      results.push({ system: 'libvirt (one virsh session)', how: `${count} vol-create-as in one virsh`, count, totalMs: nowMs() - t0, each: [] });
    } finally {
      await virsh(['pool-destroy', 'bench']).catch(() => undefined);
      await started.libvirt.stop();
      await removeDir(poolDir);
    }
  }

  report.notes.push(
    `the daemon itself used ${formatMs(daemonCpuPerCreate)} of CPU per create (user + system, qemu-img not included); load average ${loadBefore.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end, on ${os.cpus().length} CPUs.`,
  );
  const daemonRate = perSecond(results.find((r) => r.ours)!);
  const bareRate = perSecond(results.find((r) => r.system === 'bare loop')!);
  const freshRate = perSecond(results.find((r) => r.system === 'elemento-storage, new sizes')!);
  report.notes.push(
    `the first blank image of each format and size is made by qemu-img, later ones of that size are written from its bytes (src/tools/blank-images.ts); with a size never made before for each create, the daemon made ${freshRate.toFixed(1)} creates/s, ${((100 * freshRate) / bareRate).toFixed(0)}% of the bare loop.`,
  );
  report.tables.push({
    title: `Creating ${count} blank 1 GB qcow2 volumes, one after the other`,
    columns: ['system', 'how', 'creates/s', 'median per create', 'total', 'daemon’s rate relative to it'],
    rows: results.map((r) => [r.system, r.how, perSecond(r).toFixed(1), r.each.length ? formatMs(median(r.each)) : 'n/a', formatMs(r.totalMs), r.ours ? '100%' : `${((100 * daemonRate) / perSecond(r)).toFixed(0)}%`]),
  });
  report.goals.push({ goal: 'create ≥ 80% of the bare qemu-img loop’s rate', met: daemonRate >= 0.8 * bareRate, measured: `${((100 * daemonRate) / bareRate).toFixed(0)}% (${daemonRate.toFixed(1)} vs ${bareRate.toFixed(1)} creates/s)` });
  const peers = results.filter((r) => r.system.startsWith('libvirt'));
  if (peers.length) {
    const best = peers.reduce((a, b) => (perSecond(a) >= perSecond(b) ? a : b));
    report.goals.push({ goal: 'create at least as fast as libvirt (its faster way)', met: daemonRate >= perSecond(best), measured: `${daemonRate.toFixed(1)} vs ${perSecond(best).toFixed(1)} creates/s (${best.system})` });
  } else report.goals.push({ goal: 'create at least as fast as libvirt', met: false, measured: 'not measured: libvirt did not run' });

  report.figures = { count, sizeBytes: SIZE_BYTES, daemonCpuMsPerCreate: daemonCpuPerCreate, loadAverage: [loadBefore, os.loadavg()[0]], results: results.map((r) => ({ system: r.system, how: r.how, perSecond: perSecond(r), medianMs: r.each.length ? median(r.each) : null, totalMs: r.totalMs })) };
  report.charts['create.svg'] = barChart([{ title: `Creates per second (${count} blank 1 GB qcow2 volumes, sequential)`, bars: results.map((r) => ({ label: r.system, value: perSecond(r), text: `${perSecond(r).toFixed(1)}/s`, highlight: r.ours })) }], {
    title: 'Create throughput: elemento-storage against its peers',
    note: 'Longer is faster.',
  });
  return report;
}
