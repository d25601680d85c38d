import path from 'node:path';
import { Router } from 'express';
import { NotSupportedError } from '../../errors.js';
import { dataFileName } from '../../store/layout.js';
import { findVolume } from '../../volumes/access.js';
import type { StoreContext } from '../../volumes/context.js';
import { callerOf } from '../handler.js';

/**
 * `GET /volumes/<vid>/data[?client_uid=<uid>]`: the volume's image, streamed, with HTTP Range
 * (resume, parallel chunks), ETag and Last-Modified. Visibility as `info`: a private volume is 404
 * to other clients. The open file stays valid if a convert replaces it meanwhile.
 */
export function downloadRoutes(ctx: StoreContext): Router {
  const r = Router();
  r.get('/volumes/:vid/data', (req, res, next) => {
    const vid = String(req.params.vid).toLowerCase();
    const clientUid = typeof req.query.client_uid === 'string' ? req.query.client_uid.toLowerCase() : undefined;
    const record = findVolume(ctx, vid, callerOf(res, clientUid ? { client_uid: clientUid } : {}));
    const { format } = record.meta;
    if (format === 'rbd') throw new NotSupportedError(`the data of a Ceph volume is read from its cluster (rbd export ${record.rbd?.pool}/${record.rbd?.image}), not through this daemon`);
    const name = dataFileName(format);
    res.sendFile(
      path.join(record.dir, name),
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
      (err) => {
        if (err && !res.headersSent) next(err);
      },
    );
  });
  return r;
}
