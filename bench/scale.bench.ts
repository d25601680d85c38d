/**
 * The index at scale: one tree and one five times larger (10,000 and 50,000 volumes over 4 roots;
 * --quick: 1,000 and 5,000), the built daemon on each, side by side. The small tree is the baseline:
 * each figure of the large one is given as a ratio to it. A cost that grows with the tree shows a
 * ratio near 5 (linear); per-request costs should stay near 1; a ratio well above 5 is super-linear.
 * Measured: start-up to the first `accessible`, resident memory, inotify watches, idle CPU and the
 * periodic rescans (ELEMENTO_RESCAN_MS=5000 here: how long one takes, and how long the daemon waits
 * after it, src/store/index-watch.ts), `cancreate`, `status`, a destroy and a writable
 * attach one at a time, and bursts of 100 parallel creates and destroys (every answer must be 200).
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { API, cpuMsOf, inotifyWatchesOf, memoryOf, startDaemon, type DaemonProcess } from './lib/daemon-process.js';
import { closeConnections, postJson, postOk } from './lib/http.js';
import { emptyReport, type BenchOptions, type BenchReport } from './lib/report.js';
import { formatMs, formatRatio, median, nowMs, timeRuns } from './lib/stats.js';
import { BENCH_CLIENT, eachLimited, removeDir, tempDir } from './lib/tree.js';

const ROOTS = 4;
const BURST = 100;
const OWNER = 'e0000000000000000000000000000001';

/** `count` raw volumes (1 MiB, sparse) spread over ROOTS roots; one in five public. */
async function scaleTree(count: number): Promise<string> {
  const mnt = await tempDir('scale');
  const roots = Array.from({ length: ROOTS }, (_, r) => path.join(mnt, `pool${r}`));
  for (const root of roots) {
    await fs.mkdir(root);
    await fs.writeFile(path.join(root, 'settings.json'), JSON.stringify({ 'file-system': 'default' }));
  }
  await eachLimited(Array.from({ length: count }, (_, i) => i), 64, async (i) => {
    const uid = randomBytes(16).toString('hex');
    const dir = path.join(roots[i % ROOTS], `vid.${uid}.elimg`);
    await fs.mkdir(dir);
    const meta = { volumeID: uid, creatorID: i % 10 === 0 ? BENCH_CLIENT : OWNER, name: `v${i}`, size: 1 << 20, format: 'raw', private: i % 5 !== 0, bootable: false, readonly: false, shareable: false, clonable: true, alg: 'no', bus: 'virtio', cloudinit: false, ceph: false };
    await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify(meta));
    await fs.writeFile(path.join(dir, 'data.img'), '');
    await fs.truncate(path.join(dir, 'data.img'), 1 << 20);
  });
  return mnt;
}

interface Figures {
  volumes: number;
  readyMs: number;
  rssAtReadyMB: number;
  watches: number;
  idleCpuPercent: number;
  /** The periodic rescans seen (debug log): how long each took and the wait the daemon chose after it. */
  rescanMs: number;
  rescanEveryMs: number;
  cancreateMs: number;
  statusMs: number;
  destroyMs: number;
  attachMs: number;
  burstCreateMs: number;
  burstDestroyMs: number;
  burstFailures: number;
  peakMB: number;
}

const create = (d: DaemonProcess, i: number) => postJson(d.port, `${API}/create`, { creatorID: OWNER, name: `burst${i}`, size: 0.001, format: 'raw' });
const vidOf = (body: Buffer) => JSON.parse(body.toString()).vid as string;

