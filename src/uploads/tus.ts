import type { RequestHandler } from 'express';
import { Server, type Upload } from '@tus/server';
// @tus/server's own Node adapter (a direct dependency at the version it uses): handleWeb gives the
// answer as a web Response, so that its plain-text errors can be turned into the API's JSON ones.
import { NodeRequest, sendNodeResponse } from 'srvx/node';
import { currentClient } from '../auth/principal.js';
import { ApiError, BadRequestError, codeForStatus, NotFoundError, translateErrno } from '../errors.js';
import { errorFields } from '../log.js';
import { claimDiskImport, importResponse, type ImportRequest } from '../images/disk-import.js';
import { assertNotEmpty, fillFromSource } from '../images/import.js';
import { claimIso, fillIso, type IsoRequest } from '../images/iso.js';
import { PendingClaims } from '../images/pending.js';
import { requireOwnCallerFields } from '../api/auth.js';
import { normaliseIds } from '../api/handler.js';
import { gbToBytes } from '../store/layout.js';
import { validateOrThrow } from '../schemas.js';
import type { StoreContext } from '../volumes/context.js';
import type { Claimed } from '../volumes/create.js';
import { FinishedUploads } from './finished.js';
import { makePartFile, VolumeUploadStore, type UploadState } from './volume-store.js';

export const TUS_PATH = '/api/v1.0/files';
/** What a finished upload can become, and the schema its `fields` metadata must pass. */
const ENDPOINTS: Record<string, string> = { 'create/upload': 'create-upload', 'iso/create': 'iso-create' };

function parseFields(metadata: Record<string, string | null> | undefined): { endpoint: string; body: Record<string, unknown> } {
  const endpoint = metadata?.endpoint ?? 'create/upload';
  const schema = ENDPOINTS[endpoint];
  if (!schema) throw new BadRequestError(`Upload-Metadata 'endpoint' must be one of: ${Object.keys(ENDPOINTS).join(', ')}`, { field: 'endpoint' });
  let body: unknown;
  try {
    body = JSON.parse(metadata?.fields ?? '');
  } catch {
    throw new BadRequestError("Upload-Metadata must carry 'fields': the endpoint's JSON fields, base64-encoded", { field: 'fields' });
  }
  const valid = validateOrThrow<Record<string, unknown>>(schema, body);
  normaliseIds(valid);
  return { endpoint, body: valid };
}

/**
 * Resumable uploads with the tus protocol (`@tus/server`) at `/api/v1.0/files`: the creation POST
 * names what the upload becomes (Upload-Metadata `endpoint` and `fields`) and claims the volume
 * (quota for max(Upload-Length, size)); PATCHes append to a part file inside it, resumable after a
 * cut (HEAD says the offset); the last PATCH imports it (probe, convert, publish) and answers the
 * endpoint's JSON. DELETE, an idle upload or a daemon stop removes the volume.
 */
