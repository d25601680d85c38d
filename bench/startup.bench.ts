/**
 * Start-up with 10,000 volumes: time from spawning `node dist/src/main.js` to its first complete
 * `accessible` answer, and its memory (resident at ready, and the peak after it settled and served
 * listings). Goals (issue 6): ready within 1.5 s, under 150 MB resident.
 */
import os from 'node:os';
import { API, cpuMsOf, inotifyWatchesOf, memoryOf, startDaemon, type DaemonProcess } from './lib/daemon-process.js';
import { closeConnections, postOk } from './lib/http.js';
import { emptyReport, type BenchOptions, type BenchReport } from './lib/report.js';
import { formatMs, median } from './lib/stats.js';
import { barChart } from './lib/svg-chart.js';
import { BENCH_CLIENT, sharedTree } from './lib/tree.js';

interface Start {
  listeningMs: number;
  readyMs: number;
  treeLoadedMs: number;
  /** CPU time (user + system) the daemon had used when it was ready: what the start costs without the machine's other load. */
  cpuAtReadyMs: number;
  loadAverage: number;
  rssAtReadyMB: number;
  rssSettledMB: number;
  peakMB: number;
  watches: number;
}

/** Lets the watcher finish its crawl (it may still run after the daemon answers), then serves listings. */
async function settle(d: DaemonProcess, listings: number): Promise<void> {
  await new Promise((r) => setTimeout(r, 3000));
  for (let i = 0; i < listings; i++) await postOk(d.port, `${API}/accessible`, { client_uid: BENCH_CLIENT });
}

export default async function startup({ quick, say }: BenchOptions): Promise<BenchReport> {
  const report = emptyReport('startup');
  const count = quick ? 1000 : 10_000;
  const starts = quick ? 2 : 5;
  say(`generating ${count} volumes`);
  const tree = await sharedTree(count);
  const results: Start[] = [];
  for (let i = 0; i < starts; i++) {
    say(`start ${i + 1}/${starts}`);
    const d = await startDaemon(tree.mnt, BENCH_CLIENT);
    try {
      const atReady = await memoryOf(d.child.pid!);
      const cpuAtReadyMs = await cpuMsOf(d.child.pid!);
      await settle(d, 20);
      const settled = await memoryOf(d.child.pid!);
      results.push({
        listeningMs: d.listeningMs,
        readyMs: d.readyMs,
        treeLoadedMs: d.milestones['tree loaded'] ?? NaN,
        cpuAtReadyMs,
        loadAverage: os.loadavg()[0],
        rssAtReadyMB: atReady.rssMB,
        rssSettledMB: settled.rssMB,
        peakMB: settled.peakMB,
        watches: await inotifyWatchesOf(d.child.pid!),
      });
    } finally {
      await d.stop();
      closeConnections();
    }
  }
  const m = (f: (s: Start) => number) => median(results.map(f));
  const mb = (v: number) => `${v.toFixed(0)} MB`;
  report.tables.push({
    title: `Start-up with ${count} volumes (median of ${starts} starts; the tree is in the page cache)`,
    columns: ['measure', 'median', 'each start'],
    rows: [
      ['index loaded (log `tree loaded`)', formatMs(m((s) => s.treeLoadedMs)), results.map((s) => formatMs(s.treeLoadedMs)).join(', ')],
      ['listening (log `listening`)', formatMs(m((s) => s.listeningMs)), results.map((s) => formatMs(s.listeningMs)).join(', ')],
      ['ready: first full `accessible` answered', formatMs(m((s) => s.readyMs)), results.map((s) => formatMs(s.readyMs)).join(', ')],
      ['CPU used by then (user + system)', formatMs(m((s) => s.cpuAtReadyMs)), results.map((s) => formatMs(s.cpuAtReadyMs)).join(', ')],
      ['machine load average (1 min)', m((s) => s.loadAverage).toFixed(1), results.map((s) => s.loadAverage.toFixed(1)).join(', ')],
      ['resident memory at ready', mb(m((s) => s.rssAtReadyMB)), results.map((s) => mb(s.rssAtReadyMB)).join(', ')],
      ['resident after 3 s and 20 listings', mb(m((s) => s.rssSettledMB)), results.map((s) => mb(s.rssSettledMB)).join(', ')],
      ['peak resident (VmHWM)', mb(m((s) => s.peakMB)), results.map((s) => mb(s.peakMB)).join(', ')],
      ['inotify watches held', String(m((s) => s.watches)), results.map((s) => String(s.watches)).join(', ')],
    ],
  });
  const ready = m((s) => s.readyMs);
  const peak = m((s) => s.peakMB);
  report.goals.push({ goal: `ready within 1.5 s with ${count} volumes`, met: ready <= 1500, measured: `${formatMs(ready)} median` });
  report.goals.push({ goal: `under 150 MB resident with ${count} volumes`, met: peak < 150, measured: `${mb(peak)} peak (VmHWM), ${mb(m((s) => s.rssSettledMB))} settled, median` });
  report.figures = { volumes: count, starts: results };
  report.charts['startup.svg'] = barChart(
    [
      { title: `Time to ready with ${count} volumes (median)`, bars: [
        { label: 'index loaded', value: m((s) => s.treeLoadedMs), text: formatMs(m((s) => s.treeLoadedMs)), highlight: true },
        { label: 'ready (first accessible)', value: ready, text: formatMs(ready), highlight: true },
        { label: 'goal', value: 1500, text: '1.50 s' },
      ] },
      { title: 'Resident memory (median)', bars: [
        { label: 'at ready', value: m((s) => s.rssAtReadyMB), text: mb(m((s) => s.rssAtReadyMB)), highlight: true },
        { label: 'peak after 20 listings', value: peak, text: mb(peak), highlight: true },
        { label: 'goal', value: 150, text: '150 MB' },
      ] },
    ],
    { title: 'Start-up of elemento-storage with 10,000 volumes', note: 'Grey bars are the goals; shorter is better.' },
  );
  return report;
}
