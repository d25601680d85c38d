/** The IQN prefix of every target this daemon makes (SPEC §3). */
export const IQN_PREFIX = 'iqn.2004-10.cloud.elemento:01:';

/** XOR of two 32-hex-digit uids, as 32 lowercase hex digits. */
export function xorUids(a: string, b: string): string {
  let out = '';
  for (let i = 0; i < 32; i += 8) out += ((parseInt(a.slice(i, i + 8), 16) ^ parseInt(b.slice(i, i + 8), 16)) >>> 0).toString(16).padStart(8, '0');
  return out;
}

/** The target of volume `vid` exported to `client`: `iqn.2004-10.cloud.elemento:01:<client XOR volume>`. */
export function iqnFor(client: string, vid: string): string {
  return IQN_PREFIX + xorUids(client, vid);
}

/** The client a target of volume `vid` was made for (XOR undone), or null for another name. */
export function clientOfIqn(iqn: string, vid: string): string | null {
  if (!iqn.startsWith(IQN_PREFIX)) return null;
  const suffix = iqn.slice(IQN_PREFIX.length);
  return /^[0-9a-f]{32}$/.test(suffix) ? xorUids(suffix, vid) : null;
}

/** `address:port` split (an IPv6 address may be bracketed). */
export function splitPortal(portal: string): { address: string; port: number } {
  const at = portal.lastIndexOf(':');
  return { address: portal.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(portal.slice(at + 1)) };
}