export function tusUploads(ctx: StoreContext): { handler: RequestHandler; close(): Promise<void> } {
  const pending = new PendingClaims<UploadState>(ctx, 'upload', ctx.config.uploadIdleTimeoutMs);
  const finished = new FinishedUploads((id) => ctx.index.get(id) !== undefined);
  /** The upload each creation request claimed (tus hands namingFunction the request the handler made). */
  const createdBy = new WeakMap<Request, string>();
  /** Each request's id (its log line's), and the failure of one that answered 500 (logged with it). */
  const requestIds = new WeakMap<Request, string>();
  const failures = new WeakMap<Request, unknown>();
  const log = ctx.log.child({ module: 'http' });
  const server = new Server({
    path: TUS_PATH,
    relativeLocation: true,
    datastore: new VolumeUploadStore(pending, finished),
    namingFunction: async (req, metadata) => {
      const { endpoint, body } = parseFields(metadata ?? undefined);
      requireOwnCallerFields(currentClient(), body);
      // Claimed for its length: placed in a root that can hold it.
      const size = Number(req.headers.get('upload-length'));
      assertNotEmpty(size);
      let claimed: Claimed;
      if (endpoint === 'iso/create') claimed = await claimIso(ctx, body as unknown as IsoRequest, size);
      else claimed = await claimDiskImport(ctx, body as unknown as ImportRequest, size);
      const state = { endpoint, body, size, part: '', metadata: metadata ?? {}, createdAt: new Date().toISOString() };
      await pending.add(claimed, state);
      createdBy.set(req, claimed.uid);
      try {
        state.part = await makePartFile(claimed);
      } catch (err) {
        await pending.abandon(claimed.uid, (err as Error).message);
        throw err;
      }
      return claimed.uid;
    },
    // A client token reaches only its own uploads (an upload's id is its volume's).
    onIncomingRequest: async (_req, uploadId) => {
      const client = currentClient();
      const owner = pending.get(uploadId)?.claimed.meta.creatorID ?? finished.get(uploadId)?.creatorID ?? ctx.index.get(uploadId)?.meta?.creatorID;
      if (client && owner !== client) throw new NotFoundError(`upload ${uploadId} does not exist`);
    },
    // A zero-byte PATCH at the end of a finished upload (a client whose answer was lost) gets the same answer.
    onUploadFinish: async (_req, upload: Upload) => {
      const answer = await (finished.get(upload.id)?.answer ?? startImport(upload.id));
      return { status_code: 200, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(answer) };
    },
    // As the API's error middleware answers: the catalogue's error (a full disk is 507, not tus's 500), and for
    // anything else a 500 naming the log, never the error's own words (a path), which go to the log with the stack.
    onResponseError: (req, raw) => {
      if (!(raw instanceof Error) || 'status_code' in raw) return undefined; // tus's own refusals
      const err = translateErrno(raw, 'this upload');
      if (!(err instanceof ApiError) || err.status === 500) failures.set(req, raw);
      const id = requestIds.get(req) ?? '-';
      if (err instanceof ApiError)
        return { status_code: err.status, body: JSON.stringify({ error: err.message, code: err.code, ...err.details, ...(err.status >= 500 ? { request: id } : {}) }) };
      return { status_code: 500, body: JSON.stringify({ error: `internal error; the daemon's log has the details (request ${id})`, code: 'internal', request: id }) };
    },
  });
  /** The last bytes are in: the pending upload becomes a finished one while its import runs. */
  const startImport = (id: string): Promise<Record<string, unknown>> => {
    const item = pending.get(id);
    if (!item) throw new BadRequestError(`upload ${id} is not pending`);
    pending.delete(id);
    const { claimed, state } = item;
    const known = { size: state.size, metadata: state.metadata, createdAt: state.createdAt, creatorID: claimed.meta.creatorID };
    return finished.track(id, known, importUpload(ctx, claimed, state));
  };
  return {
    handler: async (req, res) => {
      const request = new NodeRequest({ req, res });
      requestIds.set(request, res.locals.requestId as string);
      const response = await server.handleWeb(request);
      const created = createdBy.get(request);
      // A creation that fails (a creation-with-upload cut midway answers 201 to a closed connection) sent no
      // Location: nobody can resume the upload, so its volume goes now, not after the idle timeout. An upload
      // whose bytes all came is no longer pending (its import publishes it or removes it).
      if (created && (response.status !== 201 || res.closed)) await pending.abandon(created, 'its creation request failed: no Location reached the client');
      const failed = failures.get(request);
      if (failed !== undefined) log.error('request failed', { method: req.method, path: req.path, requestId: res.locals.requestId, ...errorFields(failed) });
      const answer = await asJsonError(req.method, response);
      // A refusal is said in the request's own log line, as the API's middleware does (a 500 has its own line).
      if (answer.refusal && failed === undefined) res.locals.refusal = answer.refusal;
      await sendNodeResponse(res, answer.response);
    },
    close: () => pending.close(),
  };
}

/** Fills the upload's volume from its part file: the endpoint's JSON once published. */
async function importUpload(ctx: StoreContext, claimed: Claimed, state: UploadState): Promise<Record<string, unknown>> {
  const source = { kind: 'file' as const, path: state.part };
  if (state.endpoint === 'iso/create') return fillIso(ctx, claimed, state.body as unknown as IsoRequest, source);
  const req = state.body as unknown as ImportRequest;
  await fillFromSource(ctx, claimed, source, { sizeBytes: req.size ? gbToBytes(req.size) : undefined });
  return importResponse(claimed);
}

/**
 * tus refusals (`Upload-Offset conflict`, a missing `Upload-Length`) come as text/plain, and the
 * answers of onResponseError without a Content-Type: both become the API's JSON `{"error": ...}`.
 */
async function asJsonError(method: string, response: Response): Promise<{ response: Response; refusal?: string }> {
  if (response.status < 400 || method === 'HEAD') return { response };
  const text = (await response.text()).trim();
  let body: string;
  let refusal: string;
  try {
    const doc = JSON.parse(text);
    if (typeof doc?.error !== 'string') throw new Error('not an API error');
    body = text;
    refusal = doc.error;
  } catch {
    refusal = text || `the tus request was refused (${response.status})`;
    body = JSON.stringify({ error: refusal, code: codeForStatus(response.status) });
  }
  const headers = new Headers(response.headers);
  headers.set('Content-Type', 'application/json; charset=utf-8');
  headers.set('Content-Length', String(Buffer.byteLength(body)));
  return { response: new Response(body, { status: response.status, headers }), refusal };
}
