import { lookup as dnsLookup } from 'node:dns';
import { lookup } from 'node:dns/promises';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { Agent, buildConnector } from 'undici';
import { ForbiddenError } from '../errors.js';

/**
 * What a client token's import may not reach (SSRF): this host, link-local (cloud metadata at
 * 169.254.169.254), private, shared (CGNAT), benchmark, multicast and reserved ranges, in IPv4 and IPv6
 * (IPv4-mapped IPv6 addresses are checked as their IPv4 address; the deprecated IPv4-compatible ::/96 is refused whole).
 */
const NOT_PUBLIC = new BlockList();
for (const [net, prefix] of [['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12], ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 3]] as const)
  NOT_PUBLIC.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [['::', 96], ['64:ff9b::', 96], ['100::', 64], ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8]] as const)
  NOT_PUBLIC.addSubnet(net, prefix, 'ipv6');

const notPublic = (host: string, addresses: { address: string; family: number }[]) =>
  addresses.some((a) => NOT_PUBLIC.check(a.address, a.family === 6 ? 'ipv6' : 'ipv4'))
    ? new ForbiddenError(`${host} is not a public address: a client token may import only from public addresses`, { field: 'url' })
    : undefined;

/** 403 unless every address `url`'s host resolves to is public (a failed resolution is the download's 502). */
export async function assertPublicHost(url: URL): Promise<void> {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const refused = notPublic(host, await lookup(host, { all: true, verbatim: true }));
  if (refused) throw refused;
}

/** The resolver of public-only connections: refuses a name any of whose answers is not public. */
const publicLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '', 0);
    const refused = notPublic(hostname, addresses);
    if (refused) return callback(refused, '', 0);
    if (options.all) (callback as unknown as (e: null, a: typeof addresses) => void)(null, addresses);
    else callback(null, addresses[0].address, addresses[0].family);
  });
};

const connectResolved = buildConnector({ lookup: publicLookup });

/**
 * Every connection of a client token's import is checked as it is made, on the addresses it really uses: a
 * name whose answer changes after assertPublicHost (DNS rebinding) still cannot reach a private address. An
 * IP literal, which node connects to without a lookup, is checked here.
 */
const connectPublicOnly: buildConnector.connector = (options, callback) => {
  const host = options.hostname.replace(/^\[(.*)\]$/, '$1');
  const refused = isIP(host) ? notPublic(host, [{ address: host, family: isIP(host) }]) : undefined;
  if (refused) callback(refused, null);
  else connectResolved(options, callback);
};

/** The connection pool of client tokens' imports (see connectPublicOnly). */
export const publicOnlyDispatcher = new Agent({ connect: connectPublicOnly });
