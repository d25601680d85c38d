import { Writable } from 'node:stream';
import { expect } from 'chai';
import winston from 'winston';
import { NoRoomError } from '../../src/errors.js';
import { JobRegistry, runAsJob } from '../../src/jobs/registry.js';
import { FinishedUploads } from '../../src/uploads/finished.js';

describe('the job registry', () => {
  const realNow = Date.now;
  afterEach(() => {
    Date.now = realNow;
  });

  it('shows when a running job last made progress (an operator tells a stuck one), and no more once it ended', async () => {
    const jobs = new JobRegistry();
    let release = () => {};
    let handle: { progress(p: number, b?: number): void } | undefined;
    const { id, promise } = jobs.start('clone', null, (job) => ((handle = job), new Promise<void>((r) => (release = r))));
    const created = jobs.describe(id).createdAt as string;
    expect(jobs.describe(id).progressAt).to.equal(created);
    await new Promise((r) => setTimeout(r, 5));
    handle!.progress(10, 100);
    const moved = jobs.describe(id).progressAt as string;
    expect(Date.parse(moved)).to.be.above(Date.parse(created));
    await new Promise((r) => setTimeout(r, 5));
    handle!.progress(10, 100);
    expect(jobs.describe(id).progressAt).to.equal(moved);
    release();
    await promise;
    expect(jobs.describe(id)).to.not.have.property('progressAt');
  });

  it('forgets a finished job after an hour even when no other job starts', async () => {
    const jobs = new JobRegistry();
    const { id, promise } = jobs.start('convert', 'a'.repeat(32), async () => 'ok');
    await promise;
    expect(jobs.list().map((j) => j.id)).to.deep.equal([id]);
    expect(jobs.describe(id)).to.include({ state: 'done' });
    Date.now = () => realNow() + 61 * 60 * 1000;
    expect(jobs.list()).to.deep.equal([]);
    expect(() => jobs.describe(id)).to.throw(`job ${id} does not exist`);
  });

  it("keeps a client's clone result through a flood of its own downloads (a parallel downloader's 1001 Range requests)", async () => {
    const jobs = new JobRegistry();
    const clone = jobs.start('clone', null, async () => ({ vid: 'made' }));
    await clone.promise;
    for (let i = 0; i < 1001; i++) await jobs.start('download', 'v', async () => undefined, { isAnswer: true }).promise;
    expect(jobs.describe(clone.id)).to.include({ state: 'done' });
    expect(jobs.list().filter((j) => j.kind === 'download')).to.have.length(1000);
  });

  it("says what a failed job's client may know: the catalogue's sentence, never an unexpected error's own words (those go to the log)", async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ objectMode: true, write: (info, _enc, done) => (lines.push(info as Record<string, unknown>), done()) });
    const jobs = new JobRegistry(winston.createLogger({ transports: [new winston.transports.Stream({ stream: sink })] }));
    const fail = async (kind: string, err: Error) => {
      const { id, promise } = jobs.start(kind, null, async () => Promise.reject(err));
      await promise.catch(() => undefined);
      return { id, error: jobs.describe(id).error };
    };
    const odd = await fail('import', new Error("ENOENT: no such file or directory, open '/mnt/a/vid.x.elimg/data.tmp'"));
    expect(odd.error).to.equal(`internal error; the daemon's log has the details (job ${odd.id})`);
    expect(lines).to.have.length(1);
    expect(lines[0]).to.include({ message: 'job failed', job: odd.id, kind: 'import', error: "ENOENT: no such file or directory, open '/mnt/a/vid.x.elimg/data.tmp'" });
    const full = await fail('clone', Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
    expect(full.error).to.equal('no room left on the filesystem for this clone');
    expect((await fail('convert', new NoRoomError('no root has room'))).error).to.equal('no root has room');
    expect(lines.map((l) => [l.kind, l.level])).to.deep.equal([['import', 'error'], ['clone', 'warn'], ['convert', 'warn']]);
  });

  it("a synchronous request's failed job is told once: by its request's answer and log line, not a second time as the job's", async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ objectMode: true, write: (info, _enc, done) => (lines.push(info as Record<string, unknown>), done()) });
    const jobs = new JobRegistry(winston.createLogger({ transports: [new winston.transports.Stream({ stream: sink })] }));
    const res = { once: () => res, writableFinished: false, locals: { requestId: '0d7dd18f' } };
    const failed = await runAsJob(jobs, { kind: 'convert', vid: null, makesVolume: false, res }, async () => {
      throw new Error("EPERM: operation not permitted, mkdir '/mnt/a/vid.x.elimg/.elemento.lock'");
    }).catch((err: Error) => err);
    expect(failed).to.be.an('error'); // the error middleware answers it, and logs it (api/errors.ts)
    expect(lines).to.deep.equal([]);
    expect(jobs.list()[0].error).to.equal("internal error; the daemon's log has the details (request 0d7dd18f)");
    // An async one has no request to tell it: the job's own line.
    await runAsJob(jobs, { async: true, kind: 'convert', vid: null, makesVolume: false, res }, async (job) => {
      job.started();
      await new Promise((r) => setTimeout(r, 10));
      throw new Error('EPERM: operation not permitted');
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(lines.map((l) => l.message)).to.deep.equal(['job failed']);
  });

  it('keeps a running job however old, and cancelling a finished one is 409 naming its state', async () => {
    const jobs = new JobRegistry();
    let finish = () => {};
    const running = jobs.start('clone', null, () => new Promise<void>((resolve) => (finish = resolve)));
    const done = jobs.start('convert', null, async () => undefined);
    await done.promise;
    try {
      await jobs.cancel(done.id);
      expect.fail('cancelled a finished job');
    } catch (err) {
      expect((err as Error).message).to.equal(`job ${done.id} has already ended (done)`);
    }
    Date.now = () => realNow() + 2 * 60 * 60 * 1000;
    expect(jobs.list().map((j) => j.id)).to.deep.equal([running.id]);
    finish();
    await running.promise;
  });
});

describe('the finished tus uploads', () => {
  it('forgets those whose volume left the tree when another finishes, not only when their client asks (no growth over months)', async () => {
    const inTree = new Set<string>();
    const finished = new FinishedUploads((id) => inTree.has(id));
    const known = { size: 1, metadata: {}, createdAt: new Date().toISOString(), creatorID: 'f'.repeat(32) };
    for (let i = 0; i < 100; i++) {
      const id = i.toString(16).padStart(32, '0');
      inTree.add(id);
      await finished.track(id, known, Promise.resolve({ vid: id }));
      // destroyed later, and nobody asks about its upload again
      if (i < 99) inTree.delete(id);
    }
    expect(finished.size).to.equal(1);
  });
});
