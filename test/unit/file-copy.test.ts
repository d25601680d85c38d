import { expect } from 'chai';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ToolError } from '../../src/errors.js';
import { canReflink } from '../../src/store/reflink.js';
import { FileCopier } from '../../src/tools/file-copy.js';
import type { CommandRunner, RunOptions, ToolName } from '../../src/tools/runner.js';

/** A runner that records each call and answers from a script; any call not scripted fails the test. */
function scriptedRunner(script: Array<(args: readonly string[], opts: RunOptions) => void>, installed: ToolName[] = ['cp', 'rsync']) {
  const calls: Array<{ tool: ToolName; args: readonly string[] }> = [];
  const runner: CommandRunner = {
    which: (tool) => (installed.includes(tool) ? `/usr/bin/${tool}` : null),
    run: async (tool, args, opts) => {
      calls.push({ tool, args });
      const step = script.shift();
      if (!step) throw new Error(`unexpected call: ${tool} ${args.join(' ')}`);
      step(args, opts);
      return { stdout: '', stderr: '', exitCode: 0 };
    },
  };
  return { runner, calls };
}

describe('FileCopier (the clone algorithms as data)', () => {
  let dir: string;
  let src: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-copy-'));
    src = path.join(dir, 'src.img');
    await fs.writeFile(src, 'data');
  });
  afterEach(() => fs.rm(dir, { recursive: true, force: true }));

  it('cp: a reflink first (the kernel FICLONE, no process); where the filesystem refuses it, a sparse copy with cp', async () => {
    const { runner, calls } = scriptedRunner([() => undefined]);
    const result = await new FileCopier(runner, 1000).copy('cp', src, path.join(dir, 'dst'));
    if (await canReflink(dir)) {
      expect(result).to.deep.equal({ reflinked: true });
      expect(calls).to.have.length(0);
      expect(await fs.readFile(path.join(dir, 'dst'), 'utf8')).to.equal('data');
    } else {
      expect(result).to.deep.equal({ reflinked: false });
      expect(calls.map((c) => c.args)).to.deep.equal([['--sparse=always', '--reflink=never', '--', src, path.join(dir, 'dst')]]);
    }
  });

  it('cp: `reflink: false` (the filesystem was probed and cannot) goes straight to the sparse copy', async () => {
    const { runner, calls } = scriptedRunner([() => undefined]);
    expect(await new FileCopier(runner, 1000).copy('cp', src, path.join(dir, 'dst'), { reflink: false })).to.deep.equal({ reflinked: false });
    expect(calls.map((c) => c.args)).to.deep.equal([['--sparse=always', '--reflink=never', '--', src, path.join(dir, 'dst')]]);
  });

  it('a cancelled copy is not retried another way', async () => {
    const controller = new AbortController();
    const { runner, calls } = scriptedRunner([
      () => {
        controller.abort();
        throw new ToolError('cp was cancelled', '', -1);
      },
    ]);
    let caught: unknown;
    await new FileCopier(runner, 1000).copy('cp', src, path.join(dir, 'dst'), { signal: controller.signal, reflink: false }).catch((e) => (caught = e));
    expect(caught).to.be.instanceOf(ToolError);
    expect(calls).to.have.length(1);
  });

  it('rsync copies sparsely in place; a tool that is not installed is a 501 before anything runs', async () => {
    const { runner, calls } = scriptedRunner([() => undefined]);
    await new FileCopier(runner, 1000).copy('rsync', src, path.join(dir, 'dst'));
    expect(calls[0]).to.deep.equal({ tool: 'rsync', args: ['--sparse', '--inplace', '--whole-file', '--', src, path.join(dir, 'dst')] });
    const err = await new FileCopier(runner, 1000).copy('rclone', src, path.join(dir, 'dst')).catch((e) => e);
    expect(err).to.include({ status: 501, message: 'clone algorithm rclone needs rclone, which is not installed on this storage host' });
  });
});
