import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { MAIN, spawnDaemon } from '../helpers/process.js';
import { makeTree, removeTree, seedCreateBody } from '../helpers/tree.js';

describe('the daemon process', () => {
  let mnt: string;
  beforeEach(async () => (mnt = await makeTree({ a: {} })));
  afterEach(async () => removeTree(mnt));

  for (const signal of ['SIGTERM', 'SIGINT'] as const)
    it(`serves the API on 127.0.0.1 and stops cleanly on ${signal}`, async () => {
      const { child, port, lines } = await spawnDaemon(['--mnt', mnt]);
      const res = await fetch(`http://127.0.0.1:${port}/api/v1.0/create`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(seedCreateBody({ format: 'raw' })),
      });
      expect(res.status).to.equal(200);
      expect(lines.some((l) => l.includes('"host":"127.0.0.1"'))).to.equal(true);
      child.kill(signal);
      const result = await child;
      expect(result.exitCode).to.equal(0);
      expect(lines.some((l) => l.includes('"message":"stopped"'))).to.equal(true);
      expect((await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'))).to.have.length(1);
    });

  it('takes its mount directory from ELEMENTO_MNT and refuses a bad port with a clear message', async () => {
    const { child, port } = await spawnDaemon([], { ELEMENTO_MNT: mnt });
    const status = await (await fetch(`http://127.0.0.1:${port}/api/v1.0/status`)).json();
    expect(status.mnt).to.equal(mnt);
    child.kill('SIGTERM');
    await child;
    const bad = await execa('node', ['--import', 'tsx/esm', MAIN, '--mnt', mnt, '--port', 'seventy'], { reject: false });
    expect(bad.exitCode).to.equal(1);
    expect(bad.stderr).to.equal("elemento-storage: the port must be a whole number, not 'seventy'");
  });
});
