import { Router } from 'express';
import { jobOptions, runAsJob } from '../../jobs/registry.js';
import { userLimitHeaders } from '../../volumes/attach.js';
import type { StoreContext } from '../../volumes/context.js';
import { createVolume, type CreateRequest } from '../../volumes/create.js';
import { destroyVolume } from '../../volumes/destroy.js';
import { convertVolume, resizeVolume, updateVolume, type UpdateRequest } from '../../volumes/modify.js';
import { accessibleVolumes, canCreate, hasVolume, volumeInfo } from '../../volumes/queries.js';
import type { DiskFormat } from '../../tools/qemu-img.js';
import { callerOf, jsonEndpoint } from '../handler.js';

type VolumeRef = { volume_id: string; client_uid?: string; creatorID?: string };

/** The seed's core endpoints (SPEC §2), all `POST` with a JSON body. */
export function volumeRoutes(ctx: StoreContext): Router {
  const r = Router();
  r.post('/create', jsonEndpoint<CreateRequest>('create', (body) => createVolume(ctx, body)));
  r.post('/accessible', jsonEndpoint<{ client_uid: string; labels?: Record<string, string> }>('accessible', (body, _req, res) =>
    accessibleVolumes(ctx, callerOf(res, body) ?? body.client_uid, body.labels),
  ));
  r.post('/info', jsonEndpoint<VolumeRef>('volume-ref', async (body, _req, res) => {
    const info = await volumeInfo(ctx, body.volume_id, callerOf(res, body));
    return { body: info, headers: userLimitHeaders(ctx, ctx.index.get(body.volume_id)!.meta!) };
  }));
  r.post('/has', jsonEndpoint<VolumeRef>('volume-ref', (body, _req, res) => hasVolume(ctx, body.volume_id, callerOf(res, body))));
  r.post('/destroy', jsonEndpoint<VolumeRef>('volume-ref', (body, _req, res) => destroyVolume(ctx, body.volume_id, callerOf(res, body))));
  r.post('/update', jsonEndpoint<UpdateRequest>('update', (body) => updateVolume(ctx, body)));
  r.post('/update/resize', jsonEndpoint<{ vid: string; creatorID: string; size: number }>('resize', (body) => resizeVolume(ctx, body)));
  r.post(
    '/update/convert',
    jsonEndpoint<{ vid: string; creatorID: string; format: DiskFormat; async?: boolean }>('convert', (body, _req, res) =>
      runAsJob(ctx.jobs, { async: body.async, kind: 'convert', vid: body.vid, makesVolume: false, res }, (job) => convertVolume(ctx, body, jobOptions(job))),
    ),
  );
  r.post('/cancreate', jsonEndpoint<{ size: number }>('cancreate', (body) => canCreate(ctx, body.size)));
  return r;
}
