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

  it('refuses a variable that is no setting (a misspelt one), naming it and its value; the harnesses\' own pass', () => {
    expect(() => load({ ELEMENTO_RESCAN_INTERVAL_MS: '5000' })).to.throw("invalid configuration: ELEMENTO_RESCAN_INTERVAL_MS is not a setting of the daemon (misspelt?); its value is not repeated here, in case it is a secret");
    expect(load({ ELEMENTO_FAULTS: '', ELEMENTO_TEST_LOG: 'debug', ELEMENTO_FUZZ_SCALE: '2', ELEMENTO_RESCAN_INTERVAL_MS: '' }).port).to.equal(7772);
  });

  it('refuses settings that contradict each other or could only be ignored, and a portal port out of range', () => {
    expect(() => load({ ELEMENTO_ISCSI_PORTAL: '127.0.0.1:99999' })).to.throw("invalid configuration: ELEMENTO_ISCSI_PORTAL's port must be 1 to 65535, not '127.0.0.1:99999'");
    expect(() => load({ ELEMENTO_ISCSI_PORTAL: '127.0.0.1:0' })).to.throw("ELEMENTO_ISCSI_PORTAL's port must be 1 to 65535");
    expect(() => load({ ELEMENTO_EXPORTER: 'none', ELEMENTO_TGT_MANAGE: '1' })).to.throw("invalid configuration: ELEMENTO_TGT_MANAGE applies to the tgt exporter, not to ELEMENTO_EXPORTER='none'");
    expect(() => load({ ELEMENTO_EXPORTER: 'lio', ELEMENTO_TGT_CONTROL_PORT: '3261' })).to.throw("invalid configuration: ELEMENTO_TGT_CONTROL_PORT applies to the tgt exporter, not to ELEMENTO_EXPORTER='lio'");
    expect(() => load({ ELEMENTO_CEPH_CONF: '/etc/ceph/other.conf' })).to.throw("invalid configuration: ELEMENTO_CEPH_CONF is set but ELEMENTO_CEPH_POOL is not (Ceph volumes are off without a pool), not '/etc/ceph/other.conf'");
    expect(() => load({ ELEMENTO_CEPH_POOL: 'rbd', ELEMENTO_CEPH_CONF: '/nonexistent/ceph.conf' })).to.throw("invalid configuration: ELEMENTO_CEPH_CONF names no file, not '/nonexistent/ceph.conf'");
    expect(load({ ELEMENTO_EXPORTER: 'tgt', ELEMENTO_TGT_MANAGE: '1', ELEMENTO_ISCSI_PORTAL: '[::1]:3260' })).to.include({ tgtManage: true });
  });

  it('refuses every empty flag, rather than taking it for unset (--tokens "$UNSET" would run without tokens)', () => {
    for (const [flag, name] of [['tokens', '--tokens'], ['logLevel', '--log-level'], ['logFormat', '--log-format'], ['mnt', '--mnt'], ['port', '--port']])
      expect(() => load({}, { [flag]: '' })).to.throw(`invalid configuration: ${name} must not be empty`);
  });

  it('takes an empty variable for unset, as a systemd unit writes it (ELEMENTO_LOG_LEVEL= included)', () => {
    expect(load({ ELEMENTO_LOG_LEVEL: '', ELEMENTO_LOG_FORMAT: '', ELEMENTO_LOCK_STALE_MS: '' })).to.include({ logLevel: 'info', lockStaleMs: 10000 });
  });
});
