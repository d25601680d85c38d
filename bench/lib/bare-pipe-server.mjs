// The ceiling of any HTTP transfer in Node on this machine (bench/images.bench.ts): a bare node:http
// server with nothing of the daemon. POST /<name> streams the body into <dir>/<name> (1 MB writes,
// flushed at the end, as the daemon's uploads); GET /<name> streams the file back.
// Usage: node bare-pipe-server.mjs <dir> <port>
import { createReadStream, createWriteStream } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';

const [dir, port] = process.argv.slice(2);
http
  .createServer(async (req, res) => {
    const file = path.join(dir, path.basename(req.url ?? 'x'));
    try {
      if (req.method === 'POST') {
        await pipeline(req, createWriteStream(file, { highWaterMark: 1024 * 1024, flush: true }));
        res.end('ok');
      } else await pipeline(createReadStream(file, { highWaterMark: 1024 * 1024 }), res);
    } catch (err) {
      res.statusCode = 500;
      res.end(String(err));
    }
  })
  .listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\n'));
