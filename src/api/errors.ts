import type { ErrorRequestHandler } from 'express';
import { ApiError, BadRequestError, PayloadTooLargeError, RangeNotSatisfiableError, translateErrno } from '../errors.js';
import { errorFields, type Logger } from '../log.js';

/** body-parser's own errors, turned into the catalogue's. */
function fromBodyParser(err: { type?: string; status?: number; limit?: number }): ApiError | null {
  if (err.type === 'entity.parse.failed') return new BadRequestError('request body is not valid JSON');
  if (err.type === 'entity.too.large') return new PayloadTooLargeError(`request body is larger than the ${err.limit} bytes accepted`);
  if (err.type === 'encoding.unsupported' || err.type === 'charset.unsupported') return new BadRequestError('request body encoding is not supported');
  if (err.type === 'request.aborted') return new BadRequestError('request was aborted by the client');
  if (err.status && err.status >= 400 && err.status < 500) return new BadRequestError('request could not be read');
  return null;
}

/**
 * The one error middleware: an ApiError becomes `{"error", "code", ...details}` with its status;
 * anything else is a 500 whose body says only where to look, and whose stack goes to the log.
 */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (raw, req, res, _next) => {
    // Answered already (a body's deadline answered 408 while body-parser still read it): nothing more to say.
    if (res.headersSent) return;
    const err = (raw instanceof ApiError ? raw : (fromBodyParser(raw) ?? translateErrno(raw, 'this request'))) as unknown;
    if (err instanceof RangeNotSatisfiableError) res.set('Content-Range', `bytes */${err.size}`);
    const id = (res.locals.requestId as string | undefined) ?? '-';
    // A condition the catalogue names (a 4xx, a root unmounted, tgtd down, no room, the daemon stopping, an
    // upstream that failed) is said by the request's own line: an error line each would page someone for
    // every request to an unmounted root, and for every job a stop cancels. A 500 gets its own, with the tool's output.
    if (err instanceof ApiError && err.status !== 500) {
      res.locals.refusal = err.message;
      res.status(err.status).json({ error: err.message, code: err.code, ...err.details, ...(err.status >= 500 ? { request: id } : {}) });
      return;
    }
    log.error('request failed', { method: req.method, path: req.path, requestId: id, ...errorFields(err) });
    if (err instanceof ApiError) {
      res.status(err.status).json({ error: err.message, code: err.code, ...err.details, request: id });
      return;
    }
    res.status(500).json({ error: `internal error; the daemon's log has the details (request ${id})`, code: 'internal', request: id });
  };
}
