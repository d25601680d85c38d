import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { fetch, type Response } from 'undici';
import { ApiError, BadRequestError, UpstreamError } from '../errors.js';
import { assertPublicHost, publicOnlyDispatcher } from './public-only.js';
import { streamToFile, type StreamLimits } from './transfer.js';

/** Only http(s) URLs are fetched (the schemas say so too; this is the last line). */
export function checkUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new BadRequestError(`'${raw}' is not a URL`, { field: 'url' });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new BadRequestError('only http and https URLs can be imported', { field: 'url' });
  // fetch refuses them (a TypeError that read as a 502 "connection lost"), and they would be echoed in answers and jobs.
  if (url.username || url.password) throw new BadRequestError('a URL with credentials (user:password@) cannot be imported; use a URL that needs none', { field: 'url' });
  return url;
}

/** How imports reach their servers: undici's fetch; the tests replace it to play a public server (no test reaches the Internet). */
export const importTransport = { fetch };

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;

/** Why fetch failed, in one sentence for the client (the cause's code, never a stack). */
function upstreamFailure(url: URL, err: unknown, idle: boolean): ApiError {
  if (err instanceof ApiError) return err;
  const reason = (err as { cause?: unknown }).cause;
  if (reason instanceof ApiError) return reason; // publicOnlyDispatcher's refusal of a rebound name
  if (idle) return new UpstreamError(`the download from ${url.host} stalled (nothing received for too long)`, { url: url.href });
  const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code;
  if (cause === 'ECONNREFUSED') return new UpstreamError(`${url.host} refused the connection`, { url: url.href });
  if (cause === 'ENOTFOUND' || cause === 'EAI_AGAIN') return new UpstreamError(`the host ${url.hostname} could not be resolved`, { url: url.href });
  return new UpstreamError(`the download from ${url.host} failed (${cause ?? 'connection lost'})`, { url: url.href });
}

/**
 * GETs `url`, following redirects itself (only to http(s), at most MAX_REDIRECTS), so that with `publicOnly`
 * every hop's host is checked before it is connected to: a public URL redirecting to 127.0.0.1 is refused too,
 * and checked again as it is connected to (publicOnlyDispatcher).
 */
async function fetchFollowing(url: URL, signal: AbortSignal, publicOnly: boolean): Promise<Response> {
  let current = url;
  for (let hop = 0; ; hop++) {
    if (publicOnly) await assertPublicHost(current);
    // One connection per import: a socket kept alive from an earlier import may be closed by the server just
    // as it is reused (fetch's pool times its idle sockets coarsely), which would fail the import with 502.
    const res = await importTransport.fetch(current, { signal, redirect: 'manual', headers: { connection: 'close' }, ...(publicOnly && { dispatcher: publicOnlyDispatcher }) });
    const location = res.headers.get('location');
    if (!REDIRECTS.has(res.status) || location === null) return res;
    void res.body?.cancel().catch(() => undefined);
    if (hop === MAX_REDIRECTS) throw new UpstreamError(`the download from ${url.host} was redirected more than ${MAX_REDIRECTS} times`, { url: url.href });
    let next: URL;
    try {
      next = checkUrl(new URL(location, current).href);
    } catch {
      throw new UpstreamError(`the download from ${url.host} was redirected to a URL that cannot be imported (only http and https, without credentials)`, { url: url.href });
    }
    current = next;
  }
}

/** A download whose answer's headers have come: its announced length, and its body still to be read. */
export interface Download {
  length: number | undefined;
  /** Streams the body into the new file `target`; fails (502) when it ends short of `length`. */
  toFile(target: string, limits: StreamLimits): Promise<number>;
}

/**
 * Starts downloading `rawUrl` and waits for the answer's headers, so the caller learns the announced
 * length before it claims room. Fails with 502 on an error status, a refused connection, a body shorter
 * than its Content-Length, or `idleMs` without a byte. `signal` ends the download, whether or not the
 * body is being read: a caller that will not read it aborts the signal.
 */
export async function openDownload(rawUrl: string, opts: { idleMs: number; signal?: AbortSignal; publicOnly?: boolean }): Promise<Download> {
  const url = checkUrl(rawUrl);
  const idle = new AbortController();
  let stalled = false;
  let timer: NodeJS.Timeout | undefined;
  const kick = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      idle.abort();
    }, opts.idleMs);
  };
  const signal = opts.signal ? AbortSignal.any([opts.signal, idle.signal]) : idle.signal;
  signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  const failure = (err: unknown) => {
    clearTimeout(timer);
    return opts.signal?.aborted ? err : upstreamFailure(url, err, stalled);
  };
  kick();
  const res = await fetchFollowing(url, signal, opts.publicOnly === true).catch((err: unknown) => {
    throw failure(err);
  });
  if (!res.ok || !res.body) {
    void res.body?.cancel().catch(() => undefined);
    throw failure(new UpstreamError(`${url.host} answered ${res.status} for ${url.pathname}`, { url: url.href, upstreamStatus: res.status }));
  }
  const header = res.headers.get('content-length');
  // fetch decodes a body sent with Content-Encoding (a .qcow2 stored gzipped, served as such): its Content-Length
  // is the encoded one, not the image's (a whole image was refused as 'cut short: 8716288 of 8978 bytes').
  const encoded = !/^(identity)?$/i.test(res.headers.get('content-encoding')?.trim() ?? '');
  const length = !encoded && header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
  const body = res.body;
  return {
    length,
    toFile: async (target, limits) => {
      let received = 0;
      const cutShort = () => new UpstreamError(`the download from ${url.host} was cut short: ${received}${length === undefined ? '' : ` of ${length}`} bytes arrived`, { url: url.href });
      try {
        const stream = Readable.fromWeb(body as WebReadableStream<Uint8Array>);
        stream.on('data', (chunk: Uint8Array) => {
          received += chunk.byteLength;
          kick();
        });
        const bytes = await streamToFile(stream, target, { ...limits, signal, total: length });
        if (length !== undefined && bytes !== length) throw cutShort();
        return bytes;
      } catch (err) {
        // The connection closed before the body's end (undici says it in its own codes).
        const code = (err as { cause?: { code?: string } }).cause?.code;
        if (!signal.aborted && (code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || code === 'UND_ERR_SOCKET')) throw failure(cutShort());
        throw failure(err);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
