import { existsSync, promises as fs } from 'node:fs';
import net from 'node:net';
import { execa, type ResultPromise } from 'execa';
import { ExecaRunner } from '../../src/tools/runner.js';
import { skipBecause } from './tree.js';

/** iSCSI portal ports and tgtd control ports reserved for these tests (other suites use others). */
const PORTAL_PORTS = [13260, 13299] as const;
const CONTROL_PORTS = [21000, 21099] as const;

export interface TestTgtd {
  port: number;
  controlPort: number;
  portal: string;
  /** Runs tgtadm on this tgtd's control port. */
  tgtadm(args: string[]): Promise<string>;
  /** IQNs of the targets this tgtd has. */
  targets(): Promise<string[]>;
  /** Removes every target (between tests). */
  removeTargets(): Promise<void>;
  /** Removes every target and stops tgtd (it ignores SIGTERM); kills it if it does not go. */
  stop(): Promise<void>;
}

const running = new Set<ResultPromise>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function shuffled(from: number, to: number): number[] {
  const out = Array.from({ length: to - from + 1 }, (_, i) => from + i);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export async function tgtadmOn(controlPort: number, args: string[]): Promise<string> {
  return (await execa('tgtadm', ['-C', String(controlPort), '--lld', 'iscsi', ...args])).stdout;
}

async function answers(controlPort: number): Promise<boolean> {
  return tgtadmOn(controlPort, ['--op', 'show', '--mode', 'system']).then(
    () => true,
    () => false,
  );
}

async function removeTargetsOn(controlPort: number): Promise<void> {
  const shown = await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'target']);
  for (const m of shown.matchAll(/^Target (\d+):/gm)) {
    // A daemon still reconciling may remove a target between the show and the delete: gone is fine.
    await tgtadmOn(controlPort, ['--op', 'delete', '--mode', 'target', '--tid', m[1], '--force']).catch((err: Error) => {
      if (!/can't find the target/.test(err.message)) throw err;
    });
  }
}

/** Removes every target of the tgtd on `controlPort` and stops it (a tgtd started by a daemon too). */
export async function stopTgtdOn(controlPort: number): Promise<void> {
  if (await answers(controlPort)) {
    await removeTargetsOn(controlPort);
    await tgtadmOn(controlPort, ['--op', 'delete', '--mode', 'system']);
  }
  // tgtd leaves its control socket behind.
  for (const suffix of ['', '.lock']) await fs.rm(`/var/run/tgtd/socket.${controlPort}${suffix}`, { force: true });
}

/** A control port no tgtd answers on (its socket file may remain from an earlier run). */
export async function freeControlPort(): Promise<number> {
  for (const port of shuffled(...CONTROL_PORTS)) if (!(await answers(port))) return port;
  throw new Error('no free tgtd control port in 21000-21099');
}

export async function freePortalPort(): Promise<number> {
  for (const port of shuffled(...PORTAL_PORTS)) if (await portIsFree(port)) return port;
  throw new Error('no free iSCSI port in 13260-13299');
}

/** A real tgtd in the foreground on 127.0.0.1 with a private control port and iSCSI port. */
export async function startTgtd(): Promise<TestTgtd> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const [port, controlPort] = [await freePortalPort(), await freeControlPort()];
    const child = execa('tgtd', ['-f', '-C', String(controlPort), '--iscsi', `portal=127.0.0.1:${port}`], { reject: false, stdio: 'ignore' });
    running.add(child);
    let exited = false;
    void child.then(() => {
      exited = true;
      running.delete(child);
    });
    for (let i = 0; i < 50 && !exited && !(await answers(controlPort)); i++) await new Promise((r) => setTimeout(r, 50));
    if (exited || !(await answers(controlPort))) {
      child.kill('SIGKILL');
      continue;
    }
    return {
      port,
      controlPort,
      portal: `127.0.0.1:${port}`,
      tgtadm: (args) => tgtadmOn(controlPort, args),
      removeTargets: () => removeTargetsOn(controlPort),
      targets: async () => [...(await tgtadmOn(controlPort, ['--op', 'show', '--mode', 'target'])).matchAll(/^Target \d+: (\S+)$/gm)].map((m) => m[1]),
      stop: async () => {
        await stopTgtdOn(controlPort).catch(() => undefined);
        const gone = await Promise.race([child.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 3000))]);
        if (!gone) child.kill('SIGKILL');
        await child;
        await stopTgtdOn(controlPort);
      },
    };
  }
  throw new Error('tgtd did not start on a free port');
}

/** The initiators: qemu-io and qemu-img on `iscsi://`, and iscsi-ls. */
export function iscsiUrl(tgtd: TestTgtd, iqn: string, lun = 1): string {
  return `iscsi://127.0.0.1:${tgtd.port}/${iqn}/${lun}`;
}

export async function qemuIo(url: string, format: string, command: string, readonly = false): Promise<{ ok: boolean; out: string }> {
  const r = await execa('qemu-io', ['-f', format, ...(readonly ? ['-r'] : []), '-c', command, url], { reject: false, all: true });
  return { ok: r.exitCode === 0 && !/failed|can't open/i.test(String(r.all)), out: String(r.all) };
}

export async function iscsiLs(tgtd: TestTgtd): Promise<string> {
  return (await execa('iscsi-ls', ['-s', `iscsi://127.0.0.1:${tgtd.port}/`])).stdout;
}

/** Why the iSCSI tests cannot run on this machine, or null when they can. */
export function missingIscsiTool(): string | null {
  const runner = new ExecaRunner();
  for (const tool of ['tgtd', 'tgtadm', 'qemu-io'] as const) if (!runner.which(tool)) return `${tool} is not installed`;
  if (!['/usr/bin/iscsi-ls', '/usr/local/bin/iscsi-ls'].some((p) => existsSync(p))) return 'iscsi-ls (libiscsi-bin) is not installed';
  return null;
}

/**
 * Hooks for a suite that needs a tgtd: started before its tests (the suite is skipped, saying why,
 * when the tools are missing) and stopped after them, even when they fail.
 */
export function withTgtd(): () => TestTgtd {
  let tgtd: TestTgtd | undefined;
  before(async function () {
    const missing = missingIscsiTool();
    if (missing) skipBecause(this, missing);
    tgtd = await startTgtd();
  });
  after(async () => tgtd?.stop());
  return () => tgtd!;
}
