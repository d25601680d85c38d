import type { RequestHandler } from 'express';
import { RequestTimeoutError } from '../errors.js';

/**
 * How long a transfer may stall. A download (a GET's answer) that moves no byte for `ms` is cut: its
 * socket times out, which node answers by destroying it (nobody listens for the event), so a client that
 * stops reading holds no download count (snapshots and resizes of its volume wait for it) for ever.
 * How long a request body may take, in place of Node's `requestTimeout` (off, server.ts), which cuts
 * every request whose body is not in after 300 s: a disk image uploaded for longer than five minutes
 * was answered 408 midway. A JSON body (1 MB at most) must arrive whole within `ms` of the headers, else
 * 408 and the connection is closed (a trickling client holds nothing past that); an upload's body (any
 * other) may take as long as it needs but fails once it sends nothing for `ms`: its connection is closed,
 * which its handler takes as a client that left (the half-made volume is removed). Once the body is in,
 * no limit applies: a synchronous import may convert for as long as it takes before it answers. A body
 * still arriving after its answer (a refusal: 401, 413, 507) is discarded for `ms` more, then the
 * connection is closed: an anonymous client trickling a body would otherwise hold it for ever.
 */
export function transferTimeouts(ms: number): RequestHandler {
  const seconds = ms / 1000;
  return (req, res, next) => {
    // Node's keep-alive timeout replaces it once the answer has been sent.
    if (req.method === 'GET' || req.method === 'HEAD') {
      req.socket.setTimeout(ms);
      return next();
    }
    if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) return next();
    let timer: NodeJS.Timeout | undefined;
    const later = (fn: () => void) => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms).unref();
    };
    if (req.is('application/json')) {
      later(() => {
        if (res.headersSent) return req.destroy();
        const err = new RequestTimeoutError(`the request body did not arrive within ${seconds} s`);
        res.status(err.status).set('Connection', 'close').json({ error: err.message, code: err.code });
        res.once('finish', () => req.destroy());
      });
    } else {
      req.setTimeout(ms, () => req.destroy(new RequestTimeoutError(`the upload sent nothing for ${seconds} s`)));
    }
    req.once('end', () => {
      clearTimeout(timer);
      // Once the answer has ended, the socket's timeout is Node's keep-alive timeout: left alone (cleared, an
      // idle connection was kept for ever). The socket may be gone already (IncomingMessage.setTimeout would throw).
      if (!res.writableFinished) req.socket?.setTimeout(0);
    });
    res.once('finish', () => {
      if (!req.complete) later(() => req.destroy());
    });
    res.once('close', () => {
      if (!res.writableFinished) clearTimeout(timer); // the connection died: nothing left to time
    });
    next();
  };
}
