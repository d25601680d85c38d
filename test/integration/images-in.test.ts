import { promises as fs } from 'node:fs';
import type { AddressInfo } from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { startImageServer } from '../helpers/image-server.js';
import { imageInfo } from '../helpers/images.js';
import { makeTree, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

const MB = 1024 * 1024;

/** Exit 0 of `qemu-img compare`: the two images hold the same guest-visible bytes. */
async function sameImage(a: string, b: string): Promise<boolean> {
  return (await execa('qemu-img', ['compare', '-U', a, b], { reject: false })).exitCode === 0;
}

/** Volume directories and stray files under root `a` (a failed import must leave none). */
async function volumeDirs(mnt: string): Promise<string[]> {
  return (await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'));
}

describe('images in: create/url, create/upload, iso/create (real qemu-img, local HTTP server)', function () {
  this.timeout(60_000);
  let src: string;
  let server: Awaited<ReturnType<typeof startImageServer>>;
  let closedPort = 0;
  let mnt: string;
  let d: TestDaemon;
  const dataOf = (vid: string, ext: string) => path.join(mnt, 'a', `vid.${vid}.elimg`, `data.${ext}`);

  before(async () => {
    src = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-images-'));
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(src, 'cloud.qcow2'), '64M']);
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0xcd 40M 2M', path.join(src, 'cloud.qcow2')]);
    await execa('qemu-img', ['convert', '-O', 'raw', path.join(src, 'cloud.qcow2'), path.join(src, 'disk.raw')]);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', path.join(src, 'cloud.qcow2'), '-F', 'qcow2', path.join(src, 'backed.qcow2')]);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${path.join(src, 'datafile.raw')}`, path.join(src, 'datafile.qcow2'), '1M']);
    await execa('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', path.join(src, 'flat.vmdk'), '1M']);
    // qcow2's built-in AES encryption: LUKS would do as well, but its key derivation times itself and
    // fails at random on a loaded machine ("Unable to get accurate CPU usage").
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '--object', 'secret,id=s,data=abc', '-o', 'encrypt.format=aes,encrypt.key-secret=s', path.join(src, 'encrypted.qcow2'), '1M']);
    await fs.writeFile(path.join(src, 'flat.vmdk'), (await fs.readFile(path.join(src, 'flat.vmdk'), 'utf8')).replace('flat-flat.vmdk', path.join(src, 'disk.raw')));
    await fs.writeFile(path.join(src, 'empty.img'), '');
    server = await startImageServer(src);
    const probe = http.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => probe.once('listening', r));
    closedPort = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
  });
  after(async () => {
    await server?.close();
    await removeTree(src);
  });
  beforeEach(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt, { transferIdleTimeoutMs: 500 });
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  for (const [file, format] of [['cloud.qcow2', 'qcow2'], ['disk.raw', 'raw'], ['cloud.qcow2', 'raw']] as const)
    it(`create/url imports ${file} as ${format}: same bytes, exact meta.json, the seed's create answer`, async () => {
      const res = await d.post('create/url', { ...seedCreateBody({ format, name: 'img' }), size: undefined, url: server.url(file) }).expect(200);
      const { vid } = res.body;
      expect(res.body).to.deep.equal({
        alg: 'no', bootable: false, bus: 'virtio', clonable: false, creatorID: OWNER, img_format: format, name: 'img',
        private: false, readonly: false, shareable: false, size: 64 * MB / 1e9, vid, labels: {},
      });
      const data = dataOf(vid, format === 'raw' ? 'img' : 'qcow2');
      expect((await imageInfo(data)).format).to.equal(format);
      expect(await sameImage(path.join(src, file), data)).to.equal(true);
      const meta = JSON.parse(await fs.readFile(path.join(mnt, 'a', `vid.${vid}.elimg`, 'meta.json'), 'utf8'));
      expect(meta.size).to.equal(64 * MB);
      expect((await fs.readdir(path.join(mnt, 'a', `vid.${vid}.elimg`))).sort()).to.deep.equal([path.basename(data), 'meta.json'].sort());
    });

  it('create/url grows the image to the size asked, and claims quota for it', async () => {
    const { vid } = (await d.post('create/url', seedCreateBody({ format: 'qcow2', size: 0.1, url: server.url('cloud.qcow2') })).expect(200)).body;
    expect((await imageInfo(dataOf(vid, 'qcow2')))['virtual-size']).to.equal(100_000_256);
    expect(await sameImage(path.join(src, 'cloud.qcow2'), dataOf(vid, 'qcow2'))).to.equal(true);
    const { body: info } = await d.post('info', { volume_id: vid }).expect(200);
    expect(info.size).to.equal(100_000_256);
  });

  it('refuses a qcow2 with a backing file, leaving nothing', async () => {
    const res = await d.post('create/url', { creatorID: OWNER, url: server.url('backed.qcow2') }).expect(400);
    expect(res.body).to.deep.equal({ error: 'the image has a backing file; only self-contained images are accepted', code: 'bad_request' });
    expect(await volumeDirs(mnt)).to.deep.equal([]);
  });

  it('refuses images that read other files (external data file, flat vmdk descriptor), leaving nothing', async () => {
    const res = await d.post('create/url', { creatorID: OWNER, url: server.url('datafile.qcow2') }).expect(400);
    expect(res.body.error).to.equal('the image has an external data file; only self-contained images are accepted');
    const flat = await d.post('create/url', { creatorID: OWNER, url: server.url('flat.vmdk') }).expect(400);
    expect(flat.body.error).to.equal('the image keeps its data in another file; only single-file images are accepted');
    expect(await volumeDirs(mnt)).to.deep.equal([]);
  });

  it('refuses an encrypted qcow2 (400, it could not be converted without its key), leaving nothing', async () => {
    const res = await d.post('create/url', { creatorID: OWNER, url: server.url('encrypted.qcow2') }).expect(400);
    expect(res.body).to.deep.equal({ error: 'encrypted images are not accepted', code: 'bad_request' });
    const upload = await d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}&format=raw`).set('Content-Type', 'application/octet-stream')
      .send(await fs.readFile(path.join(src, 'encrypted.qcow2'))).expect(400);
    expect(upload.body).to.deep.equal({ error: 'encrypted images are not accepted', code: 'bad_request' });
    expect(await volumeDirs(mnt)).to.deep.equal([]);
  });

  it('refuses an empty image (400) from a URL, a raw body or a multipart file, leaving nothing', async () => {
    const empty = { error: 'the image is empty (0 bytes)', code: 'bad_request' };
    expect((await d.post('create/url', { creatorID: OWNER, url: server.url('empty.img') }).expect(400)).body).to.deep.equal(empty);
    expect((await d.post('iso/create', { creatorID: OWNER, isotype: 'tool', os_family: 'windows', url: server.url('empty.img') }).expect(400)).body).to.deep.equal(empty);
    const raw = await d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}&format=raw`).set('Content-Type', 'application/octet-stream').send(Buffer.alloc(0)).expect(400);
    expect(raw.body).to.deep.equal(empty);
    const multipart = await d.api.post('/api/v1.0/create/upload').field('fields', JSON.stringify({ creatorID: OWNER, size: 1 })).attach('file', Buffer.alloc(0), 'empty.img').expect(400);
    expect(multipart.body).to.deep.equal(empty);
    // Not empty, but a disk of 0 bytes all the same.
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(src, 'zero.qcow2'), '0']);
    const zero = await d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}`).set('Content-Type', 'application/octet-stream').send(await fs.readFile(path.join(src, 'zero.qcow2'))).expect(400);
    expect(zero.body).to.deep.equal({ error: "the image's virtual size is 0 bytes (send a size to grow it to)", code: 'bad_request' });
    expect(await volumeDirs(mnt)).to.deep.equal([]);
  });

  it('refuses an image over the root quota with 507, leaving nothing', async () => {
    await d.stop();
    await fs.writeFile(path.join(mnt, 'a', 'settings.json'), JSON.stringify({ 'max-total-size': '50M' }));
    d = await startTestDaemon(mnt);
    const res = await d.post('create/url', { creatorID: OWNER, format: 'raw', url: server.url('disk.raw') }).expect(507);
    expect(res.body.code).to.equal('no_room');
    expect(await volumeDirs(mnt)).to.deep.equal([]);
  });

  describe('placed by the announced length (root a has the most free quota but takes volumes of 10 MB at most)', () => {
    beforeEach(async () => {
      await d.stop();
      await fs.writeFile(path.join(mnt, 'a', 'settings.json'), JSON.stringify({ 'max-volume-size': '10M', 'max-total-size': '1T' }));
      await fs.mkdir(path.join(mnt, 'b'));
      await fs.writeFile(path.join(mnt, 'b', 'settings.json'), JSON.stringify({ 'max-total-size': '500M' }));
      d = await startTestDaemon(mnt);
    });
    const inB = async (vid: string) => {
      expect(await volumeDirs(mnt)).to.deep.equal([]);
      expect(await fs.readdir(path.join(mnt, 'b'))).to.include(`vid.${vid}.elimg`);
      expect(await sameImage(path.join(src, 'disk.raw'), path.join(mnt, 'b', `vid.${vid}.elimg`, 'data.img'))).to.equal(true);
    };

    it('create/url goes to the root that can hold its Content-Length', async () => {
      const res = await d.post('create/url', { creatorID: OWNER, format: 'raw', url: server.url('disk.raw') }).expect(200);
      await inB(res.body.vid);
    });

    it('a raw-body upload goes to the root that can hold its Content-Length', async () => {
      const res = await d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}&format=raw`).set('Content-Type', 'application/octet-stream')
        .send(await fs.readFile(path.join(src, 'disk.raw'))).expect(200);
      await inB(res.body.vid);
    });

    it('a multipart upload goes to the root that can hold its Content-Length', async () => {
      const res = await d.api.post('/api/v1.0/create/upload').field('fields', JSON.stringify({ creatorID: OWNER, format: 'raw' }))
        .attach('file', path.join(src, 'disk.raw')).expect(200);
      await inB(res.body.vid);
    });
  });

  for (const [what, url, message] of [
    ['a 404', () => server.url('missing.qcow2'), /answered 404/],
    ['a truncated body', () => server.url('truncated/disk.raw'), /was cut short: \d+ of 67108864 bytes arrived/],
    ['a stalled body', () => server.url('stall/disk.raw'), /stalled/],
    ['a refused connection', () => `http://127.0.0.1:${closedPort}/x.qcow2`, /refused the connection/],
  ] as const)
    it(`answers 502 for ${what} and leaves no volume and no temp file`, async () => {
      const res = await d.post('create/url', { creatorID: OWNER, url: url() }).expect(502);
      expect(res.body.code).to.equal('upstream_failed');
      expect(res.body.error).to.match(message);
      expect(await volumeDirs(mnt)).to.deep.equal([]);
      expect(await fs.readdir(path.join(mnt, 'a', '.elemento-bin')).catch(() => [])).to.deep.equal([]);
    });

  it('imports an image its server sends gzipped (Content-Encoding: gzip, the encoded Content-Length)', async () => {
    const res = await d.post('create/url', { creatorID: OWNER, format: 'raw', url: server.url('gzip/disk.raw') }).expect(200);
    expect(await sameImage(path.join(src, 'disk.raw'), dataOf(res.body.vid, 'img'))).to.equal(true);
  });

  it('runs an import as a job with bytes done (async: true → 202)', async () => {
    const { body } = await d.post('create/url', { creatorID: OWNER, format: 'raw', url: server.url('disk.raw'), async: true }).expect(202);
    let job: Record<string, unknown> = {};
    await waitFor(async () => {
      job = (await d.api.get(`/api/v1.0/jobs/${body.job}`).expect(200)).body;
      return job.state !== 'running';
    }, 20_000, 'the import job');
    expect(job.state).to.equal('done');
    expect(job.percent).to.equal(100);
    expect(job.bytes).to.equal(64 * MB);
    expect(await sameImage(path.join(src, 'disk.raw'), dataOf((job.result as { vid: string }).vid, 'img'))).to.equal(true);
  });

  it('a cancelled import job (DELETE /jobs/<id>) leaves no volume and no temp file', async () => {
    const { body } = await d.post('create/url', { creatorID: OWNER, format: 'raw', url: server.url('stall/disk.raw'), async: true }).expect(202);
    await waitFor(async () => (await volumeDirs(mnt)).length === 1, 5000, 'the import to start');
    const { body: job } = await d.api.delete(`/api/v1.0/jobs/${body.job}`).expect(200);
    expect(job).to.include({ state: 'cancelled', error: 'cancelled', kind: 'import' });
    expect(await volumeDirs(mnt)).to.deep.equal([]);
  });

  it('create/upload streams a multipart upload into a volume that compares equal', async () => {
    const res = await d.api
      .post('/api/v1.0/create/upload')
      .field('fields', JSON.stringify({ creatorID: OWNER, name: 'up', format: 'qcow2' }))
      .attach('file', path.join(src, 'disk.raw'))
      .expect(200);
    expect(res.body.img_format).to.equal('qcow2');
    expect(await sameImage(path.join(src, 'disk.raw'), dataOf(res.body.vid, 'qcow2'))).to.equal(true);
  });

  it('create/upload takes the image as a raw body with the fields in the query', async () => {
    const res = await d.api
      .post(`/api/v1.0/create/upload?creatorID=${OWNER}&format=raw&name=raw-up&private=true&labels=${encodeURIComponent('{"os":"none"}')}`)
      .set('Content-Type', 'application/octet-stream')
      .send(await fs.readFile(path.join(src, 'cloud.qcow2')))
      .expect(200);
    expect(res.body).to.include({ img_format: 'raw', name: 'raw-up', private: true, size: 64 * MB / 1e9 });
    expect(res.body.labels).to.deep.equal({ os: 'none' });
    expect(await sameImage(path.join(src, 'cloud.qcow2'), dataOf(res.body.vid, 'img'))).to.equal(true);
    // A raw image that is not a whole number of sectors is padded to the size meta.json promises.
    const odd = Buffer.alloc(3_000_000, 7);
    const oddRes = await d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}&format=raw`).set('Content-Type', 'application/octet-stream').send(odd).expect(200);
    const oddFile = await fs.readFile(dataOf(oddRes.body.vid, 'img'));
    expect(oddFile.length).to.equal(3_000_320);
    expect(oddFile.subarray(0, odd.length).equals(odd)).to.equal(true);
    expect(JSON.parse(await fs.readFile(path.join(path.dirname(dataOf(oddRes.body.vid, 'img')), 'meta.json'), 'utf8')).size).to.equal(3_000_320);
    const bad = await d.api.post('/api/v1.0/create/upload?format=raw').set('Content-Type', 'application/octet-stream').send(Buffer.alloc(512)).expect(400);
    expect(bad.body).to.deep.equal({ error: "request was badly formatted. 'creatorID'", code: 'bad_request', field: 'creatorID' });
    expect(await volumeDirs(mnt)).to.have.length(2);
  });

  /** Starts an upload on a real socket, cuts it after 8 MB of 64, and waits for every trace to go. */
  async function dropUpload(urlPath: string, contentType: string, head = ''): Promise<void> {
    const listener = d.app.listen(0, '127.0.0.1');
    await new Promise((r) => listener.once('listening', r));
    try {
      const port = (listener.address() as AddressInfo).port;
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: urlPath, headers: { 'Content-Type': contentType, 'Content-Length': 64 * MB } });
      req.on('error', () => undefined);
      req.write(head);
      req.write(Buffer.alloc(8 * MB, 1));
      await waitFor(async () => (await volumeDirs(mnt)).length === 1, 5000, 'the upload to start');
      req.destroy();
      await waitFor(async () => (await volumeDirs(mnt)).length === 0, 5000, 'the half-made volume to go');
    } finally {
      listener.close();
    }
  }

  /**
   * Sends `pieces` of one request on a real socket, pausing `pauseMs` between them, and returns the
   * answer's status and JSON body (the request announces its whole length).
   */
  async function sendInPieces(urlPath: string, contentType: string, pieces: Buffer[], pauseMs: number): Promise<{ status: number; body: Record<string, unknown> }> {
    const listener = d.app.listen(0, '127.0.0.1');
    await new Promise((r) => listener.once('listening', r));
    try {
      const port = (listener.address() as AddressInfo).port;
      const length = pieces.reduce((n, p) => n + p.length, 0);
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: urlPath, headers: { 'Content-Type': contentType, 'Content-Length': length } });
      const answer = new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
        req.on('response', (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
        });
        req.on('error', reject);
      });
      for (const [i, piece] of pieces.entries()) {
        if (i > 0) await new Promise((r) => setTimeout(r, pauseMs));
        if (!req.destroyed) req.write(piece);
      }
      req.end();
      return await answer;
    } finally {
      listener.close();
    }
  }

  const BOUNDARY = 'XBOUNDARYX';
  const fieldPart = (name: string, value: string) => Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`);
  const filePart = (name: string, content: Buffer) =>
    Buffer.concat([Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`), content, Buffer.from('\r\n')]);
  const closing = Buffer.from(`--${BOUNDARY}--\r\n`);

  for (const pauseMs of [50, 300])
    it(`a multipart upload refused after its file part (a second file ${pauseMs} ms later) leaves no volume`, async () => {
      const image = await fs.readFile(path.join(src, 'cloud.qcow2'));
      const body = Buffer.concat([fieldPart('fields', JSON.stringify({ creatorID: OWNER, format: 'qcow2' })), filePart('one.qcow2', image), filePart('two.qcow2', image), closing]);
      // Cut just after the second part's delimiter: busboy has seen the first file end before the pause.
      const cut = body.indexOf(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="two.qcow2"`) + BOUNDARY.length + 4;
      const res = await sendInPieces('/api/v1.0/create/upload', `multipart/form-data; boundary=${BOUNDARY}`, [body.subarray(0, cut), body.subarray(cut)], pauseMs);
      expect(res).to.deep.equal({ status: 400, body: { error: 'a request may carry at most 1 files', code: 'bad_request' } });
      expect(await volumeDirs(mnt)).to.deep.equal([]);
      // Nor does one appear later: the import was stopped, not left running.
      await new Promise((r) => setTimeout(r, 1000));
      expect(await volumeDirs(mnt)).to.deep.equal([]);
    });

  it('a multipart upload larger than any root can hold is refused (507) before its file is read', async () => {
    await d.stop();
    await fs.writeFile(path.join(mnt, 'a', 'settings.json'), JSON.stringify({ 'max-total-size': '50M' }));
    d = await startTestDaemon(mnt);
    const listener = d.app.listen(0, '127.0.0.1');
    await new Promise((r) => listener.once('listening', r));
    const head = Buffer.concat([fieldPart('fields', JSON.stringify({ creatorID: OWNER, format: 'raw' })), Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.iso"\r\n\r\n`)]);
    const req = http.request({
      host: '127.0.0.1', port: (listener.address() as AddressInfo).port, method: 'POST', path: '/api/v1.0/create/upload',
      headers: { 'Content-Type': `multipart/form-data; boundary=${BOUNDARY}`, 'Content-Length': 700e6 },
    });
    req.on('error', () => undefined);
    try {
      const answer = new Promise<{ status: number; body: Record<string, unknown> }>((resolve) =>
        req.on('response', (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
        }),
      );
      req.write(head);
      req.write(Buffer.alloc(MB, 7));
      const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer while the body was still coming')), 5000));
      const res = await Promise.race([answer, timeout]);
      expect(res.status).to.equal(507);
      expect(res.body).to.include({ code: 'no_room', error: 'no storage root has room for a volume of 700000256 bytes' }); // 700 MB in whole sectors
      expect(await volumeDirs(mnt)).to.deep.equal([]);
    } finally {
      req.destroy();
      listener.close();
    }
  });

  it('a dropped raw-body upload leaves no volume and no temp file', () =>
    dropUpload(`/api/v1.0/create/upload?creatorID=${OWNER}&format=raw`, 'application/octet-stream'));

  it('a dropped multipart upload leaves no volume and no temp file', () => {
    const b = 'XBOUNDARYX';
    const head = `--${b}\r\nContent-Disposition: form-data; name="fields"\r\n\r\n${JSON.stringify({ creatorID: OWNER, format: 'raw' })}\r\n--${b}\r\nContent-Disposition: form-data; name="file"; filename="disk.raw"\r\nContent-Type: application/octet-stream\r\n\r\n`;
    return dropUpload('/api/v1.0/create/upload', `multipart/form-data; boundary=${b}`, head);
  });
});
