import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { renameDurable, writeFileAtomic, writeFlushed } from '../../src/store/atomic.js';
import { isTempName } from '../../src/store/layout.js';
import { traceFlushes } from '../helpers/flushes.js';

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** traceFlushes with temp files named `temp`. */
const flushesOf = async (dir: string, work: () => Promise<unknown>) =>
  (await traceFlushes(dir, work)).map((call) => call.split(' ').map((word) => (isTempName(word) ? 'temp' : word)).join(' '));

describe('atomic writes and flushes (src/store/atomic.ts)', () => {
  let dir: string;
  beforeEach(async () => (dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-atomic-'))));
  afterEach(() => fs.rm(dir, { recursive: true, force: true }));

  it('writeFileAtomic replaces a file whole and leaves no temp file', async () => {
    const target = path.join(dir, 'meta.json');
    await writeFileAtomic(target, 'old');
    await writeFileAtomic(target, 'new');
    expect(await fs.readFile(target, 'utf8')).to.equal('new');
    expect(await fs.readdir(dir)).to.deep.equal(['meta.json']);
  });

  it('writeFileAtomic flushes the temp file before its rename and the directory after it', async () => {
    const calls = await flushesOf(dir, () => writeFileAtomic(path.join(dir, 'meta.json'), '{}'));
    expect(calls).to.deep.equal(['sync temp', 'rename temp meta.json', 'sync .']);
  });

  it('writeFileAtomic that fails leaves no temp file behind (a directory in the way)', async () => {
    const target = path.join(dir, 'meta.json');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'inside'), 'x');
    const err = await writeFileAtomic(target, 'new').catch((e: NodeJS.ErrnoException) => e);
    expect(err).to.have.property('code').that.is.oneOf(['EISDIR', 'ENOTEMPTY', 'EEXIST']);
    expect(await fs.readdir(dir)).to.deep.equal(['meta.json']);
  });

  it('renameDurable flushes the directory after the rename', async () => {
    await fs.writeFile(path.join(dir, 'from'), 'x');
    const calls = await flushesOf(dir, () => renameDurable(path.join(dir, 'from'), path.join(dir, 'to')));
    expect(calls).to.deep.equal(['rename from to', 'sync .']);
  });

  it('writeFlushed answers what the writer answers, the bytes whole, flushing while it writes (before the file exists too)', async () => {
    const file = path.join(dir, 'image');
    const writer = (async () => {
      await pause(20); // flushes start before the writer has made the file
      const handle = await fs.open(file, 'wx');
      for (let i = 0; i < 5; i++) {
        await handle.write(Buffer.alloc(64 * 1024, i));
        await pause(5);
      }
      await handle.close();
      return 5 * 64 * 1024;
    })();
    expect(await writeFlushed(file, writer, 2)).to.equal(5 * 64 * 1024);
    const bytes = await fs.readFile(file);
    expect([bytes.length, bytes[0], bytes.at(-1)]).to.deep.equal([5 * 64 * 1024, 0, 4]);
  });

  it('writeFlushed passes the writer’s failure on and stops flushing', async () => {
    const failing = (async () => {
      await pause(10);
      throw new Error('the tool failed');
    })();
    const err = await writeFlushed(path.join(dir, 'never-made'), failing, 2).catch((e: Error) => e);
    expect(err).to.be.instanceOf(Error).with.property('message', 'the tool failed');
    expect(await fs.readdir(dir)).to.deep.equal([]);
  });
});
