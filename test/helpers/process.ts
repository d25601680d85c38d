import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { PROJECT_ROOT } from '../../src/project.js';

export const MAIN = path.join(PROJECT_ROOT, 'src', 'main.ts');

/** An answer of the daemon: status and parsed JSON body. */
export interface Answer {
  status: number;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** The real daemon process (node + tsx on src/main.ts), as systemd would run it. */
export interface DaemonProcess {
  child: ResultPromise;
  port: number;
  lines: string[];
  /** Resolves when the process ended, with the signal that ended it (SIGKILL from a fault point). */
  exited: Promise<{ exitCode: number | undefined; signal: string | undefined }>;
  post(endpoint: string, body: unknown): Promise<Answer>;
  get(endpoint: string): Promise<Answer>;
}

/**
 * Starts `node --import tsx/esm src/main.ts --port 0` and resolves once it logged `listening`;
 * rejects with its log when it ended before (a fault point reached during the start-up sweep).
 */
export async function spawnDaemon(args: string[], env: Record<string, string> = {}): Promise<DaemonProcess> {
  const child = execa('node', ['--import', 'tsx/esm', MAIN, '--port', '0', '--log-format', 'json', ...args], {
    env,
    cwd: PROJECT_ROOT,
    reject: false,
    all: true,
  });
  const exited = child.then((r) => ({ exitCode: r.exitCode, signal: r.signal }));
  const lines: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    child.all!.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        lines.push(line);
        try {
          const entry = JSON.parse(line);
          if (entry.message === 'listening') resolve(entry.port);
        } catch {
          // not a log line
        }
      }
    });
    void exited.then((r) => reject(Object.assign(new Error(`daemon exited early (${r.signal ?? r.exitCode}): ${lines.join('\n')}`), r)));
  });
  const call = async (method: string, endpoint: string, body?: unknown): Promise<Answer> => {
    const res = await fetch(`http://127.0.0.1:${port}/api/v1.0/${endpoint}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  return { child, port, lines, exited, post: (e, b) => call('POST', e, b), get: (e) => call('GET', e) };
}

/** Stops a daemon process cleanly (SIGTERM) and waits for it. */
export async function stopDaemon(d: DaemonProcess): Promise<void> {
  d.child.kill('SIGTERM');
  await d.exited;
}
