import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { TokenTable } from './tokens.js';

/** 127.0.0.0/8, ::1 (also IPv4-mapped) and `localhost`: addresses only this host can reach. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || /^(0+:){7}0*1$/.test(h)) return true;
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return Boolean(v4 && v4[1] === '127' && v4.slice(2).every((n) => Number(n) <= 255));
}

/**
 * SPEC §2: without tokens the daemon trusts the caller each body names, so it listens only on
 * loopback unless the operator says `--allow-insecure` (ELEMENTO_ALLOW_INSECURE=1). Throws the
 * sentence main prints when it refuses; logs why it trusts its callers when it starts anyway.
 */
export function checkExposure(config: Config, tokens: TokenTable, log: Logger): void {
  if (tokens.configured) {
    log.info('API tokens required', { tokensFile: config.tokensFile });
    if (config.tokensFile && TokenTable.exposesSecrets(config.tokensFile))
      log.warn('the token file holds tokens in clear and others may read it: chmod 600 it or store sha256 digests', { tokensFile: config.tokensFile });
    return;
  }
  if (isLoopback(config.host)) {
    log.warn('no API tokens configured (ELEMENTO_TOKENS): the daemon trusts the caller named in each request; listening on loopback only', { host: config.host });
    return;
  }
  if (!config.allowInsecure)
    throw new Error(
      `refusing to listen on ${config.host} without API tokens: anyone who can reach it could act as any client; set ELEMENTO_TOKENS, listen on 127.0.0.1, or pass --allow-insecure (ELEMENTO_ALLOW_INSECURE=1)`,
    );
  log.warn('no API tokens configured and listening beyond loopback (--allow-insecure): anyone who can reach this address may act as any client', { host: config.host });
}
