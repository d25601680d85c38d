import { Router, type Request, type Response } from 'express';
import type { Daemon } from '../../daemon.js';
import { ApiError, BadRequestError } from '../../errors.js';
import { importDisk, urlSource, type ImportRequest } from '../../images/disk-import.js';
import type { ImageSource } from '../../images/import.js';
import { createIso, type IsoRequest } from '../../images/iso.js';
import { assertComplete, streamToFile } from '../../images/transfer.js';
import { jobOptions, runAsJob } from '../../jobs/registry.js';
import { validateOrThrow } from '../../schemas.js';
import type { StoreContext } from '../../volumes/context.js';
import { requireOwnCallerFields, tokenClient } from '../auth.js';
import { jsonEndpoint, normaliseIds } from '../handler.js';
import { formValue, isMultipart, readMultipart, type IncomingFile } from '../multipart.js';

/** The fields of a multipart request, checked like a JSON body of `schema`. */
export function checkedFields<T>(schema: string, fields: Record<string, unknown>, res: Response): T {
  // Fields from a query or multipart parts: the auth layer saw no JSON body to check them in.
  requireOwnCallerFields(tokenClient(res), fields);
  const body = validateOrThrow<T>(schema, fields);
  normaliseIds(body as Record<string, unknown>);
  return body;
}

/** The request's Content-Length, when it announces one. */
function contentLength(req: Request): number | undefined {
  const header = req.headers['content-length'];
  return header && /^\d+$/.test(header) ? Number(header) : undefined;
}

/**
 * A source that streams one multipart file part into the volume, announcing the request's
 * Content-Length: an upper bound of the file (by the fields' and the part headers' few hundred
 * bytes), so an image no root can hold is refused before it is read. The bytes count only once the
 * whole request has been read without error: a part too many after the file fails the import.
 */
const partSource = (file: IncomingFile, requestLength: number | undefined): ImageSource & { kind: 'stream' } => ({
  kind: 'stream',
  open: async () => requestLength,
  writeTo: async (target, limits) => {
    // The request's length bounds the part's: the job's percent moves as the body arrives.
    const bytes = await streamToFile(file.stream, target, { ...limits, total: requestLength });
    await file.requestRead;
    return bytes;
  },
});

/** The fastest upload: the request body is the image, the fields are query parameters (typed by formValue). */
function rawBodySource(req: Request): ImageSource & { kind: 'stream' } {
  const length = contentLength(req);
  return {
    kind: 'stream',
    open: async () => length,
    writeTo: async (file, limits) => {
      const bytes = await streamToFile(req, file, { ...limits, total: length }).catch((err: unknown) => {
        // The client gone mid-body: node says only 'aborted', which the job would show as its error.
        if (!(err instanceof ApiError) && !limits.signal?.aborted && !req.complete)
          throw new BadRequestError('the upload was cut short: the client closed the connection');
        throw err;
      });
      assertComplete(bytes, length, 'the upload');
      return bytes;
    },
  };
}

function queryFields(req: Request, schema: string): Record<string, unknown> {
  // No prototype: `__proto__={"private":true}` in the query set this object's prototype, whose fields then counted.
  const out: Record<string, unknown> = Object.create(null);
  for (const [key, value] of Object.entries(req.query)) {
    // `private=true&private=false` parses as an array, which was dropped: the volume got the default (public).
    if (typeof value !== 'string') throw new BadRequestError(`'${key.slice(0, 64)}' is given more than once in the query`, { field: key.slice(0, 64) });
    out[key] = formValue(schema, key, value);
  }
  return out;
}

const isRawBody = (req: Request) => /^application\/octet-stream/i.test(req.headers['content-type'] ?? '');

type MakeFromUpload = (body: Record<string, unknown>, source: ImageSource, opts: ReturnType<typeof jobOptions>) => Promise<unknown>;

/**
 * Runs `make` on an upload: a raw body (fields in the query) or multipart (fields, then the file part).
 * It runs as a job (listed, cancellable, its bytes counted); with `async: true` the 202 comes once the
 * body has been read, and the probe, conversion and growth go on in the job.
 */
