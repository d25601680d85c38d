import { createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DataStore, ERRORS, Upload } from '@tus/server';
import { ConflictError, NotFoundError } from '../errors.js';
import { faultPoint } from '../faults.js';
import { writeFlushed } from '../store/atomic.js';
import { makeStagingDir } from '../images/import.js';
import type { PendingClaims } from '../images/pending.js';
import type { Claimed } from '../volumes/create.js';
import type { FinishedUploads } from './finished.js';

/** What a resumable upload remembers between requests (the bytes themselves are the part file). */
export interface UploadState {
  /** `create/upload` or `iso/create`: what the finished upload becomes. */
  endpoint: string;
  body: Record<string, unknown>;
  size: number;
  part: string;
  metadata: Record<string, string | null>;
  createdAt: string;
}

/** The part file of an upload, in a staging directory of the claimed volume (see makeStagingDir). */
export async function makePartFile(claimed: Claimed): Promise<string> {
  const part = path.join(await makeStagingDir(claimed, 'upload'), 'part');
  await (await fs.open(part, 'wx')).close();
  return part;
}

/**
 * A tus data store whose uploads live inside the volumes they create: upload id = volume uid,
 * bytes in a part file inside the claimed volume directory. The claim (quota, lock, meta.json) is made
 * before the upload exists (see tus.ts). Declares only what it does: creation, creation with
 * upload, termination (DELETE abandons the volume).
 */
export class VolumeUploadStore extends DataStore {
  constructor(
    private readonly pending: PendingClaims<UploadState>,
    private readonly finished: FinishedUploads,
  ) {
    super();
    this.extensions = ['creation', 'creation-with-upload', 'termination'];
  }

  private item(id: string) {
    const item = this.pending.get(id);
    if (!item) throw ERRORS.FILE_NOT_FOUND;
    return item;
  }

  override async create(upload: Upload): Promise<Upload> {
    const { state } = this.item(upload.id);
    upload.storage = { type: 'volume', path: state.part };
    upload.creation_date = state.createdAt;
    return upload;
  }

  /** Appends at `offset`; what arrived before a cut stays (flushed), so the client resumes from there. */
  override async write(stream: Readable, id: string, offset: number): Promise<number> {
    if (this.finished.get(id)) {
      // Only a zero-byte PATCH at the end reaches here (tus refuses bytes past Upload-Length): it repeats the last one.
      for await (const _ of stream) throw new ConflictError(`upload ${id} is complete; it takes no more bytes`);
      return offset;
    }
    const item = this.item(id);
    const { state } = item;
    let bytes = 0;
    const count = new Transform({
      transform(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        done(null, chunk);
      },
    });
    // Busy while the bytes flow: a PATCH longer than the idle timeout does not get its upload expired.
    this.pending.acquire(item);
    try {
      const writing = pipeline(stream, count, createWriteStream(state.part, { flags: 'r+', start: offset, highWaterMark: 1024 * 1024, flush: true }));
      await writeFlushed(state.part, writing);
      faultPoint('tus.after-chunk');
    } finally {
      this.pending.release(item);
    }
    // Abandoned while the bytes arrived (the daemon stopping): they went with the volume, which a 204 would hide.
    if (this.pending.get(id) !== item) throw this.pending.failure(new NotFoundError(`upload ${id} was abandoned while its bytes arrived`));
    return offset + bytes;
  }

  override async getUpload(id: string): Promise<Upload> {
    const done = this.finished.get(id);
    if (done) return new Upload({ id, size: done.size, offset: done.size, metadata: done.metadata, creation_date: done.createdAt });
    const { state } = this.item(id);
    const offset = (await fs.stat(state.part).catch(() => ({ size: 0 }))).size;
    return new Upload({ id, size: state.size, offset, metadata: state.metadata, creation_date: state.createdAt, storage: { type: 'volume', path: state.part } });
  }

  override async remove(id: string): Promise<void> {
    if (this.finished.get(id)) throw new ConflictError(`upload ${id} is complete: it is volume ${id} (destroy removes it)`, { vid: id });
    this.item(id);
    await this.pending.abandon(id, 'the client terminated the upload');
  }
}
