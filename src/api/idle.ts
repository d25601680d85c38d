import type { RequestHandler } from 'express';

/**
 * A connection that moves no byte for `idleMs` while a request body arrives, or while a GET's answer
 * (a download) is sent, is cut: node destroys a socket whose timeout fires when nobody listens for
 * it. So a client that stalls holds no claimed volume, no job and no download count for ever, and an
 * upload may take as long as it needs while its bytes flow (node's own requestTimeout, which cuts any
 * request not wholly received within 5 minutes, is off: server.ts). Once a body's last byte is in,
 * the connection may stay silent: a synchronous convert answers when it is done.
 */
export function cutStalledTransfers(idleMs: number): RequestHandler {
  return (req, res, next) => {
    if (idleMs > 0) {
      req.socket.setTimeout(idleMs);
      // node sets its keep-alive timeout once the answer is sent: a body read after that leaves it.
      if (req.method !== 'GET' && req.method !== 'HEAD')
        req.once('end', () => {
          if (!res.writableEnded) req.socket.setTimeout(0);
        });
    }
    next();
  };
}
