import { promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { waitFor } from './tree.js';

/** A single-node Gluster volume mounted twice, as two hosts would mount it. */
export interface GlusterVolume {
  mounts: [string, string];
  stop(): Promise<void>;
}

const VOLUME = 'elementotest';

/**
 * Starts a private glusterd (its own working directory and socket under `base`), one brick, one volume
 * with the options that make a second mount see changes at once (TOOLCHAIN.md), and mounts it twice
 * as README "Several daemons on one tree" asks (no page cache kept across opens).
 * Answers the reason when that cannot be done here (not root, glusterd missing, one already running).
 */
export async function startGluster(base: string): Promise<GlusterVolume | string> {
  if (process.getuid?.() !== 0) return 'Gluster needs root';
  const which = await execa('sh', ['-c', 'command -v glusterd'], { reject: false });
  if (which.exitCode !== 0) return 'glusterd is not installed (glusterfs-server)';
  if ((await execa('pgrep', ['-x', 'glusterd'], { reject: false })).exitCode === 0) return 'another glusterd already runs on this host';
  const dir = (n: string) => path.join(base, n);
  for (const d of ['wd', 'brick', 'm1', 'm2', 'run']) await fs.mkdir(dir(d), { recursive: true });
  const sock = dir('run/glusterd.socket');
  await fs.writeFile(
    dir('glusterd.vol'),
    ['volume management', '  type mgmt/glusterd', `  option working-directory ${dir('wd')}`, '  option transport-type socket',
      `  option glusterd-sockfile ${sock}`, '  option ping-timeout 0', '  option event-threads 1', 'end-volume', ''].join('\n'),
  );
  await execa('glusterd', ['-f', dir('glusterd.vol'), '-p', dir('run/glusterd.pid'), '-l', dir('glusterd.log')]);
  const gluster = (...args: string[]) => execa('gluster', [`--glusterd-sock=${sock}`, '--mode=script', ...args]);
  const mounted: string[] = [];
  const stop = async () => {
    for (const m of mounted) await execa('umount', ['-l', m], { reject: false });
    await gluster('volume', 'stop', VOLUME, 'force').catch(() => undefined);
    const pid = Number(await fs.readFile(dir('run/glusterd.pid'), 'utf8').catch(() => '0'));
    if (pid) process.kill(pid, 'SIGTERM');
  };
  try {
    await waitFor(async () => (await fs.stat(sock).then(() => true, () => false)), 10_000, 'glusterd to listen');
    await gluster('volume', 'create', VOLUME, `${hostname()}:${dir('brick')}`, 'force');
    await gluster('volume', 'set', VOLUME, 'performance.stat-prefetch', 'off');
    await gluster('volume', 'start', VOLUME);
    // The client directly, not mount.glusterfs: its `-o fopen-keep-cache=false` becomes `--fopen-keep-cache==false`
    // (Gluster 10.3), and a mount that keeps its page cache across opens reads a file another host rewrote in
    // place (a qcow2's snapshot table, an edited settings.json of the same length) as it was, for ever.
    for (const m of ['m1', 'm2']) {
      await execa('glusterfs', [`--volfile-server=${hostname()}`, `--volfile-id=${VOLUME}`, '--fopen-keep-cache=false',
        '--attribute-timeout=0', '--entry-timeout=0', '--negative-timeout=0', dir(m)]);
      mounted.push(dir(m));
      await waitFor(async () => (await execa('mountpoint', ['-q', dir(m)], { reject: false })).exitCode === 0, 10_000, `${dir(m)} to be mounted`);
    }
  } catch (err) {
    await stop();
    return `Gluster did not come up: ${(err as Error).message.split('\n')[0]}`;
  }
  return { mounts: [dir('m1'), dir('m2')], stop };
}
