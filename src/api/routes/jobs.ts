import { Router } from 'express';
import type { JobRegistry } from '../../jobs/registry.js';
import { tokenClient } from '../auth.js';

/**
 * `GET /jobs`, `GET /jobs/<id>` (state, percent, error) and `DELETE /jobs/<id>` (cancel). A client
 * token sees only the jobs it started.
 */
export function jobRoutes(jobs: JobRegistry): Router {
  const r = Router();
  r.get('/jobs', (_req, res) => {
    res.json(jobs.list(tokenClient(res)));
  });
  r.get('/jobs/:id', (req, res) => {
    res.json(jobs.describe(req.params.id, tokenClient(res)));
  });
  r.delete('/jobs/:id', async (req, res) => {
    res.json(await jobs.cancel(req.params.id, tokenClient(res)));
  });
  return r;
}
