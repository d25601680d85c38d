import express, { type RequestHandler } from 'express';
import { PayloadTooLargeError } from '../errors.js';

/**
 * express.json with the size limit enforced before the first byte of the body is read. body-parser
 * answers 413 only after reading (and discarding) the whole announced body, so a client announcing
 * a terabyte behind a valid token could hold the connection for as long as it liked; here a
 * `Content-Length` past the limit is answered at once and the connection closed after the answer.
 * Only JSON bodies are concerned: a streamed upload has its own endpoint and content type.
 */
export function jsonBody(limitBytes: number): RequestHandler[] {
  const refuseAnnouncedOversize: RequestHandler = (req, res, next) => {
    const announced = Number(req.headers['content-length']);
    if (req.is('application/json') && Number.isFinite(announced) && announced > limitBytes) {
      res.set('Connection', 'close');
      next(new PayloadTooLargeError(`request body is larger than the ${limitBytes} bytes accepted`));
      return;
    }
    next();
  };
  return [refuseAnnouncedOversize, express.json({ limit: limitBytes })];
}
