import type { RequestHandler } from 'express';
import { runAsPrincipal } from '../auth/principal.js';
import type { Principal, TokenTable } from '../auth/tokens.js';
import { ForbiddenError, UnauthorizedError } from '../errors.js';

/**
 * Body fields that name the caller: the seed's `creatorID` (create, update, resize, convert,
 * destroy) and `client_uid` (accessible, info). A field naming another client as the *object* of
 * an operation (a transfer's new owner) is not one of them.
 */
export const CALLER_FIELDS = ['creatorID', 'client_uid'] as const;

/** RFC 6750 `Authorization: Bearer <token>`; the scheme is case-insensitive. */
const BEARER = /^Bearer +([\x21-\x7e]+) *$/i;
const REALM = 'Bearer realm="elemento-storage"';

/**
 * Runs before the body is read, so a caller without a valid token costs a header check only:
 * 401 with `WWW-Authenticate`. A client token makes `res.locals.caller` its client_uid (callerOf
 * prefers it); an admin token leaves the caller to the body, as without tokens.
 */
export function authenticate(tokens: TokenTable): RequestHandler {
  return (req, res, next) => {
    if (!tokens.configured) return next();
    const header = req.get('authorization');
    const token = header === undefined ? undefined : BEARER.exec(header)?.[1];
    const principal = token === undefined ? null : tokens.lookup(token);
    if (!principal) {
      res.set('WWW-Authenticate', header === undefined ? REALM : `${REALM}, error="invalid_token"`);
      next(new UnauthorizedError(header === undefined ? 'an API token is required (Authorization: Bearer <token>)' : 'the API token is not valid'));
      return;
    }
    res.locals.principal = principal;
    if (principal.role === 'client') res.locals.caller = principal.clientUid;
    next();
  };
}

/**
 * A client token may name no other client in a caller field: 403. For fields that do not come in a
 * JSON body (an upload's query or multipart parts, tus's Upload-Metadata), their route asks it itself.
 */
export function requireOwnCallerFields(client: string | null | undefined, fields: unknown): void {
  if (!client || !fields || typeof fields !== 'object' || Array.isArray(fields)) return;
  for (const field of CALLER_FIELDS) {
    const named = (fields as Record<string, unknown>)[field];
    if (typeof named === 'string' && named.toLowerCase() !== client)
      throw new ForbiddenError(`this token acts for client ${client} only, and '${field}' names another client`, { field });
  }
}

/**
 * Runs once the body is read: a client token whose body names another client in a caller field
 * is refused (403) before any handler sees it; the rest of the request runs as its principal.
 */
export function actAsPrincipal(): RequestHandler {
  return (req, res, next) => {
    const principal = res.locals.principal as Principal | undefined;
    if (!principal) return next();
    try {
      if (principal.role === 'client') requireOwnCallerFields(principal.clientUid, req.body);
    } catch (err) {
      next(err);
      return;
    }
    runAsPrincipal(principal, next);
  };
}

/** For endpoints about the whole host (`GET /status`): an admin token, or no tokens configured. */
export const requireAdmin: RequestHandler = (req, res, next) => {
  const principal = res.locals.principal as Principal | undefined;
  if (principal && principal.role !== 'admin') next(new ForbiddenError(`${req.method} ${req.path} needs an admin token`));
  else next();
};

/** The client a token binds this request to (undefined: admin or no tokens, who see everything). */
export function tokenClient(res: { locals: Record<string, unknown> }): string | undefined {
  return (res.locals.principal as Principal | undefined)?.clientUid ?? undefined;
}
