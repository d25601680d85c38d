import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';

/**
 * A download over a real socket (supertest buffers whole answers) that reads one chunk, then waits:
 * `resume()` reads the rest, `leave()` closes the connection as a client that goes away.
 */
export async function pausedDownload(app: Express, vid: string) {
  const listener = app.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
    http.get({ host: '127.0.0.1', port: (listener.address() as AddressInfo).port, path: `/api/v1.0/volumes/${vid}/data` }, resolve).on('error', reject),
  );
  const chunks: Buffer[] = [await new Promise<Buffer>((resolve) => res.once('data', resolve))];
  res.pause();
  return {
    status: res.statusCode,
    headers: res.headers,
    /** Reads the rest; resolves with the whole body, or rejects when the server cut the connection. */
    async resume(): Promise<Buffer> {
      res.on('data', (c: Buffer) => chunks.push(c));
      res.resume();
      try {
        await once(res, 'end');
        return Buffer.concat(chunks);
      } finally {
        listener.close();
      }
    },
    leave(): void {
      res.destroy();
      listener.close();
    },
  };
}
