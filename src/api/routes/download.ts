import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Router, type NextFunction, type Request, type Response } from 'express';
import { BadRequestError, ConflictError, PreconditionFailedError, RangeNotSatisfiableError, translateErrno } from '../../errors.js';
import { errorFields, type Logger } from '../../log.js';
import type { JobRegistry } from '../../jobs/registry.js';
import type { VolumeMeta } from '../../store/meta.js';
import type { VolumeRecord } from '../../store/volume-record.js';
import { requireCeph } from '../../volumes/ceph.js';
import { dataFileName } from '../../store/layout.js';
import { findVolume, readLockedMeta, requireNotInUse } from '../../volumes/access.js';
import type { StoreContext } from '../../volumes/context.js';
import { checkTenantUse } from '../../volumes/export-rules.js';
import { tokenClient } from '../auth.js';
import { callerOf } from '../handler.js';

/**
 * A Ceph volume's bytes, streamed from `rbd export` (whole: Range is not honoured, `Accept-Ranges: none`).
 * Content-Length is the image's size as the cluster says it (409 when the image is gone). A failure
 * after the first byte cuts the connection, so the client never takes a short body for the image.
 */
async function sendRbdImage(ctx: StoreContext, record: VolumeRecord & { meta: VolumeMeta }, req: Request, res: Response, next: NextFunction): Promise<void> {
  const rbd = requireCeph(ctx);
  if (!record.rbd) throw new ConflictError(`volume ${record.uid} is broken: data.rbd cannot be read`, { vid: record.uid });
  // Listened for before the first cluster call: a client that leaves meanwhile must stop the export too.
  const gone = new AbortController();
  res.on('close', () => gone.abort());
  if (res.closed) gone.abort(); // it left before (the lookups and meta.json read awaited first)
  const size = await rbd.size(record.rbd);
  if (gone.signal.aborted) return;
  if (size === null) throw new ConflictError(`volume ${record.uid} is broken: its RBD image ${record.rbd.pool}/${record.rbd.image} does not exist`, { vid: record.uid });
  const headers = {
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(size),
    'Content-Disposition': `attachment; filename="${record.uid}.img"`,
    'X-Image-Format': 'raw',
    'Accept-Ranges': 'none',
  };
  res.set(headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  rbd.export(record.rbd, res, gone.signal).catch((err) => {
    if (gone.signal.aborted) return; // the client went away: nothing to answer
    if (res.headersSent) return res.destroy(err as Error);
    for (const name of Object.keys(headers)) res.removeHeader(name);
    next(err);
  });
}

/**
 * The image holds still while it is read: a volume a hypervisor may write (exported or attached, and
 * not read-only) is refused, as clone refuses it. Read afresh after beginRead, which an export or an
 * attach being made refuses: what they change is on disk by the time they let it go. The directory and
 * data file are looked at for links again (send follows them; the index refused them when it read the volume).
 */
async function requireNoWriter(dir: string, vid: string): Promise<VolumeMeta> {
  const meta = await readLockedMeta(dir, vid);
  if (!meta.readonly) requireNotInUse(await fs.readdir(dir), meta, 'downloaded while writable');
  return meta;
}

type SendError = Error & { status?: number; code?: string; headers?: Record<string, unknown> };

const DOWNLOAD_HEADERS = ['Content-Type', 'Content-Disposition', 'X-Image-Format', 'Accept-Ranges', 'Content-Range', 'Content-Length', 'ETag', 'Last-Modified'];

/** What `send` refused, as the catalogue's error (its own errors carry only an HTTP status). */
function downloadError(err: SendError, vid: string): Error {
  if (err.status === 416) {
    // send says the file's length in the Content-Range it would have answered.
    const size = Number(/\/(\d+)$/.exec(String(err.headers?.['Content-Range'] ?? ''))?.[1] ?? 0);
    return new RangeNotSatisfiableError(`the range asked starts past the end of volume ${vid}'s image (${size} bytes)`, size);
  }
  if (err.status === 412) return new PreconditionFailedError(`volume ${vid}'s image does not match the If-Match or If-Unmodified-Since of the request: it changed`, { vid });
  if (err.code === 'ENOENT' || err.code === 'EISDIR' || err.code === 'ENOTDIR' || err.status === 404)
    return new ConflictError(`volume ${vid} is broken: its data file cannot be read as a file`, { vid });
  return err;
}

/**
 * `GET /volumes/<vid>/data[?client_uid=<uid>]`: the volume's image, streamed, with HTTP Range
 * (resume, parallel chunks), ETag and Last-Modified. Visibility as `info`: a private volume is 404
 * to other clients. The open file stays valid if a convert replaces it meanwhile; what changes it in
 * place (a snapshot, a qcow2's resize) is refused while it is read, and refuses it meanwhile. A Ceph volume's
 * image comes from its cluster (sendRbdImage).
 */
export function downloadRoutes(ctx: StoreContext): Router {
  const r = Router();
  r.get('/volumes/:vid/data', async (req, res, next) => {
    const vid = String(req.params.vid).toLowerCase();
    const clientUid = typeof req.query.client_uid === 'string' ? req.query.client_uid.toLowerCase() : undefined;
    const caller = callerOf(res, clientUid ? { client_uid: clientUid } : {});
    // Read again first: another daemon sharing the tree may have converted or destroyed it since the index read it.
    await ctx.index.reloadDir((await findVolume(ctx, vid, caller)).dir);
    const record = await findVolume(ctx, vid, caller);
    // Its client sets its pace: a tenant reading another's writable volume at 10 kB/s held off its owner for hours.
    checkTenantUse(record.meta, tokenClient(res) ?? null, 'download');
    const { base } = record.meta;
    // Its file alone names a backing file outside any download: a backup of it would not stand alone.
    if (base)
      throw new ConflictError(`volume ${vid} is a linked clone reading through to volume ${base}: compact it (overlay/compact) to download a standalone image`, { vid, base });
    // Counted until the answer ends: a snapshot or a resize rewriting the image in place waits for it (rewriteInPlace).
    // A client that left during the lookups above fired 'close' already: counted, it would refuse them for ever.
    const ended = ctx.locks.beginRead(record.dir, vid);
    res.once('close', ended);
    if (res.closed) return ended();
    // The format as meta.json says it now (a convert may have ended since the index read it).
    requireNoWriter(record.dir, vid).then(({ format: now }) => {
      const failed = req.method === 'HEAD' ? next : downloadJob(ctx.jobs, vid, res, next);
      // sendRbdImage's own refusals (its image gone) fail the job too: answered by `next`, it ended done.
      return now === 'rbd' ? sendRbdImage(ctx, record, req, res, failed).catch(failed) : sendDataFile(record.dir, vid, now, res, failed, ctx.log);
    }).catch(next);
  });
  return r;
}

/**
 * A download runs as a job (SPEC §2: long operations report progress): `GET /jobs` lists it (kind
 * `download`, bytes sent, percent of the answer's Content-Length), its id is in the `X-Job` header, and
 * `DELETE /jobs/<id>` cuts its connection. It is done once the last byte has left, failed when the answer
 * was an error or the connection closed first. Returns the `next` that records a refusal as the job's failure.
 */
function downloadJob(jobs: JobRegistry, vid: string, res: Response, next: NextFunction): NextFunction {
  let fail: (err: unknown) => void = () => {};
  const { promise } = jobs.start('download', vid, (job) => new Promise((resolve, reject) => {
    fail = reject;
    res.setHeader('X-Job', job.id);
    let sent = 0;
    const write = res.write;
    // Counted where the bytes leave, whoever streams them (send's file stream, rbd export's stdout).
    res.write = function (this: Response, chunk: unknown, ...rest: unknown[]) {
      sent += typeof chunk === 'string' ? Buffer.byteLength(chunk) : (chunk as Uint8Array).byteLength;
      const total = Number(res.getHeader('Content-Length'));
      job.progress(total > 0 ? (100 * sent) / total : 0, sent);
      return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as Response['write'];
    const cut = () => res.destroy();
    job.signal.addEventListener('abort', cut, { once: true });
    job.started();
    res.once('close', () => {
      // The job is kept an hour once done: its signal must not hold the answer (its request, socket, headers) that long.
      job.signal.removeEventListener('abort', cut);
      // Every byte sent is done, even when the client closed before the stream's own end (rbd export's exit).
      if (res.writableFinished || sent === Number(res.getHeader('Content-Length'))) resolve({ vid, bytes: sent });
      // Not the client's fault alone, but no answer will carry it: a 4xx, so it is not logged as the daemon's failure.
      else reject(new BadRequestError(`the connection closed after ${sent} of ${res.getHeader('Content-Length') ?? '?'} bytes`));
    });
  }), { isAnswer: true, answeredBy: String(res.locals.requestId ?? '-') });
  promise.catch(() => undefined);
  return (err?: unknown) => {
    fail(err);
    next(err);
  };
}

/** A volume's data file, streamed by express's send (Range, ETag, Last-Modified); its refusals as the catalogue's errors. */
function sendDataFile(dir: string, vid: string, format: Exclude<VolumeMeta['format'], 'rbd'>, res: Response, next: NextFunction, log: Logger): void {
  const name = dataFileName(format);
  res.sendFile(
    path.join(dir, name),
    {
      dotfiles: 'allow',
      acceptRanges: true,
      cacheControl: false,
      // send passes its options on to fs.createReadStream: 1 MB reads instead of 64 KB.
      ...({ highWaterMark: 1024 * 1024 } as object),
      headers: {
        'Content-Type': 'application/octet-stream',
        'Content-Disposition': `attachment; filename="${vid}.${name.slice(5)}"`,
        'X-Image-Format': format,
      },
    },
    (err: SendError | undefined) => {
      if (!err) return;
      if (res.headersSent) {
        if (err.code === 'ECONNABORTED') return; // the client left: its job says so
        // The image failed to read midway (EIO): no answer can say it now, and the client would wait for the
        // rest until the idle timeout. The connection is cut, the job fails naming why, and the log is told.
        log.error('download failed midway: the image could not be read', { vid, ...errorFields(err) });
        next(translateErrno(err, `volume ${vid}'s image`));
        res.destroy();
        return;
      }
      // send set the download's headers before it refused: the JSON error must not look like an image.
      for (const header of DOWNLOAD_HEADERS) res.removeHeader(header);
      next(downloadError(err, vid));
    },
  );
}
