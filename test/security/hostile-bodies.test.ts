import { promises as fs } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { configWith } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { TOKENS, writeTokenFile } from '../helpers/auth.js';
import { daemonPerTest } from '../helpers/daemon.js';
import { rawRequest } from '../helpers/hostile.js';
import { makeTree, OWNER, removeTree, snapshotTree, waitFor } from '../helpers/tree.js';

/**
 * Hostile and careless request bodies: slow, stalled, unannounced, past the quota (what the client gets,
 * and that the tree and the disk hold no more than the quota allows). Requests: hostile-clients.test.ts.
 */
describe('cloud-init file sets and the quota', function () {
  this.timeout(60_000);
  const env = daemonPerTest({ a: { 'max-total-size': '10M' } });
  const send = (fields: object, ...files: [string, number][]) => {
    let req = env.d.api.post('/api/v1.0/cloudinit/metadata').field('fields', JSON.stringify(fields));
    for (const [name, size] of files) req = req.attach('file', Buffer.alloc(size, 'x'), name);
    return req;
  };
  const usedBytes = async () => (await env.d.api.get('/api/v1.0/status').expect(200)).body.roots[0].usedBytes as number;
  const MB4 = 4_000_000;

  it('counts a pending set\'s files against the quota as they arrive: past it 507, and the set is as it was', async () => {
    const first = await send({ creatorID: OWNER, expectedFiles: 5 }, ['user-data', 100]).expect(206);
    const vid = first.body.vid as string;
    expect(await usedBytes()).to.equal(100);
    await send({ creatorID: OWNER, vid }, ['a.sh', MB4], ['b.sh', MB4]).expect(206);
    expect(await usedBytes()).to.equal(100 + 2 * MB4);
    const dir = path.join(env.mnt, 'a', `vid.${vid}.elimg`, 'cloud-init-metadata');
    const before = (await fs.readdir(dir)).sort();
    // 10 MB of quota: a third 4 MB file does not fit, and the call takes back what it stored.
    const res = await send({ creatorID: OWNER, vid }, ['c.sh', 100], ['d.sh', MB4]).expect(507);
    expect(res.body.code).to.equal('no_room');
    expect(res.body.error).to.match(/^the volume cannot grow to 12000200 bytes: /);
    expect((await fs.readdir(dir)).sort()).to.deep.equal(before);
    expect(await usedBytes()).to.equal(100 + 2 * MB4);
    // Nor can a second set take what the first holds.
    await send({ creatorID: OWNER, expectedFiles: 2 }, ['user-data', MB4]).expect(507);
    // The set completes; the volume then counts its ISO.
    const done = await send({ creatorID: OWNER, vid }, ['c.sh', 100], ['meta-data', 100]).expect(200);
    expect(done.body).to.include({ status: 'OK', received: 5, expected: 5 });
    const size = (await env.d.post('info', { volume_id: vid }).expect(200)).body.size as number;
    expect(await usedBytes()).to.equal(size);
  });
});

