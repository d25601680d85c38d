import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './tree.js';

const run = promisify(execFile);

/** A private libvirtd (its own config and sockets in a temp directory), reached through virsh. */
export interface Libvirt {
  uri: string;
  /** Runs `virsh -c <uri> <args...>`; resolves with stdout. */
  virsh(args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export type LibvirtOrReason = { libvirt: Libvirt } | { skipped: string };

function which(name: string): string | null {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) if (existsSync(path.join(dir, name))) return path.join(dir, name);
  return null;
}

/**
 * Starts libvirtd with a private configuration: sockets, pid file and log in a temp directory, no
 * TCP, no auth on the private socket. Storage pools are made transient (`pool-create-as`), so
 * nothing is left in /etc/libvirt. Needs root (the QEMU driver it loads needs the libvirt-qemu
 * user: scripts/install-bench-deps.sh makes it). Gives a reason instead when it cannot start.
 */
export async function startLibvirt(): Promise<LibvirtOrReason> {
  const libvirtd = which('libvirtd');
  const virshBin = which('virsh');
  if (!libvirtd || !virshBin) return { skipped: 'libvirtd or virsh is not installed (run scripts/install-bench-deps.sh)' };
  if (process.getuid?.() !== 0) return { skipped: 'libvirtd with a private configuration needs root here' };
  const dir = await tempDir('libvirt');
  const sockDir = path.join(dir, 'run');
  await fs.mkdir(sockDir);
  const conf = path.join(dir, 'libvirtd.conf');
  await fs.writeFile(
    conf,
    [
      `unix_sock_dir = "${sockDir}"`,
      'listen_tls = 0',
      'listen_tcp = 0',
      'auth_unix_ro = "none"',
      'auth_unix_rw = "none"',
      `log_outputs = "3:file:${path.join(dir, 'libvirtd.log')}"`,
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(libvirtd, ['--config', conf, '--pid-file', path.join(dir, 'libvirtd.pid')], { stdio: 'ignore' });
  const uri = `qemu:///system?socket=${path.join(sockDir, 'libvirt-sock')}`;
  const virsh = async (args: string[]) => (await run(virshBin, ['-q', '-c', uri, ...args], { maxBuffer: 256 * 1024 * 1024 })).stdout;
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    await fs.rm(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    try {
      await virsh(['pool-list', '--all']);
      return { libvirt: { uri, virsh, stop } };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const log = await fs.readFile(path.join(dir, 'libvirtd.log'), 'utf8').catch(() => '');
  const lastError = log.split('\n').filter((l) => l.includes(' error : ')).at(-1) ?? 'no log';
  await stop();
  return { skipped: `libvirtd did not start: ${lastError.replace(/^.*? error : /, '')}` };
}
