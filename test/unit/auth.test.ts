import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { checkExposure, isLoopback } from '../../src/auth/exposure.js';
import { TokenTable } from '../../src/auth/tokens.js';
import { configWith, loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { OWNER } from '../helpers/tree.js';

const TOKEN = 'a-long-enough-token-0001';

describe('API token file', () => {
  let dir: string;
  const write = async (doc: unknown) => {
    const file = path.join(dir, 'tokens.json');
    await fs.writeFile(file, typeof doc === 'string' ? doc : JSON.stringify(doc), { mode: 0o600 });
    return file;
  };
  before(async () => (dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-tokens-'))));
  after(async () => fs.rm(dir, { recursive: true, force: true }));

  it('finds the principal of a token given in clear or as its sha256, and nobody for anything else', async () => {
    const table = TokenTable.load(
      await write({
        tokens: [
          { name: 'ctl', role: 'admin', sha256: createHash('sha256').update(TOKEN).digest('hex').toUpperCase() },
          { role: 'client', client_uid: OWNER.toUpperCase(), token: 'client-token-000000001' },
        ],
      }),
    );
    expect(table.configured).to.equal(true);
    expect(table.lookup(TOKEN)).to.deep.equal({ role: 'admin', clientUid: null, name: 'ctl' });
    expect(table.lookup('client-token-000000001')).to.deep.equal({ role: 'client', clientUid: OWNER, name: 'client#1' });
    for (const guess of ['', TOKEN.slice(0, -1), `${TOKEN} `, TOKEN.toUpperCase(), createHash('sha256').update(TOKEN).digest('hex')]) expect(table.lookup(guess), guess).to.equal(null);
    expect(TokenTable.NONE.configured).to.equal(false);
  });

  const bad: Array<[string, unknown, string]> = [
    ['not JSON', '{', 'is not valid JSON'],
    ['no tokens', { tokens: [] }, "is invalid: 'tokens' must NOT have fewer than 1 items"],
    ['a short token', { tokens: [{ role: 'admin', token: 'short' }] }, `is invalid: 'tokens.0.token' must match pattern "^[\\x21-\\x7e]{16,512}$"`],
    ['a client without client_uid', { tokens: [{ role: 'client', token: TOKEN }] }, "is invalid: 'tokens.0.client_uid' is missing"],
    ['an admin with a client_uid', { tokens: [{ role: 'admin', token: TOKEN, client_uid: OWNER }] }, "is invalid: 'tokens.0' must give either token or sha256, not both, and a client_uid only with role client"],
    ['both token and sha256', { tokens: [{ role: 'admin', token: TOKEN, sha256: 'a'.repeat(64) }] }, "is invalid: 'tokens.0' must give either token or sha256, not both, and a client_uid only with role client"],
    ['an unknown role', { tokens: [{ role: 'root', token: TOKEN }] }, "is invalid: 'tokens.0.role' must be one of admin, client"],
    ['the same token twice', { tokens: [{ role: 'admin', token: TOKEN }, { role: 'client', client_uid: OWNER, sha256: createHash('sha256').update(TOKEN).digest('hex') }] }, "gives the same token twice (again at 'client#1')"],
  ];
  for (const [what, doc, reason] of bad)
    it(`refuses a file with ${what}, saying so in one sentence`, async () => {
      const file = await write(doc);
      expect(() => TokenTable.load(file)).to.throw(`the token file ${file} ${reason}`);
    });

  it('reads the example file of examples/tokens.json (tokens "example-admin-token-change-me" and "example-client-token-change-me")', () => {
    const table = TokenTable.load(path.resolve('examples/tokens.json'));
    expect(table.lookup('example-admin-token-change-me')).to.deep.equal({ role: 'admin', clientUid: null, name: 'controller' });
    expect(table.lookup('example-client-token-change-me')).to.deep.equal({ role: 'client', clientUid: OWNER, name: 'tenant-ffff' });
  });

  it('refuses a file that cannot be read', () => {
    expect(() => TokenTable.load(path.join(dir, 'missing.json'))).to.throw(`the token file ${path.join(dir, 'missing.json')} cannot be read (ENOENT)`);
  });

  it('notices tokens in clear in a file others may read', async () => {
    const file = await write({ tokens: [{ role: 'admin', token: TOKEN }] });
    expect(TokenTable.exposesSecrets(file)).to.equal(false);
    await fs.chmod(file, 0o644);
    expect(TokenTable.exposesSecrets(file)).to.equal(true);
    await write({ tokens: [{ role: 'admin', sha256: 'a'.repeat(64) }] });
    await fs.chmod(file, 0o644);
    expect(TokenTable.exposesSecrets(file)).to.equal(false);
  });
});

describe('listening without tokens', () => {
  const loopback = ['127.0.0.1', '127.8.9.10', 'localhost', 'LOCALHOST', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'];
  const exposed = ['0.0.0.0', '::', '10.0.0.5', '192.168.1.1', '128.0.0.1', '127.0.0.256', 'storage-host', '::ffff:10.0.0.1', 'localhost.example.com'];
  for (const host of loopback) it(`counts ${host} as loopback`, () => expect(isLoopback(host)).to.equal(true));
  for (const host of exposed) it(`counts ${host} as reachable from elsewhere`, () => expect(isLoopback(host)).to.equal(false));

  const log = createLogger({ level: 'silent' });
  it('refuses a non-loopback address without tokens unless told explicitly', () => {
    expect(() => checkExposure(configWith({ mnt: '/x', host: '0.0.0.0' }), TokenTable.NONE, log)).to.throw(
      'refusing to listen on 0.0.0.0 without API tokens: anyone who can reach it could act as any client; set ELEMENTO_TOKENS, listen on 127.0.0.1, or pass --allow-insecure (ELEMENTO_ALLOW_INSECURE=1)',
    );
    expect(() => checkExposure(configWith({ mnt: '/x', host: '0.0.0.0', allowInsecure: true }), TokenTable.NONE, log)).to.not.throw();
    expect(() => checkExposure(configWith({ mnt: '/x', host: '127.0.0.1' }), TokenTable.NONE, log)).to.not.throw();
  });

  it('reads --tokens, ELEMENTO_TOKENS and ELEMENTO_ALLOW_INSECURE into the configuration', () => {
    const load = (flags: Record<string, unknown>, env: Record<string, string>) => loadConfig({ flags, env, defaultMnt: '/mnt' });
    expect(load({}, {})).to.include({ allowInsecure: false }).and.not.have.property('tokensFile');
    expect(load({}, { ELEMENTO_TOKENS: '/etc/elemento/tokens.json', ELEMENTO_ALLOW_INSECURE: '1' })).to.include({ tokensFile: '/etc/elemento/tokens.json', allowInsecure: true });
    expect(load({ tokens: 'rel/tokens.json', allowInsecure: true }, { ELEMENTO_TOKENS: '/other' })).to.include({ tokensFile: path.resolve('rel/tokens.json'), allowInsecure: true });
    expect(() => load({}, { ELEMENTO_ALLOW_INSECURE: 'maybe' })).to.throw("ELEMENTO_ALLOW_INSECURE must be 1 or 0, not 'maybe'");
  });
});
