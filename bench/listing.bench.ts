/**
 * Listing and `info` over 10,000 volumes: the daemon (its live index, through HTTP on 127.0.0.1)
 * against a rescan-per-request baseline and against libvirt's dir storage pool over the same images.
 * Goals (issue 6): `accessible` under 10 ms at the median, and at least 100× faster than
 * `virsh vol-list --details`.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { API, cpuMsOf, startDaemon } from './lib/daemon-process.js';
import { closeConnections, postOk } from './lib/http.js';
import { startLibvirt } from './lib/libvirt.js';
import { emptyReport, type BenchOptions, type BenchReport } from './lib/report.js';
import { startRescanBaseline } from './lib/rescan-baseline.js';
import { formatMs, formatRatio, median, percentile, timeRuns } from './lib/stats.js';
import { barChart, type Bar } from './lib/svg-chart.js';
import { BENCH_CLIENT, eachLimited, removeDir, sharedTree, tempDir, type GeneratedVolume } from './lib/tree.js';

interface Series {
  system: string;
  how: string;
  runs: number[];
  ours?: boolean;
}

const pick = (volumes: GeneratedVolume[], i: number) => volumes[(i * 7919) % volumes.length];

export default async function listing({ quick, say }: BenchOptions): Promise<BenchReport> {
  const report = emptyReport('listing');
  const count = quick ? 1000 : 10_000;
  const listRuns = quick ? 10 : 50;
  say(`generating ${count} volumes`);
  const tree = await sharedTree(count);
  const list: Series[] = [];
  const info: Series[] = [];

  say('daemon: accessible and info through HTTP');
  const daemon = await startDaemon(tree.mnt, BENCH_CLIENT);
  let listedBytes = 0;
  let cpuPerListing = NaN;
  const loadBefore = os.loadavg()[0];
  try {
    const check = JSON.parse((await postOk(daemon.port, `${API}/accessible`, { client_uid: BENCH_CLIENT })).body.toString());
    if (check.length !== count) throw new Error(`accessible listed ${check.length} volumes, not ${count}`);
    const cpuBefore = await cpuMsOf(daemon.child.pid!);
    list.push({
      system: 'elemento-storage',
      how: 'POST /accessible (live index)',
      ours: true,
      runs: await timeRuns(listRuns, async () => (listedBytes = (await postOk(daemon.port, `${API}/accessible`, { client_uid: BENCH_CLIENT }, false)).bytes), 5),
    });
    cpuPerListing = ((await cpuMsOf(daemon.child.pid!)) - cpuBefore) / (listRuns + 5);
    info.push({
      system: 'elemento-storage',
      how: 'POST /info (live index)',
      ours: true,
      runs: await timeRuns(quick ? 50 : 200, (i) => postOk(daemon.port, `${API}/info`, { volume_id: pick(tree.volumes, i).uid }), 20),
    });
  } finally {
    await daemon.stop();
    closeConnections();
  }

  say('baseline: rescan per request');
  const baseline = await startRescanBaseline(tree.mnt);
  try {
    list.push({ system: 'rescan per request', how: 'readdir + every meta.json', runs: await timeRuns(quick ? 3 : 5, () => postOk(baseline.port, '/accessible', { client_uid: BENCH_CLIENT }, false), 1) });
    info.push({ system: 'rescan per request', how: 'find the directory + meta.json', runs: await timeRuns(quick ? 20 : 100, (i) => postOk(baseline.port, '/info', { volume_id: pick(tree.volumes, i).uid }), 5) });
  } finally {
    await baseline.close();
    closeConnections();
  }

  say('libvirt: dir storage pool over the same images (hard links)');
  const started = await startLibvirt();
  let refreshMs: number | null = null;
  if ('skipped' in started) report.notes.push(`libvirt column skipped: ${started.skipped}`);
  else {
    const { virsh } = started.libvirt;
    const poolDir = await tempDir('pool');
    try {
      // A dir pool lists the files of one directory: hard links put the same images (same inodes) there.
      await eachLimited(tree.volumes, 64, (v) => fs.link(v.dataFile, path.join(poolDir, `${v.uid}.${v.format === 'raw' ? 'img' : 'qcow2'}`)));
      const t0 = performance.now();
      await virsh(['pool-create-as', 'bench', 'dir', '--target', poolDir]);
      refreshMs = performance.now() - t0;
      const listed = (await virsh(['vol-list', '--details', 'bench'])).trim().split('\n').length;
      if (listed !== count) throw new Error(`virsh vol-list listed ${listed} volumes, not ${count}`);
      list.push({ system: 'libvirt dir pool', how: 'virsh vol-list --details', runs: await timeRuns(quick ? 2 : 5, () => virsh(['vol-list', '--details', 'bench'])) });
      info.push({
        system: 'libvirt dir pool',
        how: 'virsh vol-info',
        runs: await timeRuns(quick ? 10 : 30, (i) => {
          const v = pick(tree.volumes, i);
          return virsh(['vol-info', '--pool', 'bench', `${v.uid}.${v.format === 'raw' ? 'img' : 'qcow2'}`]);
        }, 2),
      });
      report.notes.push(`libvirt: pool-create-as (its scan of ${count} images) took ${formatMs(refreshMs)}; every virsh figure includes starting virsh (a few ms).`);
    } finally {
      await virsh(['pool-destroy', 'bench']).catch(() => undefined);
      await started.libvirt.stop();
      await removeDir(poolDir);
    }
  }

  const ours = (s: Series[]) => median(s[0].runs);
  const row = (s: Series, base: number) => [s.system, s.how, formatMs(median(s.runs)), formatMs(percentile(s.runs, 90)), String(s.runs.length), s.ours ? '1' : formatRatio(median(s.runs), base)];
  const columns = ['system', 'how', 'median', 'p90', 'runs', 'slower than the daemon'];
  report.tables.push({ title: `Listing all ${count} volumes (${(listedBytes / 1e6).toFixed(1)} MB of JSON)`, columns, rows: list.map((s) => row(s, ours(list))) });
  report.tables.push({ title: `info of one volume among ${count}`, columns, rows: info.map((s) => row(s, ours(info))) });

  report.notes.push(
    `the daemon used ${formatMs(cpuPerListing)} of CPU per listing (user + system, from /proc); load average ${loadBefore.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end, on ${os.cpus().length} CPUs.`,
  );
  const accessibleMedian = ours(list);
  report.goals.push({ goal: `accessible over ${count} volumes under 10 ms (median)`, met: accessibleMedian < 10, measured: `${formatMs(accessibleMedian)} median` });
  const libvirtList = list.find((s) => s.system.startsWith('libvirt'));
  if (libvirtList) {
    const ratio = median(libvirtList.runs) / accessibleMedian;
    report.goals.push({ goal: 'accessible ≥ 100× faster than virsh vol-list --details', met: ratio >= 100, measured: `${formatRatio(median(libvirtList.runs), accessibleMedian)} (${formatMs(median(libvirtList.runs))} vs ${formatMs(accessibleMedian)})` });
  } else report.goals.push({ goal: 'accessible ≥ 100× faster than virsh vol-list --details', met: false, measured: 'not measured: libvirt did not run' });

  const summary = (s: Series[]) => s.map((x) => ({ system: x.system, how: x.how, medianMs: median(x.runs), p90Ms: percentile(x.runs, 90), runs: x.runs.length }));
  report.figures = { volumes: count, listedBytes, daemonCpuMsPerListing: cpuPerListing, loadAverage: [loadBefore, os.loadavg()[0]], listing: summary(list), info: summary(info), libvirtPoolCreateMs: refreshMs };
  const bars = (s: Series[]): Bar[] => s.map((x) => ({ label: x.system, value: median(x.runs), text: formatMs(median(x.runs)), highlight: x.ours }));
  report.charts['listing.svg'] = barChart(
    [
      { title: `List all ${count} volumes (median)`, bars: bars(list) },
      { title: `info of one volume among ${count} (median)`, bars: bars(info) },
    ],
    { title: 'Listing and info: elemento-storage against its peers', log: true, note: 'Bars on a logarithmic scale; shorter is faster. HTTP on 127.0.0.1 for the daemon and the baseline; virsh for libvirt.' },
  );
  return report;
}