async function upload(ctx: StoreContext, req: Request, res: Response, schema: string, make: MakeFromUpload) {
  const asJob = (body: Record<string, unknown>, source: ImageSource & { kind: 'stream' }) => {
    let received = () => {};
    const answerWhen = new Promise<void>((resolve) => (received = resolve));
    const counted: ImageSource = {
      ...source,
      writeTo: async (file, limits) => {
        const bytes = await source.writeTo(file, limits);
        received();
        return bytes;
      },
    };
    const request = { async: body.async === true, kind: 'upload', vid: null, makesVolume: true, res, answerWhen };
    return runAsJob(ctx.jobs, request, (job) => make(body, counted, jobOptions(job)));
  };
  const { status, body } = isRawBody(req)
    ? await asJob(checkedFields<Record<string, unknown>>(schema, queryFields(req, schema), res), rawBodySource(req))
    : await multipartUpload(req, res, schema, asJob);
  res.status(status ?? 200).json(body);
}

/** Reads a multipart upload whose fields (before the `file` part) are `schema`'s, and runs `make` with the file streamed in. */
async function multipartUpload<T>(req: Request, res: Response, schema: string, make: (body: Record<string, unknown>, source: ImageSource & { kind: 'stream' }) => Promise<T>): Promise<T> {
  let answer: T | undefined;
  await readMultipart(req, {
    schema,
    maxFileBytes: Number.MAX_SAFE_INTEGER,
    maxFiles: 1,
    onFile: async (file, fields) => {
      if (file.field !== 'file') throw new BadRequestError(`the image must come in a part named 'file', not '${file.field}'`, { field: file.field });
      answer = await make(checkedFields<Record<string, unknown>>(schema, fields, res), partSource(file, contentLength(req)));
    },
  });
  if (answer === undefined) throw new BadRequestError("the multipart body has no 'file' part (send the fields first, then the file)", { field: 'file' });
  return answer;
}

/** Images in: `create/url`, `create/upload`, `cloudinit/create`, `iso/create` (URL or upload). */
export function imageRoutes(daemon: Daemon): Router {
  const ctx = daemon.ctx;
  const r = Router();
  // A tenant (client token) may not make the daemon fetch from this host or its private networks (SSRF).
  const source = (url: string, res: Response) => urlSource(ctx, url, tokenClient(res) !== undefined);
  const fromUrl = (body: ImportRequest & { url: string }, res: Response) =>
    runAsJob(ctx.jobs, { async: body.async, kind: 'import', vid: null, makesVolume: true, res }, (job) => importDisk(ctx, body, source(body.url, res), jobOptions(job)));
  r.post('/create/url', jsonEndpoint<ImportRequest & { url: string }>('create-url', (body, _req, res) => fromUrl(body, res)));
  r.post('/cloudinit/create', jsonEndpoint<ImportRequest & { url: string }>('cloudinit-create', (body, _req, res) => fromUrl({ ...body, cloudinit: true }, res)));

  r.post('/create/upload', async (req, res) => {
    if (!isMultipart(req) && !isRawBody(req))
      throw new BadRequestError('create/upload takes multipart/form-data (fields, then the file part) or an application/octet-stream body with the fields in the query; resumable uploads use /api/v1.0/files (tus)');
    await upload(ctx, req, res, 'create-upload', (body, source, opts) => importDisk(ctx, body as unknown as ImportRequest, source, opts));
  });

  const isoFromUrl = jsonEndpoint<IsoRequest>('iso-create', (body, _req, res) => {
    if (!body.url) throw new BadRequestError("request was badly formatted. 'url'", { field: 'url' });
    return runAsJob(ctx.jobs, { async: body.async, kind: 'import', vid: null, makesVolume: true, res }, (job) => createIso(ctx, body, source(body.url!, res), jobOptions(job)));
  });
  r.post('/iso/create', async (req, res, next) => {
    if (!isMultipart(req) && !isRawBody(req)) return isoFromUrl(req, res, next);
    await upload(ctx, req, res, 'iso-create', (body, source, opts) => createIso(ctx, body as unknown as IsoRequest, source, opts));
  });
  return r;
}
