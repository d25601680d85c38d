import { Router } from 'express';
import { jobOptions, runAsJob } from '../../jobs/registry.js';
import { cloneVolume, type CloneRequest } from '../../volumes/clone.js';
import { compactOverlay } from '../../volumes/overlays.js';
import { createSnapshot, deleteSnapshot, listSnapshots, revertSnapshot, type SnapshotRequest } from '../../volumes/snapshots.js';
import type { StoreContext } from '../../volumes/context.js';
import { transferVolume } from '../../volumes/transfer.js';
import { callerOf, jsonEndpoint } from '../handler.js';

type Body<T> = T & { creatorID?: string; client_uid?: string };

/** A volume's life after create: clone, linked clones and their compaction, snapshots, transfer. */
export function lifecycleRoutes(ctx: StoreContext): Router {
  const r = Router();
  r.post(
    '/clone',
    jsonEndpoint<CloneRequest>('clone', (body, _req, res) =>
      runAsJob(ctx.jobs, { async: body.async, kind: 'clone', vid: body.volume_id, makesVolume: true, res }, (job) => cloneVolume(ctx, body, callerOf(res, body), jobOptions(job))),
    ),
  );
  r.post(
    '/overlay/compact',
    jsonEndpoint<Body<{ vid: string; async?: boolean }>>('compact', (body, _req, res) =>
      runAsJob(ctx.jobs, { async: body.async, kind: 'compact', vid: body.vid, makesVolume: false, res }, (job) => compactOverlay(ctx, body, callerOf(res, body), jobOptions(job))),
    ),
  );
  r.post('/snapshot/create', jsonEndpoint<Body<SnapshotRequest>>('snapshot', (body, _req, res) => createSnapshot(ctx, body, callerOf(res, body))));
  r.post('/snapshot/revert', jsonEndpoint<Body<SnapshotRequest>>('snapshot', (body, _req, res) => revertSnapshot(ctx, body, callerOf(res, body))));
  r.post('/snapshot/delete', jsonEndpoint<Body<SnapshotRequest>>('snapshot', (body, _req, res) => deleteSnapshot(ctx, body, callerOf(res, body))));
  r.post('/snapshot/list', jsonEndpoint<Body<{ vid: string }>>('snapshot-list', (body, _req, res) => listSnapshots(ctx, body.vid, callerOf(res, body))));
  // Seed 002 names the endpoint `transfer`; SPEC §2 `update/transfer`: both are served.
  for (const endpoint of ['/update/transfer', '/transfer'])
    r.post(endpoint, jsonEndpoint<Body<{ vid: string; new_creatorID: string }>>('transfer', (body, _req, res) => transferVolume(ctx, body, callerOf(res, body))));
  return r;
}