async function measure(count: number, idleMs: number, runs: number, say: (line: string) => void): Promise<Figures> {
  say(`generating ${count} volumes over ${ROOTS} roots`);
  const mnt = await scaleTree(count);
  const d = await startDaemon(mnt, BENCH_CLIENT, { ELEMENTO_RESCAN_MS: '5000', ELEMENTO_LOG_LEVEL: 'debug' });
  const rescans: Array<{ ms: number; nextInMs: number }> = [];
  readline.createInterface({ input: d.child.stdout! }).on('line', (line) => {
    if (line.includes('"periodic rescan"')) rescans.push(JSON.parse(line));
  });
  try {
    const pid = d.child.pid!;
    const atReady = await memoryOf(pid);
    const watches = await inotifyWatchesOf(pid);
    say(`idle for ${idleMs / 1000} s (periodic rescans)`);
    const cpu0 = await cpuMsOf(pid);
    const t0 = nowMs();
    await new Promise((r) => setTimeout(r, idleMs));
    const idleCpuPercent = (100 * ((await cpuMsOf(pid)) - cpu0)) / (nowMs() - t0);
    const cancreateMs = median(await timeRuns(runs, () => postOk(d.port, `${API}/cancreate`, { size: 1 }), 2));
    const statusMs = median(await timeRuns(runs, () => fetch(`http://127.0.0.1:${d.port}${API}/status`).then((r) => r.arrayBuffer())));
    say('one at a time: destroys and writable attaches');
    const made: string[] = [];
    for (let i = 0; i < 2 * runs; i++) made.push(vidOf((await postOk(d.port, `${API}/create`, { creatorID: OWNER, name: `one${i}`, size: 0.001, format: 'raw' })).body));
    // As a VM start comes: the root's directory unchanged for a moment (its listing for linked clones then kept, src/volumes/unknown-volumes.ts).
    await new Promise((r) => setTimeout(r, 1500));
    const use = (i: number) => ({ volume_id: made[runs + i], client_uid: OWNER, node: 'bench-node', vm_id: 'bench-vm' });
    const attachMs = median(await timeRuns(runs, (i) => postOk(d.port, `${API}/attach`, use(i)).then(() => postOk(d.port, `${API}/detach`, use(i)))));
    const destroyMs = median(await timeRuns(runs, (i) => postOk(d.port, `${API}/destroy`, { volume_id: made[i] })));
    say(`bursts of ${BURST} parallel creates and destroys`);
    let started = nowMs();
    const created = await Promise.all(Array.from({ length: BURST }, (_, i) => create(d, i)));
    const burstCreateMs = nowMs() - started;
    const ok = created.filter((a) => a.status === 200).map((a) => vidOf(a.body));
    started = nowMs();
    const destroyed = await Promise.all(ok.map((vid) => postJson(d.port, `${API}/destroy`, { volume_id: vid })));
    const burstDestroyMs = nowMs() - started;
    const burstFailures = created.length - ok.length + destroyed.filter((a) => a.status !== 200).length;
    const { peakMB } = await memoryOf(pid);
    const rescan = rescans[0] ?? { ms: NaN, nextInMs: NaN };
    return { volumes: count, readyMs: d.readyMs, rssAtReadyMB: atReady.rssMB, watches, idleCpuPercent, rescanMs: rescan.ms, rescanEveryMs: rescan.nextInMs + rescan.ms, cancreateMs, statusMs, destroyMs, attachMs, burstCreateMs, burstDestroyMs, burstFailures, peakMB };
  } finally {
    await d.stop();
    closeConnections();
    await removeDir(mnt);
  }
}

export default async function scale({ quick, say }: BenchOptions): Promise<BenchReport> {
  const report = emptyReport('scale');
  const small = quick ? 1000 : 10_000;
  const idleMs = quick ? 10_000 : 30_000;
  const runs = quick ? 5 : 15;
  const s = await measure(small, idleMs, runs, say);
  const l = await measure(5 * small, idleMs, runs, say);
  const mb = (v: number) => `${v.toFixed(0)} MB`;
  const pct = (v: number) => `${v.toFixed(1)} %`;
  const rows: Array<[string, (f: Figures) => number, (v: number) => string]> = [
    ['ready (first accessible)', (f) => f.readyMs, formatMs],
    ['resident at ready', (f) => f.rssAtReadyMB, mb],
    ['inotify watches', (f) => f.watches, String],
    ['idle CPU (first 10-30 s: one rescan)', (f) => f.idleCpuPercent, pct],
    ['periodic rescan (ELEMENTO_RESCAN_MS=5000)', (f) => f.rescanMs, formatMs],
    ['periodic rescan: one every', (f) => f.rescanEveryMs, formatMs],
    ['periodic rescan: share of the time', (f) => (100 * f.rescanMs) / f.rescanEveryMs, pct],
    ['cancreate (median)', (f) => f.cancreateMs, formatMs],
    ['status (median)', (f) => f.statusMs, formatMs],
    ['destroy, one at a time (median)', (f) => f.destroyMs, formatMs],
    ['writable attach + detach (median)', (f) => f.attachMs, formatMs],
    [`${BURST} parallel creates`, (f) => f.burstCreateMs, formatMs],
    [`${BURST} parallel destroys`, (f) => f.burstDestroyMs, formatMs],
    ['peak resident', (f) => f.peakMB, mb],
  ];
  report.tables.push({
    title: `The index at ${s.volumes} and ${l.volumes} volumes (${ROOTS} roots): the large tree against the small one (linear growth: ×5)`,
    columns: ['figure', `${s.volumes} volumes`, `${l.volumes} volumes`, 'ratio'],
    rows: rows.map(([name, get, fmt]) => [name, fmt(get(s)), fmt(get(l)), formatRatio(get(l), get(s))]),
  });
  report.goals.push({ goal: `bursts of ${BURST} parallel creates and destroys all answer 200 at ${l.volumes} volumes`, met: s.burstFailures + l.burstFailures === 0, measured: `${s.burstFailures} + ${l.burstFailures} failures` });
  report.goals.push({ goal: 'cancreate does not grow with the tree (ratio under 2)', met: l.cancreateMs / s.cancreateMs < 2, measured: formatRatio(l.cancreateMs, s.cancreateMs) });
  const duty = (f: Figures) => (100 * f.rescanMs) / f.rescanEveryMs;
  report.goals.push({ goal: 'periodic rescans take at most 10 % of the time, whatever the tree (paced)', met: duty(l) <= 10 && duty(s) <= 10, measured: `${pct(duty(s))} and ${pct(duty(l))}` });
  report.figures = { small: s, large: l };
  return report;
}
