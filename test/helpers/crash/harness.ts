import { startTestDaemon } from '../daemon.js';
import { OTHER, OWNER } from '../tree.js';
import { spawnDaemon, stopDaemon, type DaemonProcess } from '../process.js';
import { apiOf, CRASH_NODE, CRASH_VM, exportViolations, type CephPool, lockViolations, settledViolations, treeViolations, type Api } from './invariants.js';
import { closeFixtures, CRASH_OPERATIONS, type CrashOperation, type Subject } from './operations.js';

/** What one trial found. `crashed` is false when the daemon never reached the armed point. */
export interface TrialResult {
  operation: string;
  point: string;
  crashed: boolean;
  violations: string[];
  ms: number;
}

/** A small deterministic generator (mulberry32), so a soak run is reproduced from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Volumes kept between trials; the rest are destroyed by the check (which proves destroy still works). */
const KEEP_VOLUMES = 4;

/**
 * Kills the real daemon process with SIGKILL and restarts it, trial after trial, on one tree.
 * A trial: a healthy daemon prepares the operation's subject; a daemon armed with a fault point
 * (or none, for a random kill) runs it and dies; a healthy daemon starts on what it left and the
 * invariants are checked (that daemon then prepares the next trial).
 */
export class CrashHarness {
  private healthy: { api: Api; stop(): Promise<void> } | null = null;
  private readonly env: Record<string, string>;
  private readonly operations: CrashOperation[];
  /** The control port of the tgtd the daemons export to, when they export. */
  private readonly tgtControlPort?: number;
  /** The Ceph pool of the daemons' Ceph volumes, when they have one. */
  private readonly ceph?: CephPool;

  /**
   * `restart: 'process'` restarts a real daemon process after each kill (the soak);
   * `'in-process'` runs the same start-up (sweep, scan, watch) in this process, which is quicker (npm test).
   * Without `exports`, no iSCSI exporter: the trials are about the tree. With it (a tgtd's control
   * port and portal), every daemon process exports to that tgtd and the checks compare markers and targets.
   */
  constructor(
    private readonly mnt: string,
    private readonly restart: 'process' | 'in-process' = 'process',
    private readonly staleMs = 2000,
    opts: { operations?: CrashOperation[]; exports?: { controlPort: number; portal: string }; ceph?: CephPool } = {},
  ) {
    this.operations = opts.operations ?? CRASH_OPERATIONS;
    this.tgtControlPort = opts.exports?.controlPort;
    const exporter: Record<string, string> = opts.exports
      ? { ELEMENTO_EXPORTER: 'tgt', ELEMENTO_TGT_CONTROL_PORT: String(opts.exports.controlPort), ELEMENTO_ISCSI_PORTAL: opts.exports.portal, ELEMENTO_EXPORT_HEARTBEAT_MS: '200' }
      : { ELEMENTO_EXPORTER: 'none' };
    if (opts.exports && restart !== 'process') throw new Error('exporting trials restart real daemon processes');
    this.ceph = opts.ceph;
    const ceph: Record<string, string> = opts.ceph ? { ELEMENTO_CEPH_POOL: opts.ceph.pool, ELEMENTO_CEPH_CONF: opts.ceph.conf, ELEMENTO_CEPH_ID: opts.ceph.id } : {};
    this.env = { ELEMENTO_LOCK_STALE_MS: String(staleMs), ELEMENTO_LOG_LEVEL: 'info', ...exporter, ...ceph };
  }

  private spawn(faults = ''): Promise<DaemonProcess> {
    return spawnDaemon(['--mnt', this.mnt], { ...this.env, ELEMENTO_FAULTS: faults });
  }

  private async healthyDaemon(): Promise<Api> {
    if (!this.healthy && this.restart === 'process') {
      const d = await this.spawn();
      this.healthy = { api: d, stop: () => stopDaemon(d) };
    } else if (!this.healthy) {
      const ceph = this.ceph ? { cephPool: this.ceph.pool, cephConf: this.ceph.conf, cephId: this.ceph.id } : {};
      const d = await startTestDaemon(this.mnt, { lockStaleMs: this.staleMs, ...ceph });
      this.healthy = { api: apiOf(d), stop: () => d.stop() };
    }
    return this.healthy!.api;
  }

  private async stopHealthy(): Promise<void> {
    await this.healthy?.stop();
    this.healthy = null;
  }

  /** Waits for a daemon to die at its fault point; stops it and answers false if it never does. */
  private async died(d: DaemonProcess, withinMs: number): Promise<boolean> {
    const end = await Promise.race([d.exited, sleep(withinMs).then(() => null)]);
    if (end) return end.signal === 'SIGKILL';
    await stopDaemon(d);
    return false;
  }

