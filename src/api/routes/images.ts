import type { Readable } from 'node:stream';
import { Router, type Request, type Response } from 'express';
import type { Daemon } from '../../daemon.js';
import { BadRequestError } from '../../errors.js';
import { importDisk, urlSource, type ImportRequest } from '../../images/disk-import.js';
import type { ImageSource } from '../../images/import.js';
import { createIso, type IsoRequest } from '../../images/iso.js';
import { streamToFile } from '../../images/transfer.js';
import { runAsJob } from '../../jobs/registry.js';
import { validateOrThrow } from '../../schemas.js';
import { jsonEndpoint, normaliseIds } from '../handler.js';
import { isMultipart, readMultipart } from '../multipart.js';

/** The fields of a multipart request, checked like a JSON body of `schema`. */
export function checkedFields<T>(schema: string, fields: Record<string, unknown>): T {
  const body = validateOrThrow<T>(schema, fields);
  normaliseIds(body as Record<string, unknown>);
  return body;
}

/** A source that streams one multipart file part into the volume. */
const partSource = (stream: Readable): ImageSource => ({ kind: 'stream', writeTo: (file, limits) => streamToFile(stream, file, limits) });

/**
 * Reads a multipart upload whose fields (before the `file` part) are `schema`'s, and runs `make`
 * with the file streamed in. Answers `make`'s JSON.
 */
async function multipartUpload(req: Request, res: Response, schema: string, make: (body: Record<string, unknown>, source: ImageSource) => Promise<unknown>) {
  let answer: unknown;
  await readMultipart(req, {
    maxFileBytes: Number.MAX_SAFE_INTEGER,
    maxFiles: 1,
    onFile: async (file, fields) => {
      if (file.field !== 'file') throw new BadRequestError(`the image must come in a part named 'file', not '${file.field}'`, { field: file.field });
      const body = checkedFields<Record<string, unknown>>(schema, fields);
      answer = await make(body, partSource(file.stream));
    },
  });
  if (answer === undefined) throw new BadRequestError("the multipart body has no 'file' part (send the fields first, then the file)", { field: 'file' });
  res.json(answer);
}

/** Images in: `create/url`, `create/upload`, `cloudinit/create`, `iso/create` (URL or upload). */
export function imageRoutes(daemon: Daemon): Router {
  const ctx = daemon.ctx;
  const r = Router();
  const fromUrl = (kind: string, body: ImportRequest & { url: string }) =>
    runAsJob(ctx.jobs, body.async, kind, null, (job) =>
      importDisk(ctx, body, urlSource(ctx, body.url), { signal: job.signal, onProgress: (p, bytes) => job.progress(p, bytes) }),
    );
  r.post('/create/url', jsonEndpoint<ImportRequest & { url: string }>('create-url', (body) => fromUrl('import', body)));
  r.post('/cloudinit/create', jsonEndpoint<ImportRequest & { url: string }>('cloudinit-create', (body) => fromUrl('import', { ...body, cloudinit: true })));

  r.post('/create/upload', async (req, res) => {
    if (!isMultipart(req))
      throw new BadRequestError('create/upload takes multipart/form-data (fields, then the file part), or use resumable uploads at /api/v1.0/files (tus)');
    await multipartUpload(req, res, 'create-upload', (body, source) => importDisk(ctx, body as unknown as ImportRequest, source));
  });

  const isoFromUrl = jsonEndpoint<IsoRequest>('iso-create', (body) => {
    if (!body.url) throw new BadRequestError("request was badly formatted. 'url'", { field: 'url' });
    return runAsJob(ctx.jobs, body.async, 'import', null, (job) =>
      createIso(ctx, body, urlSource(ctx, body.url!), { signal: job.signal, onProgress: (p, bytes) => job.progress(p, bytes) }),
    );
  });
  r.post('/iso/create', async (req, res, next) => {
    if (!isMultipart(req)) return isoFromUrl(req, res, next);
    await multipartUpload(req, res, 'iso-create', (body, source) => createIso(ctx, body as unknown as IsoRequest, source));
  });
  return r;
}
