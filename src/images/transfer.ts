import { createWriteStream } from 'node:fs';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BadRequestError, NoRoomError } from '../errors.js';

/** How a transfer reports itself: bytes so far, and the total when it is known. */
export type BytesProgress = (bytesDone: number, total: number | undefined) => void;

export interface StreamLimits {
  /** Refuse a stream longer than this (the root's room for the volume). */
  maxBytes?: number;
  signal?: AbortSignal;
  onBytes?: BytesProgress;
  total?: number;
  /**
   * Awaited before bytes past `reserved` go on: claims room for at least `bytes` (the volume's quota claim)
   * and answers how many bytes are now covered, or fails (507). A stream of unannounced length thus counts
   * against the quota as it arrives, so concurrent ones cannot each fill the same free room.
   */
  reserve?: (bytes: number) => Promise<number>;
  /** Bytes already covered by the claim. */
  reserved?: number;
}

/** Counts bytes through a pipeline, enforcing `maxBytes`. */
function counter(limits: StreamLimits): Transform & { bytes: number } {
  let bytes = 0;
  let lastReport = 0;
  let lastReportMs = Date.now();
  let reserved = limits.reserved ?? 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      t.bytes = bytes;
      if (limits.maxBytes !== undefined && bytes > limits.maxBytes)
        return done(new NoRoomError(`the image is larger than the ${limits.maxBytes} bytes this volume may hold`));
      // Every 4 MB, and every second: a job's progressAt (when its bytes last moved) tells a slow transfer from a stuck one.
      if (limits.onBytes && (bytes - lastReport >= 4 * 1024 * 1024 || Date.now() - lastReportMs >= 1000)) {
        lastReport = bytes;
        lastReportMs = Date.now();
        limits.onBytes(bytes, limits.total);
      }
      if (!limits.reserve || bytes <= reserved) return done(null, chunk);
      limits.reserve(bytes).then((covered) => {
        reserved = covered;
        done(null, chunk);
      }, done);
    },
  }) as Transform & { bytes: number };
  t.bytes = 0;
  return t;
}

/**
 * Streams `source` into a new file `target` (created exclusively): memory stays flat whatever the
 * size. Returns the byte count. On any failure the caller removes `target` (it lies inside the
 * claimed volume directory, which goes as a whole).
 */
export async function streamToFile(source: Readable, target: string, limits: StreamLimits = {}): Promise<number> {
  const count = counter(limits);
  // flush: the bytes are on disk before the volume is published (the rename is the commit point).
  await pipeline(source, count, createWriteStream(target, { flags: 'wx', highWaterMark: 1024 * 1024, flush: true }), { signal: limits.signal });
  limits.onBytes?.(count.bytes, limits.total);
  return count.bytes;
}

/** A client stream that ended before its announced length. */
export function assertComplete(bytes: number, expected: number | undefined, what: string): void {
  if (expected !== undefined && bytes !== expected)
    throw new BadRequestError(`${what} was cut short: ${bytes} of ${expected} bytes arrived`);
}
