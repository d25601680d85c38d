import { Router } from 'express';
import type { Daemon } from '../../daemon.js';

/** `GET /status`: roots and their quota use, skipped roots, broken volumes, the tools found, the Ceph pool, locks lost while held. */
export function statusRoutes(daemon: Daemon): Router {
  const r = Router();
  r.get('/status', (_req, res) => {
    const { index } = daemon.ctx;
    res.json({
      mnt: daemon.config.mnt,
      startedAt: daemon.startedAt.toISOString(),
      volumes: index.size,
      roots: index.rootList().map((root) => {
        const usage = index.usage(root.path);
        return {
          path: root.path,
          fileSystem: root.settings.fileSystem,
          maxVolumes: root.settings.maxVolumes ?? null,
          maxVolumeSize: root.settings.maxVolumeSize ?? null,
          maxTotalSize: root.settings.maxTotalSize ?? null,
          volumes: usage.volumes,
          usedBytes: usage.bytes,
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
