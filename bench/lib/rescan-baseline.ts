import { promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

/**
 * The baseline without an index: every request re-reads the tree, as a naive daemon would.
 * `accessible` lists the roots (directories with a settings.json, one or two levels down),
 * readdirs each, reads every meta.json and stats every data file; `info` finds the one volume's
 * directory in the roots and reads its meta.json and data file. Same answers' shape as the daemon's
 * main fields, so the work of serialising is comparable.
 */
async function findRoots(mnt: string): Promise<string[]> {
  const roots: string[] = [];
  const isRoot = (dir: string) => fs.access(path.join(dir, 'settings.json')).then(() => true, () => false);
  for (const e of await fs.readdir(mnt, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name.startsWith('.')) continue;
    const dir = path.join(mnt, e.name);
    if (await isRoot(dir)) roots.push(dir);
    else for (const s of await fs.readdir(dir, { withFileTypes: true })) if (s.isDirectory() && (await isRoot(path.join(dir, s.name)))) roots.push(path.join(dir, s.name));
  }
  return roots;
}

async function describe(dir: string): Promise<Record<string, unknown> | null> {
  try {
    const meta = JSON.parse(await fs.readFile(path.join(dir, 'meta.json'), 'utf8'));
    const data = await fs.stat(path.join(dir, meta.format === 'qcow2' ? 'data.qcow2' : 'data.img'));
    return { ...meta, exported: false, sizeOnDisk: data.blocks * 512, lastUpdated: new Date(data.mtimeMs).toISOString(), locked: false };
  } catch {
    return null;
  }
}

async function accessible(mnt: string, client: string): Promise<unknown[]> {
  const out: unknown[] = [];
  for (const root of await findRoots(mnt)) {
    const dirs = (await fs.readdir(root)).filter((n) => /^vid\.[0-9a-f]{32}\.elimg$/.test(n));
    // The same bounded parallelism as the daemon's own scan, so the baseline is not handicapped.
    for (let i = 0; i < dirs.length; i += 64) {
      const batch = await Promise.all(dirs.slice(i, i + 64).map((n) => describe(path.join(root, n))));
      for (const v of batch) if (v && (!v.private || v.creatorID === client)) out.push({ ...v, own: v.creatorID === client });
    }
  }
  return out;
}

async function info(mnt: string, vid: string): Promise<unknown | null> {
  for (const root of await findRoots(mnt)) {
    const v = await describe(path.join(root, `vid.${vid}.elimg`));
    if (v) return v;
  }
  return null;
}

export interface BaselineServer {
  port: number;
  close(): Promise<void>;
}

/** Serves `POST /accessible` and `POST /info` on an ephemeral port of 127.0.0.1. */
export async function startRescanBaseline(mnt: string): Promise<BaselineServer> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString());
        const answer = req.url === '/accessible' ? await accessible(mnt, body.client_uid) : await info(mnt, body.volume_id);
        res.writeHead(answer ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(answer ?? { error: 'not found' }));
      } catch (err) {
        res.writeHead(500).end(String(err));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
