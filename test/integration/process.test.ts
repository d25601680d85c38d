import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { TOKENS, writeTokenFile } from '../helpers/auth.js';
import { MAIN, spawnDaemon, stopDaemon } from '../helpers/process.js';
import { PROJECT_ROOT } from '../../src/project.js';
import { makeTree, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

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

  it('makes what it creates private to its user: volume directories, images and meta.json are not readable by other local users', async () => {
    const { child, port } = await spawnDaemon(['--mnt', mnt]);
    try {
      for (const format of ['raw', 'qcow2']) {
        const res = await fetch(`http://127.0.0.1:${port}/api/v1.0/create`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(seedCreateBody({ format, size: 0.01 })) });
        const dir = path.join(mnt, 'a', `vid.${(await res.json()).vid}.elimg`);
        for (const file of [dir, path.join(dir, `data.${format === 'raw' ? 'img' : 'qcow2'}`), path.join(dir, 'meta.json')])
          expect([path.basename(file), (await fs.stat(file)).mode & 0o077]).to.deep.equal([path.basename(file), 0]);
      }
    } finally {
      child.kill('SIGTERM');
      await child;
    }
  });

  it('logs one line per request, saying why a refused one was refused, with at most 512 characters of its URL', async () => {
    const daemon = await spawnDaemon(['--mnt', mnt]);
    try {
      expect((await daemon.post('info', { volume_id: 'zz' })).status).to.equal(400);
      expect((await daemon.get(`no/${'x'.repeat(8000)}`)).status).to.equal(404);
      await waitFor(() => daemon.lines.filter((l) => l.includes('"message":"request"')).length === 2, 3000, 'two request lines');
      const [refused, long] = daemon.lines.map((l) => JSON.parse(l)).filter((e) => e.message === 'request');
      expect(refused).to.include({ level: 'info', status: 400, path: '/api/v1.0/info', vid: 'zz' });
      expect(refused.error).to.match(/volume_id/);
      expect(long.path).to.have.length(513);
      expect(long.error).to.match(/^no endpoint GET \/no\/x+…$/).and.have.length(513);
      // A condition, not a fault: a root that went away answers 503, said in the request's line only (no error line to page someone).
      const vid = (await daemon.post('create', seedCreateBody({ format: 'raw', size: 0.01 }))).body.vid;
      await fs.rename(path.join(mnt, 'a', 'settings.json'), path.join(mnt, 'a', 'settings.json.away'));
      await waitFor(async () => (await daemon.post('info', { volume_id: vid })).status === 503, 3000, 'the root to be unavailable');
      await waitFor(() => daemon.lines.some((l) => l.includes('"status":503')), 3000, 'the 503 to be logged');
      const lines = daemon.lines.map((l) => JSON.parse(l));
      expect(lines.filter((e) => e.level === 'error')).to.deep.equal([]);
      expect(lines.filter((e) => e.message === 'request' && e.status === 503).at(-1).error).to.match(/which is not available \(settings.json is gone/);
    } finally {
      await stopDaemon(daemon);
    }
  });

  it('warns at start when ELEMENTO_FAULTS arms fault points (a test variable left in a production environment)', async () => {
    const daemon = await spawnDaemon(['--mnt', mnt], { ELEMENTO_FAULTS: 'convert.after-rename' });
    await stopDaemon(daemon);
    const warned = daemon.lines.map((l) => JSON.parse(l)).find((e) => e.faults);
    expect(warned).to.include({ level: 'warn' }).and.deep.include({ faults: ['convert.after-rename'] });
    expect(warned.message).to.match(/^ELEMENTO_FAULTS is set/);
  });

  it("npm start's command hands a SIGTERM to the daemon (npm forwards it to the script's shell)", async () => {
    const pkg = JSON.parse(await fs.readFile(path.join(PROJECT_ROOT, 'package.json'), 'utf8'));
    expect(pkg.scripts.start).to.include('dist/src/main.js');
    // The same command line on the sources, run by sh as npm runs it.
    const command = `${pkg.scripts.start.replace('dist/src/main.js', `--import tsx/esm ${MAIN}`)} --mnt ${mnt} --port 0 --log-format json`;
    const shell = execa('sh', ['-c', command], { cwd: PROJECT_ROOT, reject: false, all: true });
    const lines: string[] = [];
    shell.all!.on('data', (chunk: Buffer) => lines.push(...chunk.toString().split('\n')));
    await waitFor(async () => lines.some((l) => l.includes('"message":"listening"')), 20_000, 'the daemon to listen');
    const children = await fs.readFile(`/proc/${shell.pid}/task/${shell.pid}/children`, 'utf8').catch(() => '');
    const stopped = () => lines.some((l) => l.includes('"message":"stopped"'));
    shell.kill('SIGTERM');
    try {
      await waitFor(stopped, 10_000, 'the daemon to stop');
    } finally {
      // A daemon the shell left orphaned holds the output pipe open: kill it, or the shell never ends.
      if (!stopped()) for (const pid of children.split(' ').filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
      await shell;
    }
  });

  it('takes its mount directory from ELEMENTO_MNT and refuses a bad port with a clear message', async () => {
    const { child, port } = await spawnDaemon([], { ELEMENTO_MNT: mnt });
    const status = await (await fetch(`http://127.0.0.1:${port}/api/v1.0/status`)).json();
    expect(status.mnt).to.equal(mnt);
    child.kill('SIGTERM');
    await child;
    const bad = await execa('node', ['--import', 'tsx/esm', MAIN, '--mnt', mnt, '--port', 'seventy'], { reject: false });
    expect(bad.exitCode).to.equal(1);
    expect(bad.stderr).to.equal("elemento-storage: invalid configuration: --port must be a whole number, not 'seventy'");
  });

  it('a tool the daemon started dies with a daemon killed with SIGKILL (no orphan goes on writing into the tree)', async () => {
    const image = path.join(mnt, 'a', 'orphan-probe.img');
    await execa('qemu-img', ['create', '-q', '-f', 'raw', image, '1M']);
    const script = path.join(mnt, 'run-tool.mts');
    const runner = path.join(PROJECT_ROOT, 'src', 'tools', 'runner.ts');
    await fs.writeFile(script, `import { ExecaRunner } from ${JSON.stringify(runner)};\nawait new ExecaRunner().run('qemu-io', ['-f', 'raw', '-c', 'sleep 30000', ${JSON.stringify(image)}], { timeoutMs: 60_000 });\n`);
    const daemon = execa('node', ['--import', 'tsx/esm', script], { reject: false });
    const toolRunning = async () => (await execa('pgrep', ['-f', `sleep 30000 ${image}`], { reject: false })).exitCode === 0;
    await waitFor(toolRunning, 10_000, 'qemu-io to start');
    daemon.kill('SIGKILL');
    await daemon;
    await waitFor(async () => !(await toolRunning()), 3000, 'qemu-io to die with its parent');
  });

  it('refuses a port in use, a missing or empty mount directory, each with one clear sentence and exit code 1', async () => {
    const first = await spawnDaemon(['--mnt', mnt]);
    const start = (args: string[], env: Record<string, string> = {}) =>
      execa('node', ['--import', 'tsx/esm', MAIN, ...args], { reject: false, env: { ELEMENTO_LOG_LEVEL: 'error', ...env } });
    try {
      const taken = await start(['--mnt', mnt, '--port', String(first.port)]);
      expect([taken.exitCode, taken.stderr]).to.deep.equal([1, `elemento-storage: port ${first.port} on 127.0.0.1 is already in use (another elemento-storage?)`]);
    } finally {
      first.child.kill('SIGTERM');
      await first.child;
    }
    const missing = await start(['--mnt', path.join(mnt, 'nowhere'), '--port', '0']);
    expect([missing.exitCode, missing.stderr]).to.deep.equal([1, `elemento-storage: the mount directory ${path.join(mnt, 'nowhere')} (--mnt, ELEMENTO_MNT) does not exist`]);
    const empty = await start(['--mnt', '', '--port', '0']);
    expect([empty.exitCode, empty.stderr]).to.deep.equal([1, 'elemento-storage: invalid configuration: --mnt must not be empty']);
  });

  it('starts from the systemd unit as written: its node flags and Environment lines are accepted, it serves and stops on SIGTERM', async () => {
    const unit = await fs.readFile(path.join(PROJECT_ROOT, 'scripts', 'elemento-storage.service'), 'utf8');
    const setting = (key: string) => unit.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1));
    const env = Object.fromEntries(setting('Environment').map((e) => e.replace(/^"|"$/g, '')).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
    const [node, ...args] = setting('ExecStart')[0].split(' ');
    expect([node, args.slice(-5)]).to.deep.equal(['/usr/bin/node', ['dist/src/main.js', '--mnt', '/mnt', '--port', '7772']]);
    // As systemd runs it, but from the sources, on a temp tree and a free port.
    const daemon = execa(node, [...args.slice(0, -5), '--import', 'tsx/esm', MAIN, '--mnt', mnt, '--port', '0'], { env, cwd: PROJECT_ROOT, reject: false, all: true });
    let output = '';
    daemon.all!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    await Promise.race([waitFor(async () => output.includes('"message":"listening"'), 20_000, 'the daemon to listen'), daemon.then((r) => Promise.reject(new Error(`exited ${r.exitCode}: ${output}`)))]);
    daemon.kill('SIGTERM');
    expect((await daemon).exitCode).to.equal(0);
  });

  it('without tokens says in its log that it trusts its callers, and refuses a non-loopback address before listening', async () => {
    const { child, lines } = await spawnDaemon(['--mnt', mnt]);
    expect(lines.some((l) => l.includes('no API tokens configured') && l.includes('"level":"warn"'))).to.equal(true);
    child.kill('SIGTERM');
    await child;
    const refused = await execa('node', ['--import', 'tsx/esm', MAIN, '--mnt', mnt, '--host', '0.0.0.0', '--port', '0'], { reject: false });
    expect(refused.exitCode).to.equal(1);
    expect(refused.stderr).to.match(/^elemento-storage: refusing to listen on 0\.0\.0\.0 without API tokens/);
  });

  it('with ELEMENTO_TOKENS answers 401 without a token and serves a valid one', async () => {
    const { child, port, lines } = await spawnDaemon(['--mnt', mnt], { ELEMENTO_TOKENS: await writeTokenFile(mnt) });
    const api = `http://127.0.0.1:${port}/api/v1.0`;
    const body = JSON.stringify({ client_uid: OWNER });
    const anonymous = await fetch(`${api}/accessible`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(anonymous.status).to.equal(401);
    const owner = await fetch(`${api}/accessible`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKENS.owner}` }, body });
    expect(owner.status).to.equal(200);
    child.kill('SIGTERM');
    await child;
    expect(lines.some((l) => l.includes('API tokens required'))).to.equal(true);
    expect(lines.some((l) => l.includes('"principal":"owner"'))).to.equal(true);
    expect(lines.join('\n')).to.not.include(TOKENS.owner);
    const badFile = await execa('node', ['--import', 'tsx/esm', MAIN, '--mnt', mnt, '--tokens', `${mnt}/missing.json`], { reject: false });
    expect(badFile.exitCode).to.equal(1);
    expect(badFile.stderr).to.equal(`elemento-storage: the token file ${mnt}/missing.json cannot be read (ENOENT)`);
  });
});
