import { Router } from 'express';
import { BadRequestError } from '../../errors.js';
import { CloudInitSets, MAX_FILE_BYTES, type FileSet, type MetadataFields } from '../../images/cloudinit.js';
import type { Pending } from '../../images/pending.js';
import type { StoreContext } from '../../volumes/context.js';
import { callerOf } from '../handler.js';
import { isMultipart, readMultipart } from '../multipart.js';
import { checkedFields } from './images.js';

/** The client's form `POST .../cloudinit/metadata/<base64 of the JSON fields>` (standard or URL-safe base64). */
function fieldsFromPath(encoded: string | undefined): Record<string, unknown> {
  if (!encoded) return {};
  try {
    const doc = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8'));
    if (doc && typeof doc === 'object' && !Array.isArray(doc)) return doc;
  } catch {
    // reported below
  }
  throw new BadRequestError('the path after cloudinit/metadata/ must be the base64 of a JSON object of fields');
}

/** For fields naming both, the schema's oneOf would only say "'body' must NOT be valid": which call is which, in words. */
function assertOneKindOfCall(fields: Record<string, unknown>): void {
  if (fields.expectedFiles !== undefined && fields.vid !== undefined)
    throw new BadRequestError("a first call names 'expectedFiles' (and creates the volume), a later one its 'vid': not both", { field: 'vid' });
}

/**
 * `cloudinit/metadata` (seed 002): multipart `file` parts, one call at a time. The first call
 * (with `expectedFiles`) creates the volume; later calls name its `vid`. 206 `CONTINUE` until the
 * set is complete, then 200 `OK` once the seed ISO is built.
 */
export function cloudInitRoutes(ctx: StoreContext, sets: CloudInitSets): Router {
  const r = Router();
  r.post(['/cloudinit/metadata', '/cloudinit/metadata/:encoded'], async (req, res) => {
    if (!isMultipart(req)) throw new BadRequestError('cloudinit/metadata takes multipart/form-data with the files in parts named \'file\'');
    const fromPath = fieldsFromPath(req.params.encoded as string | undefined);
    let item: Pending<FileSet> | undefined;
    let first = false;
    const stored: string[] = [];
    const open = async (fields: Record<string, unknown>) => {
      const all = { ...fields, ...fromPath };
      assertOneKindOfCall(all);
      const body = checkedFields<MetadataFields>('cloudinit-metadata', all, res);
      first = body.expectedFiles !== undefined;
      item = first ? await sets.begin(body) : await sets.open(body.vid!, callerOf(res, body as unknown as Record<string, unknown>));
      return item;
    };
    try {
      const fields = await readMultipart(req, {
        schema: 'cloudinit-metadata',
        maxFileBytes: MAX_FILE_BYTES,
        maxFiles: 64,
        onFile: async (file, before) => {
          if (file.field !== 'file') throw new BadRequestError(`files must come in parts named 'file', not '${file.field}'`, { field: file.field });
          stored.push(await sets.addFile(item ?? (await open(before)), file));
        },
      });
      if (!item) {
        await open(fields);
        throw new BadRequestError("the request carries no 'file' part", { field: 'file' });
      }
      const reply = await sets.finishCall(item);
      res.status(reply.status).json(reply.body);
    } catch (err) {
      // A first call that fails leaves no volume; a later one leaves the set as it was before the call.
      if (item && first) await sets.pending.abandon(item.claimed.uid, (err as Error).message);
      else if (item && sets.pending.get(item.claimed.uid)) await sets.removeFiles(item, stored);
      throw sets.pending.failure(err);
    } finally {
      if (item && sets.pending.get(item.claimed.uid)) sets.pending.release(item);
    }
  });
  return r;
}
