import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { ConflictError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { LockManager } from '../../src/store/locks.js';

const UID = 'a'.repeat(32);

describe('volume locks, each test in a fresh directory', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-locks-'));
  });
  afterEach(() => fs.rm(dir, { recursive: true, force: true }));

  describe('volume locks and downloads', () => {
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

  describe('a volume lock whose directory its holder moved away', () => {
    it('is released without error and not counted compromised when a refresh runs between the move and the release (a destroy under load)', async () => {
      const volume = path.join(dir, `vid.${UID}.elimg`);
      await fs.mkdir(volume);
      const locks = new LockManager(4000, createLogger({ level: 'silent', format: 'json' }));
      const lock = await locks.acquireVolume(volume, 'destroy', UID);
      // destroy's commit point: the directory, mutex inside, leaves the root; the release comes after a refresh (1 s).
      await fs.rename(volume, path.join(dir, 'binned'));
      await new Promise((r) => setTimeout(r, 1500));
      await lock.release();
      expect(locks.compromised).to.equal(0);
    });
  });

  describe('volume lock refusals', () => {
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
});

/**
 * Hosts sharing a tree (Gluster) whose clocks differ: a mutex's mtime is set by its holder's clock
 * (proper-lockfile's refresh), so it says nothing about staleness to another host. A holder is dead
 * when its mutex stops changing, as this daemon's own clock measures it.
 */
describe('a daemon running for months', () => {
  it('forgets each volume lock it found held once it takes it (a thousand refusals kept for the daemon\'s lifetime)', async () => {
    const base = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-locks-'));
    try {
      const locks = new LockManager(10_000, createLogger({ level: 'silent', format: 'json' }));
      for (let i = 0; i < 50; i++) {
        const dir = path.join(base, String(i));
        await fs.mkdir(dir);
        const held = await locks.acquireVolume(dir, 'clone', UID);
        await locks.acquireVolume(dir, 'destroy', UID).then(() => expect.fail('a held lock was taken'), (err: Error) => expect(err).to.be.instanceOf(ConflictError));
        await held.release();
        await (await locks.acquireVolume(dir, 'destroy', UID)).release();
      }
      expect(locks.watchedMutexes).to.equal(0);
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });
});

describe('volume and root locks between hosts whose clocks differ', () => {
  const STALE = 2000;
  let dir: string;
  let refresher: NodeJS.Timeout | undefined;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-locks-'));
  });
  afterEach(async () => {
    clearInterval(refresher);
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** A live holder on a host whose clock is `skewMs` off: it makes the mutex and refreshes it with its own time. */
  async function holdWithSkewedClock(mutex: string, skewMs: number): Promise<void> {
    await fs.mkdir(mutex);
    const touch = () => fs.utimes(mutex, new Date(Date.now() + skewMs), new Date(Date.now() + skewMs)).catch(() => undefined);
    await touch();
    refresher = setInterval(touch, STALE / 4);
  }

  it('never takes over a live volume lock refreshed by a host whose clock is 10 minutes behind', async () => {
    await holdWithSkewedClock(path.join(dir, '.elemento.lock'), -600_000);
    const locks = new LockManager(STALE, createLogger({ level: 'silent', format: 'json' }));
    for (let i = 0; i < 4; i++) {
      await locks.acquireVolume(dir, 'update', UID).then(
        () => expect.fail('a live lock was taken over'),
        (err: Error) => expect(err).to.be.instanceOf(ConflictError),
      );
      await new Promise((r) => setTimeout(r, STALE / 2));
    }
    expect(locks.compromised).to.equal(0);
  });

  it('recovers the volume lock of a dead host whose clock was 10 minutes ahead once it stops changing', async () => {
    const mutex = path.join(dir, '.elemento.lock');
    await fs.mkdir(mutex);
    const ahead = new Date(Date.now() + 600_000);
    await fs.utimes(mutex, ahead, ahead);
    const locks = new LockManager(STALE, createLogger({ level: 'silent', format: 'json' }));
    await locks.acquireVolume(dir, 'update', UID).then(
      () => expect.fail('a lock just seen was taken over at once'),
      (err: Error) => expect(err).to.be.instanceOf(ConflictError),
    );
    expect(await locks.isVolumeMutexHeld(dir)).to.equal(true);
    await new Promise((r) => setTimeout(r, STALE + 200));
    expect(await locks.isVolumeMutexHeld(dir)).to.equal(false);
    const lock = await locks.acquireVolume(dir, 'update', UID);
    await lock.release();
  });

  it('waits for a live root lock of a host whose clock is behind instead of taking it over', async () => {
    const mutex = path.join(dir, '.elemento-root.lock');
    await holdWithSkewedClock(mutex, -600_000);
    const locks = new LockManager(STALE, createLogger({ level: 'silent', format: 'json' }));
    let releasedAt = 0;
    setTimeout(async () => {
      clearInterval(refresher);
      await fs.rmdir(mutex);
      releasedAt = Date.now();
    }, STALE);
    const ranAt = await locks.withRootLock(dir, async () => Date.now());
    expect(releasedAt).to.be.greaterThan(0);
    expect(ranAt).to.be.at.least(releasedAt);
  });
});

describe('a lock whose marker cannot be removed at its release', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-locks-'));
  });
  afterEach(async () => {
    await execa('chattr', ['-R', '-i', dir], { reject: false });
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('still lets the volume go (a filesystem error then leaves a stale marker to recover, not a volume locked until a restart)', async () => {
    const locks = new LockManager(10_000, createLogger({ level: 'silent', format: 'json' }));
    const lock = await locks.acquireVolume(dir, 'convert', UID);
    const [marker] = await locks.markersIn(dir);
    // The filesystem refuses the unlink (chattr +i: EPERM even for root), as a network filesystem may for a moment.
    await execa('chattr', ['+i', path.join(dir, marker)]);
    await lock.release();
    await execa('chattr', ['-i', path.join(dir, marker)]);
    const recovered: string[][] = [];
    // (The daemon's recovery repairs the volume and removes the dead markers.)
    locks.setRecovery(async (d, stale) => {
      recovered.push(stale);
      for (const m of stale) await fs.rm(path.join(d, m));
    });
    const next = await locks.acquireVolume(dir, 'resize', UID);
    expect(recovered).to.deep.equal([[marker]]);
    await next.release();
    expect(await fs.readdir(dir)).to.deep.equal([]);
  });
});
