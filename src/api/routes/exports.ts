import { Router, type Response } from 'express';
import { tokenClient } from '../auth.js';
import type { ExportService } from '../../exporters/service.js';
import { attachVolume, detachVolume, type AttachRequest } from '../../volumes/attach.js';
import type { StoreContext } from '../../volumes/context.js';
import { exportVolume, unexportVolume } from '../../volumes/export.js';
import { finishMigration, prepareMigration, type MigrationRequest } from '../../volumes/migration.js';
import { jsonEndpoint } from '../handler.js';

type ExportRequest = { volume_id: string; client_uid: string };

/** Exports to hypervisors (SPEC §4), live migration (both the seed's `livemigration/` and `migration/`), attach tracking (seed 004). */
export function exportRoutes(ctx: StoreContext, exports: ExportService): Router {
  const r = Router();
  // A client token is told another's private volume does not exist (404); the controller gets the rule (403).
  r.post('/export', jsonEndpoint<ExportRequest>('export', (body, _req, res) => exportVolume(ctx, exports, body.volume_id, body.client_uid, tokenClient(res) ?? null)));
  r.post('/unexport', jsonEndpoint<ExportRequest>('export', (body) => unexportVolume(ctx, exports, body.volume_id, body.client_uid)));
  for (const base of ['/migration', '/livemigration']) {
    // The body's client_uid is the destination, not the caller: only a client token names a caller (the volume's owner).
    const caller = (res: Response) => tokenClient(res) ?? null;
    r.post(`${base}/prepare`, jsonEndpoint<MigrationRequest>('migration', (body, _req, res) => prepareMigration(ctx, exports, body, caller(res))));
    r.post(`${base}/conclude`, jsonEndpoint<MigrationRequest>('migration', (body, _req, res) => finishMigration(ctx, exports, body, 'conclude', caller(res))));
    r.post(`${base}/revert`, jsonEndpoint<MigrationRequest>('migration', (body, _req, res) => finishMigration(ctx, exports, body, 'revert', caller(res))));
  }
  r.post('/attach', jsonEndpoint<AttachRequest>('attach', (body, _req, res) => attachVolume(ctx, body, tokenClient(res) ?? null)));
  r.post('/detach', jsonEndpoint<AttachRequest>('attach', (body) => detachVolume(ctx, body)));
  return r;
}
