import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { postJson } from './http.js';
import { nowMs } from './stats.js';

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAIN = path.join(PROJECT_ROOT, 'dist', 'src', 'main.js');
/** The node flags of the service unit's ExecStart (scripts/elemento-storage.service): the daemon measured as it runs. */
export const NODE_FLAGS = ['--max-semi-space-size=4', '--initial-heap-size=64'];
/** The unit's Environment= for the C allocator (see docs/decisions.md): large buffers given back to the system at once. */
export const DAEMON_ENV = { MALLOC_MMAP_THRESHOLD_: '131072' };
export const API = '/api/v1.0';

let built: Promise<void> | null = null;

/** Compiles the daemon once per run: the benchmarks measure `node dist/src/main.js`, as a service runs it. */
export function ensureBuilt(): Promise<void> {
  built ??= promisify(execFile)(process.execPath, [path.join(PROJECT_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], {
    cwd: PROJECT_ROOT,
  }).then(() => undefined);
  return built;
}

export interface DaemonProcess {
  child: ChildProcess;
  port: number;
  /** ms from spawn to the `listening` log line, and to the first complete `accessible` answer. */
  listeningMs: number;
  readyMs: number;
  /** ms from spawn to each log message seen, first occurrence (e.g. `tree loaded`). */
  milestones: Record<string, number>;
  stop(): Promise<void>;
}

/** Resident and peak resident memory of a process, in MB (from /proc). */
export async function memoryOf(pid: number): Promise<{ rssMB: number; peakMB: number }> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMB: kb('VmRSS') / 1024, peakMB: kb('VmHWM') / 1024 };
}

/** CPU time a process has used so far (user + system), in ms; /proc counts in ticks of 10 ms. */
export async function cpuMsOf(pid: number): Promise<number> {
  const fields = (await fs.readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /, '').split(' ');
  // After the command name: field 14 (utime) and 15 (stime) of proc(5) are the 12th and 13th here.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** How many inotify watches a process holds (lines `inotify wd:` of its inotify descriptors). */
export async function inotifyWatchesOf(pid: number): Promise<number> {
  let watches = 0;
  for (const fd of await fs.readdir(`/proc/${pid}/fdinfo`)) {
    const info = await fs.readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
    watches += info.split('\n').filter((l) => l.startsWith('inotify wd:')).length;
  }
  return watches;
}

/**
 * Starts the built daemon on `mnt` with an ephemeral port (read from its JSON log) and waits
 * until `accessible` answers for `client`: that is the moment it is ready to serve.
 */
export async function startDaemon(mnt: string, client: string, env: Record<string, string> = {}): Promise<DaemonProcess> {
  await ensureBuilt();
  const started = nowMs();
  const child = spawn(process.execPath, [...NODE_FLAGS, MAIN, '--mnt', mnt, '--port', '0', '--log-format', 'json'], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...DAEMON_ENV, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const milestones: Record<string, number> = {};
  const stderr: string[] = [];
  child.stderr!.on('data', (c: Buffer) => stderr.push(c.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      let entry: { message?: string; port?: number };
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry.message && milestones[entry.message] === undefined) milestones[entry.message] = nowMs() - started;
      if (entry.message === 'listening' && entry.port) resolve(entry.port);
    });
    child.once('exit', (code) => reject(new Error(`the daemon exited (${code}) before listening: ${stderr.join('').slice(0, 500)}`)));
  });
  const listeningMs = nowMs() - started;
  const first = await postJson(port, `${API}/accessible`, { client_uid: client });
  if (first.status !== 200) throw new Error(`accessible answered ${first.status} at start`);
  const readyMs = nowMs() - started;
  return {
    child,
    port,
    listeningMs,
    readyMs,
    milestones,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
