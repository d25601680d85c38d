import { expect } from 'chai';
import { loadConfig } from '../../src/config.js';
import { createExporter } from '../../src/exporters/select.js';
import { createLogger } from '../../src/log.js';
import { RecordedRunner } from '../helpers/fake-runner.js';

const load = (env: Record<string, string>) => loadConfig({ flags: {}, env, defaultMnt: '/tmp' });

describe('export configuration', () => {
  it('has defaults, and reads every ELEMENTO_* export variable', () => {
    expect(load({})).to.include({ iscsiPortal: '127.0.0.1:3260', tgtManage: false, exportHeartbeatMs: 30000, exportStaleMs: 3600000, shareableUserLimit: 8 });
    expect(load({}).exporter).to.equal(undefined);
    const config = load({
      ELEMENTO_EXPORTER: 'tgt',
      ELEMENTO_ISCSI_PORTAL: '10.0.0.5:3261',
      ELEMENTO_TGT_CONTROL_PORT: '21000',
      ELEMENTO_TGT_MANAGE: '1',
      ELEMENTO_SHAREABLE_USER_LIMIT: '3',
    });
    expect(config).to.include({ exporter: 'tgt', iscsiPortal: '10.0.0.5:3261', tgtControlPort: 21000, tgtManage: true, shareableUserLimit: 3 });
  });

  it('refuses bad values with a sentence naming them', () => {
    expect(() => load({ ELEMENTO_EXPORTER: 'iet' })).to.throw(/^invalid configuration: ELEMENTO_EXPORTER must be one of/);
    expect(() => load({ ELEMENTO_ISCSI_PORTAL: '127.0.0.1' })).to.throw(/^invalid configuration: ELEMENTO_ISCSI_PORTAL /);
    expect(() => load({ ELEMENTO_TGT_CONTROL_PORT: 'x' })).to.throw("ELEMENTO_TGT_CONTROL_PORT must be a whole number, not 'x'");
    // A typo is not 'off' in silence: exports would answer 503 with no hint why.
    expect(() => load({ ELEMENTO_TGT_MANAGE: 'on' })).to.throw("ELEMENTO_TGT_MANAGE must be 1 or 0, not 'on'");
    expect(load({ ELEMENTO_TGT_MANAGE: '0' }).tgtManage).to.equal(false);
    expect(load({ ELEMENTO_TGT_MANAGE: '' }).tgtManage).to.equal(false);
    const log = createLogger({ level: 'silent', format: 'json' });
    expect(() => load({ ELEMENTO_EXPORTER: 'lio', ELEMENTO_TGT_MANAGE: '1' })).to.throw("invalid configuration: ELEMENTO_TGT_MANAGE applies to the tgt exporter, not to ELEMENTO_EXPORTER='lio'");
    // LIO detected (the exporter not set): refused when the exporter is chosen.
    expect(() => createExporter(load({ ELEMENTO_TGT_MANAGE: '1' }), new RecordedRunner([]), log, '/')).to.throw(
      'invalid configuration: ELEMENTO_TGT_MANAGE applies to the tgt exporter, not to LIO',
    );
  });

  it('takes an empty variable as unset, as a systemd unit writes it', () => {
    const config = load({ ELEMENTO_LOG_LEVEL: '', ELEMENTO_LOG_FORMAT: '', ELEMENTO_EXPORTER: '', ELEMENTO_TGT_MANAGE: '' });
    expect(config).to.include({ logLevel: 'info', tgtManage: false });
    expect(config).to.not.have.property('logFormat');
  });
});
