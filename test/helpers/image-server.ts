import { createReadStream, promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

/**
 * A local HTTP server (127.0.0.1, ephemeral port) serving the files of `dir`, with misbehaving paths:
 * `/truncated/<f>` announces the whole length but closes after half; `/stall/<f>` sends half then
 * nothing; `/gzip/<f>` sends it gzipped with `Content-Encoding: gzip` (and the encoded length); anything missing is a 404.
 */
export async function startImageServer(dir: string): Promise<{ url: (p: string) => string; close(): Promise<void> }> {
  const sockets = new Set<import('node:net').Socket>();
  const server = http.createServer(async (req, res) => {
    const [, mode, name] = /^\/(?:(truncated|stall|gzip)\/)?(.+)$/.exec(req.url ?? '') ?? [];
    const file = path.join(dir, path.basename(name ?? ''));
    const stat = await fs.stat(file).catch(() => null);
    if (!stat) {
      res.writeHead(404).end('no such file');
      return;
    }
    if (mode === 'gzip') {
      const encoded = gzipSync(await fs.readFile(file));
      res.writeHead(200, { 'Content-Length': encoded.length, 'Content-Encoding': 'gzip', 'Content-Type': 'application/octet-stream' }).end(encoded);
      return;
    }
    res.writeHead(200, { 'Content-Length': stat.size, 'Content-Type': 'application/octet-stream' });
    if (!mode) return void createReadStream(file).pipe(res);
    const half = createReadStream(file, { start: 0, end: Math.floor(stat.size / 2) - 1 });
    half.on('data', (c) => res.write(c));
    half.on('end', () => {
      if (mode === 'truncated') res.socket?.destroy();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: (p) => `http://127.0.0.1:${port}/${p}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
