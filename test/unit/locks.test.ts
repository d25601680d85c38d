import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { ConflictError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { LockManager } from '../../src/store/locks.js';

const UID = 'a'.repeat(32);

describe('volume locks and downloads', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-locks-'));
  });
  afterEach(() => fs.rm(dir, { recursive: true, force: true }));

  it('refuses a download while the holder rewrites the image in place, and takes it once the lock is released', async () => {
    const locks = new LockManager(10_000, createLogger({ level: 'silent', format: 'json' }));
    const lock = await locks.acquireVolume(dir, 'snapshot', UID);
    locks.rewriteInPlace(dir, UID, 'snapshotted');
    expect(() => locks.beginRead(dir, UID))
      .to.throw(ConflictError)
      .with.property('message', `volume ${UID} is being snapshotted, which changes its image in place: download it once that is over`);
    await lock.release();
    const end = locks.beginRead(dir, UID);
    expect(() => locks.rewriteInPlace(dir, UID, 'resized')).to.throw(ConflictError, /being downloaded \(1 download\(s\)\)/);
    end();
    end(); // a second call (close after an error) counts nothing twice
    locks.rewriteInPlace(dir, UID, 'resized');
  });
});

describe('volume lock refusals', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-locks-'));
  });
  afterEach(() => fs.rm(dir, { recursive: true, force: true }));

  it('names the operation holding the lock even before its marker is written', async () => {
    const locks = new LockManager(10_000, createLogger({ level: 'silent', format: 'json' }));
    for (let i = 0; i < 20; i++) {
      const [first, second] = await Promise.allSettled([locks.acquireVolume(dir, 'snapshot', UID), locks.acquireVolume(dir, 'destroy', UID)]);
      const won = first.status === 'fulfilled' ? first.value : (second as PromiseFulfilledResult<Awaited<ReturnType<LockManager['acquireVolume']>>>).value;
      const lost = (first.status === 'rejected' ? first.reason : (second as PromiseRejectedResult).reason) as Error;
      expect(lost.message).to.equal(`volume ${UID} is locked by another operation (${won.purpose})`);
      await won.release();
    }
  });
});