  /** Kills the daemon at `spec` (`point` or `point>recoveryPoint`) inside `op`, then checks. */
  async pointTrial(op: CrashOperation, spec: string): Promise<TrialResult> {
    const started = Date.now();
    const [point, recoveryPoint] = spec.split('>');
    const subject = await op.setup(await this.healthyDaemon(), this.mnt);
    await this.stopHealthy();
    let crashed: boolean;
    try {
      const faulty = await this.spawn(point);
      await op.run(faulty, subject).catch(() => null); // the connection drops when the daemon dies
      crashed = await this.died(faulty, 5000);
    } catch (err) {
      // Died in its start-up sweep: what the previous trial left passed through the point.
      return { operation: op.name, point: spec, crashed: false, violations: [`the daemon died at start: ${(err as Error).message.split('\n')[0]}`, ...(await this.check(op, subject))], ms: Date.now() - started };
    }
    if (crashed && recoveryPoint) {
      // The restarted daemon recovers what the first left and dies in its recovery: at start, or
      // once the dead holder's lock is stale.
      try {
        crashed = await this.died(await this.spawn(recoveryPoint), this.staleMs * 3 + 3000);
      } catch (err) {
        crashed = (err as { signal?: string }).signal === 'SIGKILL';
      }
    }
    const violations = await this.check(op, subject);
    return { operation: op.name, point: spec, crashed, violations, ms: Date.now() - started };
  }

  /**
   * Runs a stream of random operations (setup and run of random table entries, `workers` at a
   * time) and kills the daemon after a random delay, then checks.
   */
  async randomTrial(random: () => number, workers = 3, maxDelayMs = 2500): Promise<TrialResult> {
    const started = Date.now();
    await this.healthyDaemon();
    await this.stopHealthy();
    const d = await this.spawn();
    let alive = true;
    const worker = async () => {
      while (alive) {
        const op = this.operations[Math.floor(random() * this.operations.length)];
        try {
          await op.run(d, await op.setup(d, this.mnt));
        } catch {
          // a 507 in setup, or the connection dropped by the kill
        }
      }
    };
    const stream = Promise.all(Array.from({ length: workers }, worker));
    const delay = 100 + Math.floor(random() * maxDelayMs);
    await sleep(delay);
    d.child.kill('SIGKILL');
    alive = false;
    await d.exited;
    await stream;
    const violations = await this.check(null, {});
    return { operation: 'random', point: `kill after ${delay} ms`, crashed: true, violations, ms: Date.now() - started };
  }

  /** The invariants, on a freshly started healthy daemon; then trims the tree for the next trial. */
  private async check(op: CrashOperation | null, subject: Subject): Promise<string[]> {
    const api: Api = await this.healthyDaemon();
    const port = this.tgtControlPort;
    const invariants = async () => [...(await treeViolations(api, this.ceph)), ...(port ? await exportViolations(api, port) : [])];
    const out = await settledViolations(invariants, this.staleMs * 2 + 3000);
    if (op?.verify) out.push(...(await op.verify(api, subject)));
    out.push(...(await lockViolations(api, this.staleMs)));
    out.push(...(await this.trim(api)));
    return out;
  }

  /**
   * Keeps a few standalone volumes for the next trial and destroys the rest, linked clones before
   * their bases, each detached first from the harness's VM (a destroy of an attached volume is refused).
   */
  private async trim(api: Api): Promise<string[]> {
    const out: string[] = [];
    const listed = (await api.post('accessible', { client_uid: 'f'.repeat(32) })).body as Array<{ volumeID: string; base?: string }>;
    const bases = new Set(listed.map((v) => v.base));
    const keep = new Set(listed.filter((v) => !v.base && !bases.has(v.volumeID)).slice(0, KEEP_VOLUMES));
    const drop = listed.filter((v) => !keep.has(v)).sort((a, b) => Number(!!b.base) - Number(!!a.base));
    for (const v of drop) {
      if (this.tgtControlPort)
        for (const client of [OWNER, OTHER]) {
          const res = await api.post('unexport', { volume_id: v.volumeID, client_uid: client });
          if (res.status !== 200) out.push(`unexport of ${v.volumeID} after the restart answered ${res.status}: ${JSON.stringify(res.body)}`);
        }
      const detached = await api.post('detach', { volume_id: v.volumeID, client_uid: 'f'.repeat(32), node: CRASH_NODE, vm_id: CRASH_VM });
      if (detached.status !== 200) out.push(`detach of ${v.volumeID} after the restart answered ${detached.status}`);
      const res = await api.post('destroy', { volume_id: v.volumeID });
      if (res.status !== 200) out.push(`destroy of ${v.volumeID} after the restart answered ${res.status}: ${JSON.stringify(res.body)}`);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.stopHealthy();
    await closeFixtures();
  }
}
