import type { Request, RequestHandler, Response } from 'express';
import { BadRequestError } from '../errors.js';
import { JsonBytes } from '../json-bytes.js';
import { validateOrThrow } from '../schemas.js';
import type { Caller } from '../volumes/context.js';

/** What a route answers: a JSON body, and a status other than 200 when it says so. */
export interface Reply {
  status?: number;
  body: unknown;
  headers?: Record<string, string>;
}

/** Lowercases the uids of a body (the schemas accept either case; the tree uses lowercase). */
export function normaliseIds(body: Record<string, unknown>): void {
  for (const key of ['creatorID', 'client_uid', 'volume_id', 'vid', 'new_creatorID', 'source_client_uid'])
    if (typeof body[key] === 'string') body[key] = (body[key] as string).toLowerCase();
}

/**
 * The caller of a request: the body's `creatorID` or `client_uid` (as the seed's clients send it),
 * or null (the controller) when the body names none. The auth layer may override it per token.
 */
export function callerOf(res: Response, body: Record<string, unknown>): Caller {
  if (res.locals.caller !== undefined) return res.locals.caller as Caller;
  return (body.creatorID as string | undefined) ?? (body.client_uid as string | undefined) ?? null;
}

/**
 * A JSON `POST` endpoint: the body is checked against `schemas/<schema>.json` before `fn` sees it,
 * so a bad body is a 400 naming the field and nothing else happens.
 */
export function jsonEndpoint<T>(schema: string, fn: (body: T, req: Request, res: Response) => Promise<Reply | unknown> | Reply | unknown): RequestHandler {
  return async (req, res) => {
    if (req.body === undefined || req.body === null || typeof req.body !== 'object' || Array.isArray(req.body))
      throw new BadRequestError('request body must be a JSON object (send Content-Type: application/json)');
    const body = validateOrThrow<T>(schema, req.body);
    normaliseIds(body as Record<string, unknown>);
    const out = await fn(body, req, res);
    const reply = (out && typeof out === 'object' && 'body' in out ? out : { body: out }) as Reply;
    if (reply.headers) res.set(reply.headers);
    res.status(reply.status ?? 200);
    // Written as they are: res.send would hash the whole body for an ETag, which no POST answer is revalidated with.
    if (reply.body instanceof JsonBytes) res.set({ 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(reply.body.bytes.length) }).end(reply.body.bytes);
    else res.json(reply.body);
  };
}