describe('slow and stalled request bodies (a real server)', function () {
  this.timeout(30_000);
  let mnt: string;
  let running: RunningServer;
  const auth = `Authorization: Bearer ${TOKENS.owner}\r\n`;
  const volumeDirs = async () => (await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'));

  before(async () => {
    mnt = await makeTree({ a: {} });
    const config = configWith({ mnt, port: 0, host: '127.0.0.1', logLevel: 'silent', rescanIntervalMs: 0, exporter: 'none', transferIdleTimeoutMs: 2000, tokensFile: await writeTokenFile(mnt) });
    running = await startServer(config, createLogger({ level: 'silent', format: 'json' }));
  });
  after(async () => {
    await running.stop();
    await removeTree(mnt);
  });

  it("sets no whole-request limit: Node's 300 s requestTimeout answered 408 to any upload longer than five minutes", () => {
    expect(running.server.requestTimeout).to.equal(0);
    // Headers must still come within 60 s (Node's headersTimeout defaults to min(60 s, requestTimeout): 0, none).
    expect(running.server.headersTimeout).to.equal(60_000);
  });

  it('takes an upload that trickles in for longer than the idle timeout, as long as bytes keep coming', async () => {
    const chunk = Buffer.alloc(256 * 1024);
    const socket = net.connect(running.port, '127.0.0.1');
    const answer = new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (c) => (text += c.toString()));
      socket.on('close', () => resolve(text));
    });
    socket.write(`POST /api/v1.0/create/upload?creatorID=${OWNER}&format=raw HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/octet-stream\r\nContent-Length: ${chunk.length * 5}\r\nConnection: close\r\n\r\n`);
    for (let i = 0; i < 5; i++) {
      await new Promise((resolve) => setTimeout(resolve, 600)); // 3 s in all, never 2 s without a byte
      socket.write(chunk);
    }
    const text = await answer;
    expect(text).to.match(/^HTTP\/1\.1 200 /);
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)).size).to.equal(0.00131072);
  });

  it('answers 408 to a JSON body that does not arrive within the timeout, closes the connection, changes nothing', async () => {
    const before = await snapshotTree(mnt);
    const body = JSON.stringify({ creatorID: OWNER, size: 0.001 });
    const started = Date.now();
    const res = await rawRequest(running.port, `POST /api/v1.0/create HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`, { timeoutMs: 10_000 });
    expect(Date.now() - started).to.be.within(1900, 6000);
    expect(res?.status).to.equal(408);
    expect(res?.headers.connection).to.equal('close');
    expect(JSON.parse(res!.body)).to.deep.equal({ error: 'the request body did not arrive within 2 s', code: 'request_timeout' });
    expect(await snapshotTree(mnt)).to.deep.equal(before);
  });

  it('closes the connection of a body still trickling in after its answer (an anonymous 401) once the timeout has passed', async () => {
    const socket = net.connect(running.port, '127.0.0.1');
    let text = '';
    let answeredAt = 0;
    socket.on('data', (c) => {
      text += c.toString();
      if (!answeredAt && text.includes('\r\n\r\n')) answeredAt = Date.now();
    });
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now())));
    socket.on('error', () => undefined);
    socket.write(`POST /api/v1.0/create/upload?creatorID=${OWNER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n`);
    // A byte every 300 ms: never idle for the 2 s timeout, and never done.
    const trickle = setInterval(() => !socket.destroyed && socket.write('x'), 300);
    const giveUp = setTimeout(() => socket.destroy(), 8000);
    const closedAt = await closed;
    clearInterval(trickle);
    clearTimeout(giveUp);
    expect(text).to.match(/^HTTP\/1\.1 401 /);
    expect(closedAt - answeredAt).to.be.within(1500, 5000);
  });

  it("keeps Node's keep-alive timeout for a connection whose body ended after its answer (it was held idle for ever)", async () => {
    const socket = net.connect(running.port, '127.0.0.1');
    let answeredAt = 0;
    socket.on('data', () => (answeredAt ||= Date.now()));
    socket.on('error', () => undefined);
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now())));
    socket.write(`POST /api/v1.0/create/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10\r\n\r\n`);
    setTimeout(() => socket.write('0123456789'), 300); // after the 401
    const giveUp = setTimeout(() => socket.destroy(), 15_000);
    const closedAt = await closed;
    clearTimeout(giveUp);
    expect(answeredAt).to.be.above(0);
    expect(closedAt - answeredAt).to.be.below(running.server.keepAliveTimeout + 2000);
  });

  it('ends an upload that stalls (nothing for the idle timeout): the connection is closed and its volume removed', async () => {
    const before = await volumeDirs();
    const started = Date.now();
    const res = await rawRequest(running.port, Buffer.concat([
      Buffer.from(`POST /api/v1.0/create/upload?creatorID=${OWNER}&format=raw HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/octet-stream\r\nContent-Length: 2097152\r\n\r\n`),
      Buffer.alloc(1024 * 1024),
    ]), { timeoutMs: 10_000 });
    expect(res).to.equal(null); // no answer: the connection was closed
    expect(Date.now() - started).to.be.within(1900, 6000);
    await waitFor(async () => (await volumeDirs()).length === before.length, 5000, 'the half-made volume to be removed');
  });
});

describe('uploads and the quota', function () {
  this.timeout(60_000);
  const env = daemonPerTest({ a: { 'max-total-size': '100M' } });

  /** Bytes of every file under `dir`. */
  const bytesUnder = async (dir: string): Promise<number> => {
    let total = 0;
    for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) total += await bytesUnder(p);
      else total += (await fs.stat(p).catch(() => ({ size: 0 }))).size;
    }
    return total;
  };

  it('counts a qcow2 by its virtual size, not its file: 200 KB that would be 1 TB is 507 and leaves nothing', async () => {
    const file = path.join(env.mnt, 'big.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', file, '1T']);
    const before = await snapshotTree(path.join(env.mnt, 'a'));
    const res = await env.d.api.post(`/api/v1.0/create/upload?creatorID=${OWNER}&format=raw`).type('application/octet-stream').send(await fs.readFile(file)).expect(507);
    expect(res.body.error).to.match(/^the volume cannot grow to 1099511627776 bytes: /);
    expect(await snapshotTree(path.join(env.mnt, 'a'))).to.deep.equal(before);
  });

  it('counts each chunked upload against the quota as its bytes arrive: three of 50 MiB in a root of 100 MB never hold more than 100 MB', async () => {
    const server = env.d.app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const port = (server.address() as AddressInfo).port;
    let most = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        most = Math.max(most, await bytesUnder(path.join(env.mnt, 'a')));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    const chunk = Buffer.alloc(1024 * 1024, 'z');
    const upload = () =>
      new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
        // No Content-Length: the request is chunked, its length unknown until it ends.
        const req = http.request({ port, method: 'POST', path: `/api/v1.0/create/upload?creatorID=${OWNER}&format=raw`, headers: { 'Content-Type': 'application/octet-stream' } }, (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
        });
        req.on('error', reject);
        void (async () => {
          for (let i = 0; i < 50 && !req.destroyed; i++) {
            if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
            await new Promise((r) => setTimeout(r, 10));
          }
          req.end();
        })();
      });
    try {
      const answers = await Promise.all([upload(), upload(), upload()]);
      expect(answers.map((a) => a.status).sort(), JSON.stringify(answers)).to.deep.equal([200, 507, 507]);
      for (const a of answers.filter((x) => x.status === 507)) expect(a.body.error).to.match(/^the volume cannot grow to \d+ bytes: /);
    } finally {
      sampling = false;
      await sampler;
      server.close();
    }
    expect(most).to.be.at.most(100_000_000 + 64 * 1024);
    const vids = (await fs.readdir(path.join(env.mnt, 'a'))).filter((n) => n.startsWith('vid.'));
    expect(vids).to.have.length(1);
  });
});
