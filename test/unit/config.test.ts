import { expect } from 'chai';
import { loadConfig } from '../../src/config.js';

const load = (env: Record<string, string>, flags: Record<string, string> = {}) => loadConfig({ flags, env, defaultMnt: '/tmp' });

/** README "Configuration": every bad value stops the daemon with one sentence naming what the operator wrote. */
describe('configuration', () => {
  it('names the variable or flag the operator set, what it must be, and the value refused', () => {
    expect(() => load({ ELEMENTO_LOCK_STALE_MS: '100' })).to.throw("invalid configuration: ELEMENTO_LOCK_STALE_MS must be >= 2000, not '100'");
    expect(() => load({ ELEMENTO_LOG_LEVEL: 'verbose' })).to.throw("invalid configuration: ELEMENTO_LOG_LEVEL must be one of error, warn, info, debug, silent, not 'verbose'");
    expect(() => load({}, { logFormat: 'xml' })).to.throw("invalid configuration: --log-format must be one of json, pretty, not 'xml'");
    expect(() => load({ ELEMENTO_PORT: '99999' })).to.throw("invalid configuration: ELEMENTO_PORT must be <= 65535, not '99999'");
    expect(() => load({}, { port: '70000' })).to.throw("invalid configuration: --port must be <= 65535, not '70000'");
    expect(() => load({ ELEMENTO_EXPORTER: 'iet' })).to.throw("invalid configuration: ELEMENTO_EXPORTER must be one of lio, tgt, none, not 'iet'");
    expect(() => load({ ELEMENTO_ISCSI_PORTAL: '127.0.0.1' })).to.throw("invalid configuration: ELEMENTO_ISCSI_PORTAL is not of the accepted form, not '127.0.0.1'");
  });

  it('refuses an ELEMENTO_TGT_MANAGE that is neither 1 nor 0 rather than taking it for 0', () => {
    expect(load({ ELEMENTO_TGT_MANAGE: '1' }).tgtManage).to.equal(true);
    expect(load({ ELEMENTO_TGT_MANAGE: '0' }).tgtManage).to.equal(false);
    expect(() => load({ ELEMENTO_TGT_MANAGE: 'on' })).to.throw("ELEMENTO_TGT_MANAGE must be 1 or 0, not 'on'");
  });

  it('takes an empty variable for unset, as a systemd unit writes it (ELEMENTO_LOG_LEVEL= included)', () => {
    expect(load({ ELEMENTO_LOG_LEVEL: '', ELEMENTO_LOG_FORMAT: '', ELEMENTO_LOCK_STALE_MS: '' })).to.include({ logLevel: 'info', lockStaleMs: 10000 });
  });
});
