import { Router } from 'express';
import type { JobRegistry } from '../../jobs/registry.js';

/** `GET /jobs`, `GET /jobs/<id>` (state, percent, error) and `DELETE /jobs/<id>` (cancel). */
export function jobRoutes(jobs: JobRegistry): Router {
  const r = Router();
  r.get('/jobs', (_req, res) => {
    res.json(jobs.list());
  });
  r.get('/jobs/:id', (req, res) => {
    res.json(jobs.describe(req.params.id));
  });
  r.delete('/jobs/:id', async (req, res) => {
    res.json(await jobs.cancel(req.params.id));
  });
  return r;
}
