import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { createLogger } from '../../src/log.js';
import { Purger } from '../../src/store/purge.js';

const log = createLogger({ level: 'silent', format: 'json' });

describe('the purge of bin entries', () => {
  let bin: string;
  beforeEach(async () => {
    bin = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-purge-'));
  });
  afterEach(() => fs.rm(bin, { recursive: true, force: true }));

  const entry = async (name: string) => {
    const dir = path.join(bin, name);
    await fs.mkdir(dir);
    await fs.writeFile(path.join(dir, 'meta.json'), '{}');
    return dir;
  };

  it('queues an entry once however often it is asked, releases it, then removes it', async () => {
    const released: string[] = [];
    const purger = new Purger(log, async (binned) => void released.push(binned));
    const a = await entry('a');
    purger.later(a);
    purger.later(a);
    await purger.idle();
    expect(released).to.deep.equal([a]);
    expect(await fs.readdir(bin)).to.deep.equal([]);
  });

  it('keeps an entry whose release fails, lists it, and purges it on a retry once the release works', async () => {
    let open = true;
    const purger = new Purger(log, async () => {
      if (open) throw new Error('the RBD image is open by a client');
    });
    const a = await entry('a');
    purger.later(a);
    await purger.idle();
    expect(purger.failures).to.deep.equal([a]);
    expect(await fs.readdir(bin)).to.deep.equal(['a']);
    purger.retry();
    purger.retry();
    await purger.idle();
    expect(purger.failures).to.deep.equal([a]);
    open = false;
    purger.retry();
    await purger.idle();
    expect(purger.failures).to.deep.equal([]);
    expect(await fs.readdir(bin)).to.deep.equal([]);
  });

  it('an entry removed meanwhile by someone else (another daemon, an operator) is done, not a failure', async () => {
    const purger = new Purger(log, async () => {
      throw new Error('must not be asked');
    });
    purger.later(path.join(bin, 'gone'));
    await purger.idle();
    expect(purger.failures).to.deep.equal([]);
  });
});
