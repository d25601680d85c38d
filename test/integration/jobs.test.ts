import { once } from 'node:events';
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { execa } from 'execa';
import { expect } from 'chai';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { hasPattern, writePattern } from '../helpers/images.js';
import { startImageServer } from '../helpers/image-server.js';
import { pausedDownload } from '../helpers/download.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

const binary = (res: import('superagent').Response, cb: (err: Error | null, body: unknown) => void) => {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => cb(null, Buffer.concat(chunks)));
};

const MB_1 = 1024 * 1024;

describe('jobs', () => {
  let mnt: string;
  let d: TestDaemon;
  let vid: string;
  let dir: string;

  beforeEach(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt);
    vid = (await d.post('create', seedCreateBody({ format: 'raw', size: 1 })).expect(200)).body.vid;
    dir = path.join(mnt, 'a', `vid.${vid}.elimg`);
    await writePattern(path.join(dir, 'data.img'), 'raw', 0x5a, 0, 768 * 1024 * 1024);
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  it('runs convert as a job with async: true: 202, then progress, then done with the seed answer', async () => {
    const res = await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2', async: true }).expect(202);
    const job = res.body.job as string;
    expect(job).to.match(/^[0-9a-f]{32}$/);
    let last: Record<string, unknown> = {};
    await waitFor(async () => {
      last = (await d.api.get(`/api/v1.0/jobs/${job}`).expect(200)).body;
      return last.state !== 'running';
    }, 60_000, 'the convert job');
    expect(last).to.include({ id: job, kind: 'convert', vid, state: 'done', percent: 100 });
    expect(last.result).to.deep.equal({ vid, creatorID: OWNER, format: 'qcow2' });
    expect(await hasPattern(path.join(dir, 'data.qcow2'), 'qcow2', 0x5a, 0, 1024 * 1024)).to.equal(true);
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.jobs.map((j: { id: string }) => j.id)).to.include(job);
  });

  it('cancelling a convert kills qemu-img and leaves no trace, the source untouched', async () => {
    const res = await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2', async: true }).expect(202);
    const cancelled = (await d.api.delete(`/api/v1.0/jobs/${res.body.job}`).expect(200)).body;
    expect(cancelled).to.include({ state: 'cancelled', error: 'cancelled' });
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.img', 'meta.json']);
    expect(JSON.parse(await fs.readFile(path.join(dir, 'meta.json'), 'utf8')).format).to.equal('raw');
    expect(await hasPattern(path.join(dir, 'data.img'), 'raw', 0x5a, 700 * 1024 * 1024, 1024 * 1024)).to.equal(true);
    await d.api.delete(`/api/v1.0/jobs/${res.body.job}`).expect(409);
    await d.api.get(`/api/v1.0/jobs/${'0'.repeat(32)}`).expect(404);
  });

  it("answers an async request's own refusals as errors (unknown 404, not the owner 403, locked 409), not 202", async () => {
    expect((await d.post('update/convert', { vid, creatorID: OTHER, format: 'qcow2', async: true }).expect(403)).body.code).to.equal('forbidden');
    const unknown = 'b'.repeat(32);
    expect((await d.post('clone', { volume_id: unknown, creatorID: OWNER, async: true }).expect(404)).body.error).to.equal(`volume ${unknown} does not exist`);
    const first = (await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2', async: true }).expect(202)).body.job;
    expect((await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2', async: true }).expect(409)).body.error).to.match(/locked/);
    await d.api.delete(`/api/v1.0/jobs/${first}`).expect(200);
  });

  it('an upload runs as a job: async: true answers 202 once the body is read, and the job ends done with the create answer', async () => {
    const image = await fs.readFile(path.join(dir, 'data.img'));
    const body = image.subarray(0, 64 * 1024 * 1024);
    const raw = await d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}&format=qcow2&async=true`).set('Content-Type', 'application/octet-stream').send(body).expect(202);
    const multipart = await d.api.post('/api/v1.0/create/upload').field('fields', JSON.stringify({ creatorID: OWNER, format: 'raw', async: true })).attach('file', body, 'disk.img').expect(202);
    for (const { job } of [raw.body, multipart.body]) {
      let last: Record<string, unknown> = {};
      await waitFor(async () => {
        last = (await d.api.get(`/api/v1.0/jobs/${job}`).expect(200)).body;
        return last.state !== 'running';
      }, 60_000, 'the upload job');
      expect(last).to.include({ kind: 'upload', state: 'done', percent: 100 });
      const made = last.result as { vid: string; img_format: string };
      expect(last.vid).to.equal(made.vid);
      const file = path.join(mnt, 'a', `vid.${made.vid}.elimg`, `data.${made.img_format === 'qcow2' ? 'qcow2' : 'img'}`);
      expect(await hasPattern(file, made.img_format as 'raw' | 'qcow2', 0x5a, 0, 64 * 1024 * 1024)).to.equal(true);
    }
  });

  /** An upload over a real socket whose body the test sends piece by piece. */
  async function slowUpload(urlPath: string, contentType: string, length: number) {
    const listener = d.app.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const req = http.request({ host: '127.0.0.1', port: (listener.address() as AddressInfo).port, method: 'POST', path: urlPath, headers: { 'content-type': contentType, 'content-length': length } });
    const answer = new Promise<{ status: number; body: Record<string, unknown> } | 'cut'>((resolve) => {
      req.on('error', () => resolve('cut'));
      req.on('response', (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
      });
    });
    return {
      write: (chunk: Buffer) => new Promise<void>((resolve) => (req.write(chunk) ? resolve() : req.once('drain', resolve))),
      destroy: () => req.destroy(),
      answer: answer.finally(() => listener.close()),
    };
  }

  const runningUpload = async () => {
    let found: Record<string, unknown> | undefined;
    await waitFor(async () => {
      const jobs = (await d.api.get('/api/v1.0/jobs').expect(200)).body as Array<Record<string, unknown>>;
      found = jobs.find((j) => j.kind === 'upload' && j.state === 'running' && (j.bytes as number) > 0);
      return found !== undefined;
    }, 10_000, 'the upload job to count bytes');
    return found!;
  };

  const volumeDirs = async () => (await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'));

  it('an async upload cancelled while its body arrives answers 409 saying so (not 500), and leaves nothing', async () => {
    const MB = 1024 * 1024;
    const up = await slowUpload(`/api/v1.0/create/upload?creatorID=${OWNER}&format=raw&async=true`, 'application/octet-stream', 64 * MB);
    for (let i = 0; i < 8; i++) await up.write(Buffer.alloc(MB, 0x5a));
    const job = await runningUpload();
    await d.api.delete(`/api/v1.0/jobs/${job.id}`).expect(200);
    const answer = await up.answer;
    up.destroy();
    expect(answer).to.deep.equal({ status: 409, body: { error: `the upload was cancelled (DELETE /api/v1.0/jobs/${job.id})`, code: 'conflict', job: job.id } });
    expect((await d.api.get(`/api/v1.0/jobs/${job.id}`).expect(200)).body).to.include({ state: 'cancelled', error: 'cancelled' });
    expect(await volumeDirs()).to.deep.equal([`vid.${vid}.elimg`]);
  });

  it('an async upload shows its percent while its body arrives (raw and multipart), and one whose client leaves fails saying so, leaving nothing', async () => {
    const MB = 1024 * 1024;
    const boundary = 'XXBOUNDARY';
    const head = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="fields"\r\n\r\n${JSON.stringify({ creatorID: OWNER, format: 'raw', async: true })}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="disk.img"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    );
    const uploads = [
      { path: `/api/v1.0/create/upload?creatorID=${OWNER}&format=raw&async=true`, type: 'application/octet-stream', head: Buffer.alloc(0), extra: 0 },
      { path: '/api/v1.0/create/upload', type: `multipart/form-data; boundary=${boundary}`, head, extra: head.length + `\r\n--${boundary}--\r\n`.length },
    ];
    for (const u of uploads) {
      const up = await slowUpload(u.path, u.type, u.extra + 64 * MB);
      await up.write(u.head);
      for (let i = 0; i < 16; i++) await up.write(Buffer.alloc(MB, 0x5a));
      const job = await runningUpload();
      expect(job.percent, `${u.type}: percent after a quarter of the body`).to.be.above(0);
      up.destroy();
      expect(await up.answer).to.equal('cut');
      let last: Record<string, unknown> = {};
      await waitFor(async () => {
        last = (await d.api.get(`/api/v1.0/jobs/${job.id}`).expect(200)).body;
        return last.state !== 'running';
      }, 10_000, 'the upload job to end');
      expect(last, u.type).to.include({ state: 'failed', error: 'the upload was cut short: the client closed the connection' });
      expect(await volumeDirs()).to.deep.equal([`vid.${vid}.elimg`]);
    }
  });

  it('an import job names the volume it makes as soon as it is claimed', async () => {
    const src = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-jobs-'));
    const server = await startImageServer(src);
    try {
      await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(src, 'disk.img'), '8M']);
      const { job } = (await d.post('create/url', { ...seedCreateBody({ format: 'raw' }), url: server.url('stall/disk.img'), async: true }).expect(202)).body;
      const seen = (await d.api.get(`/api/v1.0/jobs/${job}`).expect(200)).body;
      expect(seen).to.include({ kind: 'import', state: 'running' });
      expect(await fs.readdir(path.join(mnt, 'a'))).to.include(`vid.${seen.vid}.elimg`);
      await d.api.delete(`/api/v1.0/jobs/${job}`).expect(200);
    } finally {
      await server.close();
      await removeTree(src);
    }
  });

  it('a synchronous request whose job is cancelled answers 409 saying so; one whose client leaves is cancelled, leaving nothing', async () => {
    const running = d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2' }).then((r) => r);
    let job = '';
    await waitFor(async () => {
      const jobs = (await d.api.get('/api/v1.0/status').expect(200)).body.jobs as Array<{ id: string; state: string }>;
      job = jobs.find((j) => j.state === 'running')?.id ?? '';
      return job !== '';
    }, 10_000, 'the convert job');
    await d.api.delete(`/api/v1.0/jobs/${job}`).expect(200);
    const answer = await running;
    expect(answer.status).to.equal(409);
    expect(answer.body).to.deep.equal({ error: `the convert was cancelled (DELETE /api/v1.0/jobs/${job})`, code: 'conflict', job });
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.img', 'meta.json']);

    // A client that leaves a synchronous import: nobody would ever learn its volume, so it is not made.
    const src = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-jobs-'));
    const server = await startImageServer(src);
    const listener = d.app.listen(0, '127.0.0.1');
    try {
      await once(listener, 'listening');
      await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(src, 'disk.img'), '8M']);
      const req = http.request({ host: '127.0.0.1', port: (listener.address() as AddressInfo).port, method: 'POST', path: '/api/v1.0/create/url', headers: { 'content-type': 'application/json' } });
      req.on('error', () => undefined);
      req.end(JSON.stringify({ ...seedCreateBody({ format: 'raw' }), url: server.url('stall/disk.img') }));
      await waitFor(async () => ((await d.api.get('/api/v1.0/status').expect(200)).body.jobs as Array<{ kind: string }>).some((j) => j.kind === 'import'), 10_000, 'the import job');
      req.destroy();
      await waitFor(async () => ((await d.api.get('/api/v1.0/status').expect(200)).body.jobs as Array<{ kind: string; state: string }>).some((j) => j.kind === 'import' && j.state === 'cancelled'), 10_000, 'the import to be cancelled');
      expect((await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'))).to.deep.equal([`vid.${vid}.elimg`]);
    } finally {
      listener.close();
      await server.close();
      await removeTree(src);
    }
  });

  it('a download is a job: X-Job names it, GET /jobs shows its bytes and percent, DELETE cuts it (the volume free again), a client that leaves fails it', async () => {

    const first = await pausedDownload(d.app, vid);
    const job = String(first.headers['x-job']);
    expect(job).to.match(/^[0-9a-f]{32}$/);
    const running = (await d.api.get(`/api/v1.0/jobs/${job}`).expect(200)).body;
    expect(running).to.include({ id: job, kind: 'download', vid, state: 'running' });
    expect(running.bytes).to.be.greaterThan(0);
    expect(running.percent).to.be.within(0, 100);
    const cancelled = (await d.api.delete(`/api/v1.0/jobs/${job}`).expect(200)).body;
    expect(cancelled).to.include({ state: 'cancelled', error: 'cancelled' });
    expect(await first.resume().then(() => 'whole', () => 'cut')).to.equal('cut');
    // Grown, so that the next download is longer than what the socket buffers hold.
    await d.post('update/resize', { vid, creatorID: OWNER, size: 2 }).expect(200);

    const left = await pausedDownload(d.app, vid);
    left.leave();
    await waitFor(async () => (await d.api.get(`/api/v1.0/jobs/${left.headers['x-job']}`).expect(200)).body.state === 'failed', 10_000, 'the left download to fail');
    expect((await d.api.get(`/api/v1.0/jobs/${left.headers['x-job']}`)).body.error).to.match(/^the connection closed after \d+ of 2000000000 bytes$/);

    // A whole answer, here one range of it: percent is of what this answer sends.
    const part = await d.api.get(`/api/v1.0/volumes/${vid}/data`).set('Range', 'bytes=0-1048575').buffer(true).parse(binary).expect(206);
    expect(part.body).to.have.length(1048576);
    const done = (await d.api.get(`/api/v1.0/jobs/${part.headers['x-job']}`).expect(200)).body;
    expect(done).to.include({ kind: 'download', vid, state: 'done', percent: 100, bytes: 1048576 });
    expect(done.result).to.deep.equal({ vid, bytes: 1048576 });
    // A refused download is a failed job naming why.
    const refused = await d.api.get(`/api/v1.0/volumes/${vid}/data`).set('Range', 'bytes=3000000000-').expect(416);
    expect((await d.api.get(`/api/v1.0/jobs/${refused.headers['x-job']}`).expect(200)).body).to.include({ state: 'failed', error: refused.body.error });

  });

  it('cuts a download whose image fails to read midway (EIO), where the client waited for the rest, and fails its job naming why', async () => {
    // A disk error cannot be made here on demand: the image's read stream is replaced by one that sends 1 MB, then EIO.
    const cjsFs = createRequire(import.meta.url)('node:fs') as typeof import('node:fs');
    const realStream = cjsFs.createReadStream;
    cjsFs.createReadStream = ((file: string, options?: object) => {
      if (!String(file).endsWith(path.join(`vid.${vid}.elimg`, 'data.img'))) return realStream(file, options as never);
      let sent = false;
      return new Readable({
        read() {
          // The error once the first megabyte has reached the client (the answer's headers with it).
          if (sent) return void setTimeout(() => this.destroy(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO', errno: -5, syscall: 'read' })), 300);
          sent = true;
          this.push(Buffer.alloc(MB_1));
        },
      });
    }) as typeof realStream;
    const server = d.app.listen(0, '127.0.0.1');
    try {
      await once(server, 'listening');
      const started = Date.now();
      const outcome = await new Promise<{ how: string; got: number; length: number; job: string }>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, path: `/api/v1.0/volumes/${vid}/data` }, (res) => {
          let got = 0;
          const end = (how: string) => resolve({ how, got, length: Number(res.headers['content-length']), job: String(res.headers['x-job']) });
          res.on('data', (chunk: Buffer) => (got += chunk.length));
          res.on('end', () => end('ended'));
          res.on('error', () => end('cut'));
          res.on('close', () => end(res.complete ? 'ended' : 'cut'));
        });
        req.on('error', () => resolve({ how: 'cut before the headers', got: 0, length: 0, job: '' }));
      });
      expect(outcome.how).to.equal('cut');
      expect(outcome.got).to.be.below(outcome.length);
      expect(Date.now() - started).to.be.below(10_000); // not left to the transfer idle timeout
      const job = (await d.api.get(`/api/v1.0/jobs/${outcome.job}`).expect(200)).body;
      expect(job).to.include({ kind: 'download', state: 'failed', error: `the filesystem holding volume ${vid}'s image is not reachable (EIO)` });
    } finally {
      cjsFs.createReadStream = realStream;
      server.close();
    }
  });

  it('a finished download job (kept an hour) does not hold its connection: its socket and answer are collected', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const server = d.app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const sockets: WeakRef<object>[] = [];
    server.on('connection', (socket) => sockets.push(new WeakRef(socket)));
    const agent = new http.Agent({ keepAlive: false });
    try {
      for (let i = 0; i < 20; i++)
        await new Promise<void>((resolve, reject) => {
          const port = (server.address() as AddressInfo).port;
          http.get({ port, agent, path: `/api/v1.0/volumes/${vid}/data`, headers: { Range: 'bytes=0-0' } }, (res) => res.resume().on('end', resolve)).on('error', reject);
        });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect((await d.api.get('/api/v1.0/jobs').expect(200)).body.filter((j: { kind: string }) => j.kind === 'download')).to.have.length(20);
    await waitFor(() => {
      gc();
      return sockets.every((s) => s.deref() === undefined);
    }, 5000, 'the finished downloads\' sockets to be collected');
  });
});
