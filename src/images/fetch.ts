import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { ApiError, BadRequestError, UpstreamError } from '../errors.js';
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
  return url;
}

/** Why fetch failed, in one sentence for the client (the cause's code, never a stack). */
function upstreamFailure(url: URL, err: unknown, idle: boolean): ApiError {
  if (err instanceof ApiError) return err;
  if (idle) return new UpstreamError(`the download from ${url.host} stalled (nothing received for too long)`, { url: url.href });
  const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code;
  if (cause === 'ECONNREFUSED') return new UpstreamError(`${url.host} refused the connection`, { url: url.href });
  if (cause === 'ENOTFOUND' || cause === 'EAI_AGAIN') return new UpstreamError(`the host ${url.hostname} could not be resolved`, { url: url.href });
  return new UpstreamError(`the download from ${url.host} failed (${cause ?? 'connection lost'})`, { url: url.href });
}

/**
 * Downloads `rawUrl` into the new file `target`, streamed. Fails with 502 on an error status, a
 * refused connection, a body shorter than its Content-Length, or `idleMs` without a byte.
 * `onLength` learns the announced length before the body starts (to size the quota claim).
 */
export async function downloadToFile(
  rawUrl: string,
  target: string,
  opts: StreamLimits & { idleMs: number; onLength?: (length: number | undefined) => Promise<void> | void },
): Promise<number> {
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
  kick();
  try {
    const res = await fetch(url, { signal, redirect: 'follow' });
    if (!res.ok || !res.body) throw new UpstreamError(`${url.host} answered ${res.status} for ${url.pathname}`, { url: url.href, upstreamStatus: res.status });
    const header = res.headers.get('content-length');
    const length = header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
    await opts.onLength?.(length);
    const body = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
    body.on('data', kick);
    const bytes = await streamToFile(body, target, { ...opts, signal, total: length });
    if (length !== undefined && bytes !== length)
      throw new UpstreamError(`the download from ${url.host} was cut short: ${bytes} of ${length} bytes arrived`, { url: url.href });
    return bytes;
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    throw upstreamFailure(url, err, stalled);
  } finally {
    clearTimeout(timer);
  }
}
