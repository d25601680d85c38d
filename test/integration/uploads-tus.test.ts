import { promises as fs } from 'node:fs';
import http from 'node:http';
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import supertest from 'supertest';
import winston from 'winston';
import { createApp } from '../../src/api/app.js';
import { configWith } from '../../src/config.js';
import { Daemon } from '../../src/daemon.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { bearer, TOKENS, writeTokenFile } from '../helpers/auth.js';
import { makeTree, OTHER, OWNER, removeTree, waitFor } from '../helpers/tree.js';

const MB = 1024 * 1024;
const b64 = (s: string) => Buffer.from(s).toString('base64');
const TUS = { 'Tus-Resumable': '1.0.0' };

describe('resumable uploads (tus at /api/v1.0/files)', function () {
  this.timeout(60_000);
  let src: string;
  let image: Buffer;
  let mnt: string;
  let d: TestDaemon;
  let listener: http.Server;
  let port: number;
  const volumeDirs = async () => (await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'));

  before(async () => {
    src = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-tus-'));
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(src, 'disk.qcow2'), '64M']);
    await execa('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 8M', '-c', 'write -P 0x33 30M 4M', path.join(src, 'disk.qcow2')]);
    image = await fs.readFile(path.join(src, 'disk.qcow2'));
  });
  after(() => removeTree(src));
  beforeEach(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt);
    listener = d.app.listen(0, '127.0.0.1');
    await new Promise((r) => listener.once('listening', r));
    port = (listener.address() as AddressInfo).port;
  });
  afterEach(async () => {
    listener.close();
    await d.stop();
    await removeTree(mnt);
  });

  const create = (fields: object, endpoint = 'create/upload') =>
    d.api
      .post('/api/v1.0/files')
      .set(TUS)
      .set('Upload-Length', String(image.length))
      .set('Upload-Metadata', `endpoint ${b64(endpoint)},fields ${b64(JSON.stringify(fields))}`);

  /** A PATCH whose connection is cut after `send` of the announced bytes. */
  async function cutPatch(location: string, offset: number, send: number): Promise<void> {
    const req = http.request({
      host: '127.0.0.1', port, method: 'PATCH', path: location,
      headers: { ...TUS, 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream', 'Content-Length': String(image.length - offset) },
    });
    req.on('error', () => undefined);
    req.write(image.subarray(offset, offset + send));
    await new Promise((r) => setTimeout(r, 300));
    req.destroy();
  }

  const offsetOf = async (location: string) => Number((await d.api.head(location).set(TUS).expect(200)).headers['upload-offset']);

  it('an upload cut in the middle resumes from the offset the server kept and compares equal', async () => {
    const res = await create({ creatorID: OWNER, name: 'resumed', format: 'raw' }).expect(201);
    const location = res.headers.location as string;
    expect(location).to.match(/^\/api\/v1\.0\/files\/[0-9a-f]{32}$/);
    const vid = location.split('/').pop()!;
    expect((await d.post('info', { volume_id: vid }).expect(409)).body.error).to.match(/still being created/);

    await cutPatch(location, 0, 300 * 1024);
    await waitFor(async () => (await offsetOf(location)) > 0, 5000, 'the kept offset');
    const kept = await offsetOf(location);
    expect(kept).to.be.within(1, 300 * 1024);

    const done = await d.api
      .patch(location)
      .set(TUS)
      .set('Upload-Offset', String(kept))
      .set('Content-Type', 'application/offset+octet-stream')
      .send(image.subarray(kept))
      .expect(200);
    expect(JSON.parse(done.text)).to.include({ vid, img_format: 'raw', name: 'resumed', creatorID: OWNER });
    const data = path.join(mnt, 'a', `vid.${vid}.elimg`, 'data.img');
    expect((await execa('qemu-img', ['compare', '-U', path.join(src, 'disk.qcow2'), data], { reject: false })).exitCode).to.equal(0);
    expect((await fs.readdir(path.join(mnt, 'a', `vid.${vid}.elimg`))).sort()).to.deep.equal(['data.img', 'meta.json']);
    expect((await d.post('info', { volume_id: vid }).expect(200)).body.size).to.equal(64 * MB);
  });

  it('a finished upload stays known: HEAD gives its full offset while it imports and after, a repeated last PATCH answers again', async () => {
    const location = (await create({ creatorID: OWNER, name: 'lost-answer', format: 'qcow2' }).expect(201)).headers.location as string;
    const vid = location.split('/').pop()!;
    const patch = (offset: number, bytes: Buffer) =>
      d.api.patch(location).set(TUS).set('Upload-Offset', String(offset)).set('Content-Type', 'application/offset+octet-stream').send(bytes);
    let answered = false;
    const last = patch(0, image).then((res) => {
      answered = true;
      return res;
    });
    // Until the answer comes (the client may never see it), HEAD says the bytes are all in, never 404.
    const offsets = new Set<number>();
    while (!answered) {
      const head = await d.api.head(location).set(TUS);
      expect(head.status).to.equal(200);
      offsets.add(Number(head.headers['upload-offset']));
      await new Promise((r) => setTimeout(r, 20));
    }
    const done = await last;
    expect(done.status).to.equal(200);
    expect(offsets.has(image.length)).to.equal(true);
    const head = await d.api.head(location).set(TUS).expect(200);
    expect(head.headers).to.include({ 'upload-offset': String(image.length), 'upload-length': String(image.length) });
    const again = await patch(image.length, Buffer.alloc(0)).expect(200);
    expect(JSON.parse(again.text)).to.deep.equal(JSON.parse(done.text));
    expect(JSON.parse(again.text)).to.include({ vid, name: 'lost-answer', img_format: 'qcow2' });
    expect(await volumeDirs()).to.deep.equal([`vid.${vid}.elimg`]);
    expect((await d.post('info', { volume_id: vid }).expect(200)).body.size).to.equal(64 * MB);
    // A finished upload is a volume: DELETE does not abandon it.
    const del = await d.api.delete(location).set(TUS).expect(409);
    expect(JSON.parse(del.text).code).to.equal('conflict');
    expect(await volumeDirs()).to.deep.equal([`vid.${vid}.elimg`]);
    // Once its volume is destroyed, the upload is gone too.
    await d.post('destroy', { volume_id: vid }).expect(200);
    await d.api.head(location).set(TUS).expect(404);
  });

  it('places the upload by its Upload-Length: in a root that can hold it, not the one with the most free quota', async () => {
    listener.close();
    await d.stop();
    await fs.writeFile(path.join(mnt, 'a', 'settings.json'), JSON.stringify({ 'max-volume-size': '10M', 'max-total-size': '1T' }));
    await fs.mkdir(path.join(mnt, 'b'));
    await fs.writeFile(path.join(mnt, 'b', 'settings.json'), JSON.stringify({ 'max-total-size': '500M' }));
    d = await startTestDaemon(mnt);
    const location = (await create({ creatorID: OWNER, format: 'raw' }).expect(201)).headers.location as string;
    const vid = location.split('/').pop()!;
    expect(await fs.readdir(path.join(mnt, 'b'))).to.include(`vid.${vid}.elimg`);
    await d.api.patch(location).set(TUS).set('Upload-Offset', '0').set('Content-Type', 'application/offset+octet-stream').send(image).expect(200);
    expect((await d.post('info', { volume_id: vid }).expect(200)).body.size).to.equal(64 * MB);
    expect(await volumeDirs()).to.deep.equal([]);
  });

  it('a creation with upload cut midway (no Location ever sent) leaves no volume', async () => {
    const req = http.request({
      host: '127.0.0.1', port, method: 'POST', path: '/api/v1.0/files',
      headers: {
        ...TUS, 'Upload-Length': String(image.length), 'Content-Length': String(image.length), 'Content-Type': 'application/offset+octet-stream',
        'Upload-Metadata': `endpoint ${b64('create/upload')},fields ${b64(JSON.stringify({ creatorID: OWNER, format: 'raw' }))}`,
      },
    });
    req.on('error', () => undefined);
    req.write(image.subarray(0, 300 * 1024));
    await waitFor(async () => (await volumeDirs()).length === 1, 5000, 'the upload to start');
    req.destroy();
    await waitFor(async () => (await volumeDirs()).length === 0, 5000, 'the half-made volume to go');
    // A creation that carries a first chunk whole is kept, and resumed from there.
    const first = await create({ creatorID: OWNER, format: 'raw' }).set('Content-Type', 'application/offset+octet-stream').send(image.subarray(0, MB)).expect(201);
    expect(first.headers['upload-offset']).to.equal(String(MB));
    const done = await d.api.patch(first.headers.location).set(TUS).set('Upload-Offset', String(MB)).set('Content-Type', 'application/offset+octet-stream').send(image.subarray(MB)).expect(200);
    expect(await volumeDirs()).to.deep.equal([`vid.${JSON.parse(done.text).vid}.elimg`]);
  });

  it('refuses an empty upload (Upload-Length: 0) at creation, claiming nothing', async () => {
    const res = await create({ creatorID: OWNER }).set('Upload-Length', '0').expect(400);
    expect(JSON.parse(res.text)).to.deep.equal({ error: 'the image is empty (0 bytes)', code: 'bad_request' });
    expect(await volumeDirs()).to.deep.equal([]);
  });

  it('refuses bad fields at creation with the JSON error, claiming nothing', async () => {
    const res = await create({ name: 'no-creator' }).expect(400);
    expect(JSON.parse(res.text)).to.deep.equal({ error: "request was badly formatted. 'creatorID'", code: 'bad_request', field: 'creatorID' });
    expect(await volumeDirs()).to.deep.equal([]);
  });

  it("answers tus's own refusals as the API's JSON errors (no Upload-Length, a wrong Upload-Offset)", async () => {
    const noLength = await d.api.post('/api/v1.0/files').set(TUS).set('Upload-Metadata', `fields ${b64(JSON.stringify({ creatorID: OWNER }))}`).expect(400);
    expect(noLength.headers['content-type']).to.match(/^application\/json/);
    expect(noLength.body).to.deep.equal({ error: 'Upload-Length or Upload-Defer-Length header required', code: 'bad_request' });
    const location = (await create({ creatorID: OWNER }).expect(201)).headers.location as string;
    const wrongOffset = await d.api.patch(location).set(TUS).set('Upload-Offset', '5').set('Content-Type', 'application/offset+octet-stream').send(image.subarray(5, 10)).expect(409);
    expect(wrongOffset.body).to.deep.equal({ error: 'Upload-Offset conflict', code: 'conflict' });
    const badFields = await create({ name: 'no-creator' }).expect(400);
    expect(badFields.headers['content-type']).to.match(/^application\/json/);
    expect(await offsetOf(location)).to.equal(0);
  });

  it("answers an unexpected failure as the API does (500 naming the log, not a path), logs it, and a refusal's log line says why", async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ objectMode: true, write: (info, _enc, done) => (lines.push(info as Record<string, unknown>), done()) });
    const logged = new Daemon(configWith({ mnt, rescanIntervalMs: 0, exporter: 'none' }), winston.createLogger({ transports: [new winston.transports.Stream({ stream: sink })] }));
    await logged.start();
    try {
      const api = supertest(createApp(logged));
      const location = (await api.post('/api/v1.0/files').set(TUS).set('Upload-Length', String(image.length)).set('Upload-Metadata', `fields ${b64(JSON.stringify({ creatorID: OWNER }))}`).expect(201)).headers.location as string;
      const dir = path.join(mnt, 'a', `vid.${location.split('/').pop()}.elimg`);
      // The part file removed by hand: writing it fails with an error no catalogue sentence names.
      const staging = (await fs.readdir(dir)).find((n) => n.startsWith('.upload.tmp-'))!;
      await fs.rm(path.join(dir, staging, 'part'));
      const failed = await api.patch(location).set(TUS).set('Upload-Offset', '0').set('Content-Type', 'application/offset+octet-stream').send(image.subarray(0, 4096)).expect(500);
      expect(failed.body).to.deep.equal({ error: `internal error; the daemon's log has the details (request ${failed.body.request})`, code: 'internal', request: failed.body.request });
      const errors = lines.filter((l) => l.level === 'error');
      expect(errors).to.have.length(1);
      expect(errors[0]).to.include({ message: 'request failed', requestId: failed.body.request });
      expect(errors[0].error).to.match(/ENOENT.*part/);
      await api.patch(location).set(TUS).set('Upload-Offset', '5').set('Content-Type', 'application/offset+octet-stream').send(image.subarray(5, 10)).expect(409);
      const refused = lines.filter((l) => l.message === 'request' && l.status === 409);
      expect(refused.map((l) => l.error)).to.deep.equal(['Upload-Offset conflict']);
    } finally {
      await logged.stop();
    }
  });

  it('DELETE terminates an upload and removes its volume; so does the daemon stopping', async () => {
    const first = (await create({ creatorID: OWNER }).expect(201)).headers.location as string;
    expect(await volumeDirs()).to.have.length(1);
    await d.api.delete(first).set(TUS).expect(204);
    expect(await volumeDirs()).to.deep.equal([]);
    await create({ creatorID: OWNER }).expect(201);
    expect(await volumeDirs()).to.have.length(1);
    await d.stop();
    expect(await volumeDirs()).to.deep.equal([]);
    d = await startTestDaemon(mnt);
  });

  it('a finished upload that is not an ISO is refused for iso/create and leaves nothing', async () => {
    const location = (await create({ creatorID: OWNER, isotype: 'tool', os_family: 'windows' }, 'iso/create').expect(201)).headers.location as string;
    const res = await d.api.patch(location).set(TUS).set('Upload-Offset', '0').set('Content-Type', 'application/offset+octet-stream').send(image).expect(400);
    expect(JSON.parse(res.text).code).to.equal('bad_request');
    expect(await volumeDirs()).to.deep.equal([]);
  });

  describe('with API tokens', () => {
    beforeEach(async () => {
      await d.stop();
      d = await startTestDaemon(mnt, { tokensFile: await writeTokenFile(mnt) });
    });

    it('asks for a token, refuses a client creating for another, and hides an upload from other clients', async () => {
      const fields = { creatorID: OWNER, name: 'tokened', format: 'raw' };
      await create(fields).expect(401);
      expect(await volumeDirs()).to.deep.equal([]);
      const forOther = await create({ ...fields, creatorID: OTHER }).set(bearer(TOKENS.owner)).expect(403);
      expect(JSON.parse(forOther.text).field).to.equal('creatorID');
      expect(await volumeDirs()).to.deep.equal([]);
      const location = (await create(fields).set(bearer(TOKENS.owner)).expect(201)).headers.location as string;
      await d.api.head(location).set(TUS).set(bearer(TOKENS.other)).expect(404);
      await d.api.head(location).set(TUS).set(bearer(TOKENS.owner)).expect(200);
      await d.api.head(location).set(TUS).set(bearer(TOKENS.admin)).expect(200);
      await d.api.delete(location).set(TUS).set(bearer(TOKENS.owner)).expect(204);
    });
  });
});
