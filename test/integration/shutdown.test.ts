import { promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { expect } from 'chai';
import { spawnDaemon, type DaemonProcess } from '../helpers/process.js';
import { makeTree, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

/** A download whose client stops reading after the first bytes (its socket buffers fill, the answer stalls). */
function stalledDownload(port: number, vid: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.get(`http://127.0.0.1:${port}/api/v1.0/volumes/${vid}/data`, (res) => {
      res.once('data', () => {
        res.pause();
        resolve(res);
      });
    });
    req.on('error', reject);
  });
}

/** A raw upload that announces 64 MB, sends 1 MB and then nothing (the client still connected). */
function stalledUpload(port: number): { req: http.ClientRequest; answer: Promise<number | 'cut'> } {
  const req = http.request(`http://127.0.0.1:${port}/api/v1.0/create/upload?creatorID=${OWNER}&format=raw`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(64 * 1024 * 1024) },
  });
  const answer = new Promise<number | 'cut'>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', () => resolve('cut'));
  });
  req.write(Buffer.alloc(1024 * 1024));
  return { req, answer };
}

const volumeDirs = async (root: string) => (await fs.readdir(root)).filter((n) => n.startsWith('vid.'));

describe('the daemon stopping with work in flight', () => {
  let mnt: string;
  let daemon: DaemonProcess | undefined;
  beforeEach(async () => (mnt = await makeTree({ a: {} })));
  afterEach(async () => {
    if (daemon && daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    await daemon?.exited;
    daemon = undefined;
    await removeTree(mnt);
  });

  it('stops within seconds on SIGTERM while a download and an upload stall, leaving only the volumes it had made', async () => {
    daemon = await spawnDaemon(['--mnt', mnt]);
    const made = await daemon.post('create', seedCreateBody({ format: 'raw', size: 0.2 }));
    expect(made.status).to.equal(200);
    const download = await stalledDownload(daemon.port, made.body.vid);
    const upload = stalledUpload(daemon.port);
    await waitFor(async () => (await daemon!.get('jobs')).body.some((j: { kind: string; vid: string | null }) => j.kind === 'upload' && j.vid !== null), 10_000, 'the upload to claim its volume');
    const asked = Date.now();
    // Not child.kill: execa follows it with SIGKILL after 5 s.
    process.kill(daemon.child.pid!, 'SIGTERM');
    const { exitCode, signal } = await daemon.exited;
    // systemd's unit gives it 30 s (TimeoutStopSec) before SIGKILL.
    expect(Date.now() - asked).to.be.below(10_000);
    expect([exitCode, signal]).to.deep.equal([0, undefined]);
    expect(daemon.lines.some((l) => l.includes('"message":"stopped"'))).to.equal(true);
    expect(await upload.answer).to.not.equal(200);
    download.destroy();
    upload.req.destroy();
    // The upload's claim is gone with it; the volume made before stays, without leftovers.
    const left = await volumeDirs(path.join(mnt, 'a'));
    expect(left).to.deep.equal([`vid.${made.body.vid}.elimg`]);
    expect((await fs.readdir(path.join(mnt, 'a', left[0]))).sort()).to.deep.equal(['data.img', 'meta.json']);
  });
});
