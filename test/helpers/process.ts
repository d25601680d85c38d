import path from 'node:path';
import { execa, type ResultPromise } from 'execa';

export const MAIN = path.resolve('src/main.ts');

/** Starts the real daemon process and resolves with the port it logged once listening. */
export async function spawnDaemon(args: string[], env: Record<string, string> = {}): Promise<{ child: ResultPromise; port: number; lines: string[] }> {
  const child = execa('node', ['--import', 'tsx/esm', MAIN, '--port', '0', '--log-format', 'json', ...args], { env, reject: false, all: true });
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
    child.then((r) => reject(new Error(`daemon exited early (${r.exitCode}): ${lines.join('\n')}`)));
  });
  return { child, port, lines };
}
