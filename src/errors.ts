/**
 * The error catalogue: every error the API can answer is one of these classes, each with a stable
 * code and one HTTP status. The Express error middleware (api/errors.ts) maps them to JSON
 * `{"error": "<sentence>", "code": "<code>", ...details}`.
 */
export class ApiError extends Error {
  readonly status: number = 500;
  readonly code: string = 'internal';
  constructor(
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A body that fails its schema or a rule of the contract. */
export class BadRequestError extends ApiError {
  override readonly status = 400;
  override readonly code = 'bad_request';
}

/** The caller is known but may not do this. */
export class ForbiddenError extends ApiError {
  override readonly status = 403;
  override readonly code = 'forbidden';
}

/** The caller named no valid token while tokens are configured. */
export class UnauthorizedError extends ApiError {
  override readonly status = 401;
  override readonly code = 'unauthorized';
}

export class NotFoundError extends ApiError {
  override readonly status = 404;
  override readonly code = 'not_found';
}

/** The volume is locked by another operation, exported or attached. */
export class ConflictError extends ApiError {
  override readonly status = 409;
  override readonly code = 'conflict';
}

export class PayloadTooLargeError extends ApiError {
  override readonly status = 413;
  override readonly code = 'payload_too_large';
}

/** A request body that did not arrive in time (a JSON body within its deadline, an upload that stalled). */
export class RequestTimeoutError extends ApiError {
  override readonly status = 408;
  override readonly code = 'request_timeout';
}

/** A download's `If-Match` / `If-Unmodified-Since` does not hold: the image changed since the client's copy. */
export class PreconditionFailedError extends ApiError {
  override readonly status = 412;
  override readonly code = 'precondition_failed';
}

/** A download's Range starts past the image's end; `Content-Range: bytes *\/<size>` tells the size (RFC 9110 §15.5.17). */
export class RangeNotSatisfiableError extends ApiError {
  override readonly status = 416;
  override readonly code = 'range_not_satisfiable';
  constructor(
    message: string,
    readonly size: number,
  ) {
    super(message, { size });
  }
}

/** The daemon cannot do this on this host (a missing tool, an unsupported backend feature). */
export class NotSupportedError extends ApiError {
  override readonly status = 501;
  override readonly code = 'not_supported';
}

/** A server the daemon fetched an image from failed: an error status, a refused connection, a cut or stalled body. */
export class UpstreamError extends ApiError {
  override readonly status = 502;
  override readonly code = 'upstream_failed';
}

/** A root (or the whole tree) is not usable right now: unmounted, unreadable. */
export class UnavailableError extends ApiError {
  override readonly status = 503;
  override readonly code = 'unavailable';
}

/** No root has room (quota or filesystem full). */
export class NoRoomError extends ApiError {
  override readonly status = 507;
  override readonly code = 'no_room';
}

/**
 * An external tool failed. The client sees only `message`; the tool's stderr stays in `toolOutput`
 * for the log, never in a response body.
 */
export class ToolError extends ApiError {
  override readonly status = 500;
  override readonly code = 'tool_failed';
  constructor(
    message: string,
    readonly toolOutput: string,
    readonly exitCode: number | undefined,
  ) {
    super(message);
  }
}

/** Every class of the catalogue, for the uniqueness test and the README table. */
export const ERROR_CATALOGUE = [
  BadRequestError,
  UnauthorizedError,
  ForbiddenError,
  NotFoundError,
  RequestTimeoutError,
  ConflictError,
  PayloadTooLargeError,
  PreconditionFailedError,
  RangeNotSatisfiableError,
  NotSupportedError,
  UpstreamError,
  UnavailableError,
  NoRoomError,
  ToolError,
] as const;

/** Turns an errno from the filesystem into the error the client should see, or returns it as is. */
export function translateErrno(err: unknown, what: string): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new NoRoomError(`no room left on the filesystem for ${what}`);
  if (code === 'EFBIG') return new NoRoomError(`the filesystem cannot hold a file as large as ${what}`);
  // A tool hitting the same limits reports them in its output, not as an errno.
  if (err instanceof ToolError && /No space left on device|Disk quota exceeded/.test(err.toolOutput))
    return new NoRoomError(`no room left on the filesystem for ${what}`);
  if (err instanceof ToolError && /File too large|image size is too large/.test(err.toolOutput))
    return new NoRoomError(`the filesystem cannot hold a file as large as ${what}`);
  if (code === 'EROFS') return new UnavailableError(`the filesystem holding ${what} is read-only`);
  if (code === 'EIO' || code === 'ENOTCONN' || code === 'ESTALE')
    return new UnavailableError(`the filesystem holding ${what} is not reachable (${code})`);
  return err;
}

/** The catalogue's code for an HTTP status another component chose (tus answers 409, 412, 460...). */
export function codeForStatus(status: number): string {
  const known = ERROR_CATALOGUE.filter((Cls) => Cls !== ToolError).map((Cls) => new (Cls as typeof ApiError)('')).find((err) => err.status === status);
  return known?.code ?? (status < 500 ? 'bad_request' : 'internal');
}
