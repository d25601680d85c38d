import { promises as fs, type StatsFs } from 'node:fs';
import { Router } from 'express';
import type { Daemon } from '../../daemon.js';

/** `GET /status`: roots and their quota use, skipped roots, broken volumes, the tools found, the Ceph pool, locks lost while held. */
export function statusRoutes(daemon: Daemon): Router {
  const r = Router();
  r.get('/status', async (_req, res) => {
    const { index } = daemon.ctx;
    const roots = index.rootList();
    const disks = await Promise.all(roots.map((root) => diskOf(root.path)));
    res.json({
      mnt: daemon.config.mnt,
      startedAt: daemon.startedAt.toISOString(),
      volumes: index.size,
      roots: roots.map((root, i) => {
        const usage = index.usage(root.path);
        return {
          path: root.path,
          fileSystem: root.settings.fileSystem,
          maxVolumes: root.settings.maxVolumes ?? null,
          maxVolumeSize: root.settings.maxVolumeSize ?? null,
          maxTotalSize: root.settings.maxTotalSize ?? null,
          volumes: usage.volumes,
          usedBytes: usage.bytes,
          // The filesystem under the root, whatever the quotas say (sparse images fill it as VMs write): null when it does not answer.
          ...disks[i],
        };
      }),
      skipped: index.skippedRoots(),
      broken: index.broken(),
      tools: daemon.tools(),
      ceph: daemon.ctx.rbd ? { pool: daemon.ctx.rbd.target.pool, conf: daemon.ctx.rbd.target.conf, id: daemon.ctx.rbd.target.id } : null,
      exporter: {
        name: daemon.exports.exporter.name,
        capabilities: daemon.exports.exporter.capabilities,
        portal: daemon.config.iscsiPortal,
        // Whether tgtd (or LIO) answered at the last reconciliation, since when, and why not.
        backend: daemon.exports.backendState,
      },
      jobs: daemon.ctx.jobs.list(),
      locksCompromised: daemon.ctx.locks.compromised,
      // Bin entries not purged yet because their purge failed (an RBD image still open, a cluster down): retried every minute.
      purgeFailures: daemon.ctx.purger.failures,
    });
  });
  return r;
}

/** How long status waits for a root's filesystem (a network one that hangs) before saying null. */
const STATFS_WAIT_MS = 2000;

/**
 * The statfs of each root still unanswered: one that hangs (a network mount) holds one of libuv's 4 threads until
 * it returns, so a status poll while it hangs waits for it instead of asking again (four polls took every thread,
 * and every file operation of the daemon, on whatever root, waited behind them).
 */
const asking = new Map<string, Promise<StatsFs | null>>();

/** Free and total bytes of the filesystem holding `root` (for its user: blocks reserved to root left out). */
async function diskOf(root: string): Promise<{ diskFreeBytes: number | null; diskSizeBytes: number | null }> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), STATFS_WAIT_MS)));
  let statfs = asking.get(root);
  if (!statfs) {
    statfs = fs.statfs(root).catch(() => null).finally(() => asking.delete(root));
    asking.set(root, statfs);
  }
  const st = await Promise.race([statfs, late]);
  clearTimeout(timer);
  return st ? { diskFreeBytes: st.bavail * st.bsize, diskSizeBytes: st.blocks * st.bsize } : { diskFreeBytes: null, diskSizeBytes: null };
}
