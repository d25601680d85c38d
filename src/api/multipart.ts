import type { Request } from 'express';
import type { Readable } from 'node:stream';
import busboy from 'busboy';
import { BadRequestError, PayloadTooLargeError } from '../errors.js';
import { propertyAccepts } from '../schemas.js';

export interface IncomingFile {
  field: string;
  filename: string;
  stream: Readable;
  /**
   * Settles once the whole request has been read: resolves when it was read without error, rejects
   * with the reason the request fails (a part too many, a cut connection). A consumer that makes
   * something lasting from the file awaits it before committing. Only for the request's last file:
   * the request is not read to its end while a later file part waits for this one's consumer.
   */
  requestRead: Promise<void>;
}

export interface MultipartOptions {
  /** The schema the fields are checked against: it says which text fields are JSON (see formValue). */
  schema: string;
  /** Largest file part in bytes (busboy stops reading past it: 413). */
  maxFileBytes: number;
  maxFiles: number;
  /**
   * Called for each file part in order, with the fields that came before it; must consume the
   * stream. Files are handled one at a time, so a big upload streams straight to its volume.
   */
  onFile(file: IncomingFile, fields: Record<string, unknown>): Promise<void>;
}

/** The most text fields a multipart request may carry, and the largest one (more is refused, never dropped). */
const MAX_FIELDS = 100;
const MAX_FIELD_BYTES = 1024 * 1024;

export function isMultipart(req: Request): boolean {
  return /^multipart\/form-data/i.test(req.headers['content-type'] ?? '');
}

/**
 * A form or query value, which is text, as schema `schema` wants property `key`: the text itself where
 * it accepts it (`name=2024`, `os_version=12.10` stay strings), else its JSON when it parses (`false`,
 * `15`, `{...}`), else the text (the schema then says what is wrong).
 */
export function formValue(schema: string, key: string, text: string): unknown {
  if (propertyAccepts(schema, key, text)) return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * Reads a multipart/form-data request with busboy, streaming: text fields are collected (typed by
 * formValue; a field named `fields` holding a JSON object is merged in), file parts go to `onFile` as streams. A client
 * that drops the connection makes the file stream fail, so the half-received file is cleaned up.
 */
export function readMultipart(req: Request, opts: MultipartOptions): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    // No prototype: a part named __proto__ is a field like any other, never this object's prototype.
    const fields: Record<string, unknown> = Object.create(null);
    let bb: busboy.Busboy;
    try {
      // 1 MB buffers, as the raw body's file stream: busboy's 16 KB defaults made it pause the socket every 16 KB.
      bb = busboy({ headers: req.headers, highWaterMark: 1024 * 1024, fileHwm: 1024 * 1024, limits: { fileSize: opts.maxFileBytes, files: opts.maxFiles, fields: MAX_FIELDS, fieldSize: MAX_FIELD_BYTES } });
    } catch {
      return reject(new BadRequestError('the multipart body has no boundary'));
    }
    let chain: Promise<void> = Promise.resolve();
    let failed: unknown = null;
    let current: Readable | null = null;
    let readWhole!: () => void;
    let readFailed!: (err: unknown) => void;
    const requestRead = new Promise<void>((res, rej) => {
      readWhole = res;
      readFailed = rej;
    });
    requestRead.catch(() => undefined);
    // The file being consumed fails too, and the answer waits until its consumer has settled (undone
    // what it made): an error answered while an import still runs would leave its volume behind.
    const fail = (err: unknown) => {
      if (failed) return;
      failed = err;
      current?.destroy(err as Error);
      readFailed(err);
      req.unpipe(bb);
      req.resume();
      void chain.then(
        () => reject(err),
        () => reject(err),
      );
    };
    let fileSeen = false;
    bb.on('field', (name, value, info) => {
      // Read after the file was handed on, it could no longer apply: a 'private=true' sent last made a public volume.
      if (fileSeen) return fail(new BadRequestError(`field '${name.slice(0, 64)}' comes after a file part: send the fields first, then the file`, { field: name.slice(0, 64) }));
      if (info.valueTruncated) return fail(new PayloadTooLargeError(`field '${name.slice(0, 64)}' is larger than the ${MAX_FIELD_BYTES} bytes accepted`));
      const parsed = formValue(opts.schema, name, value);
      const given = name === 'fields' && parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : { [name]: parsed };
      // One value per field, as in a JSON body: which of two would be meant is anyone's guess.
      const twice = Object.keys(given).find((key) => Object.hasOwn(fields, key));
      if (twice !== undefined) return fail(new BadRequestError(`field '${twice.slice(0, 64)}' is given more than once`, { field: twice.slice(0, 64) }));
      Object.assign(fields, given);
    });
    bb.on('file', (field, stream, info) => {
      fileSeen = true;
      // The consumer (pipeline, for await) sees a destroyed stream's error; this keeps it from being uncaught.
      stream.on('error', () => undefined);
      stream.on('limit', () => stream.destroy(new PayloadTooLargeError(`file '${info.filename}' is larger than the ${opts.maxFileBytes} bytes accepted`)));
      chain = chain.then(async () => {
        if (failed) return void stream.resume();
        current = stream;
        await opts.onFile({ field, filename: info.filename ?? '', stream, requestRead }, { ...fields });
        current = null;
      });
      chain.catch(fail);
    });
    // busboy drops the fields past its limit silently: a 'private=true' after 100 others would be lost.
    bb.on('fieldsLimit', () => fail(new BadRequestError(`a request may carry at most ${MAX_FIELDS} fields`)));
    bb.on('filesLimit', () => fail(new BadRequestError(`a request may carry at most ${opts.maxFiles} files`)));
    bb.on('error', (err) => fail(new BadRequestError(`the multipart body could not be read (${(err as Error).message})`)));
    bb.on('close', () => {
      if (!failed) readWhole();
      chain.then(() => {
        if (!failed) resolve(fields);
      }, fail);
    });
    req.on('close', () => {
      if (!req.complete) fail(new BadRequestError('the upload was cut short: the client closed the connection'));
    });
    req.pipe(bb);
  });
}
