import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { OTHER, OWNER } from './tree.js';

/** The tokens of the security tests: one admin, and one client token for each of OWNER and OTHER. */
export const TOKENS = {
  admin: 'admin-token-0123456789abcdef',
  owner: 'owner-token-0123456789abcdef',
  other: 'other-token-0123456789abcdef',
} as const;

/**
 * Writes a token file in `dir` (mode 600) and returns its path. The admin's entry is stored as a
 * sha256 digest and the clients' in clear, so both forms are exercised.
 */
export async function writeTokenFile(dir: string): Promise<string> {
  const file = path.join(dir, 'tokens.json');
  const doc = {
    tokens: [
      { name: 'controller', role: 'admin', sha256: createHash('sha256').update(TOKENS.admin).digest('hex') },
      { name: 'owner', role: 'client', client_uid: OWNER, token: TOKENS.owner },
      { name: 'other', role: 'client', client_uid: OTHER.toUpperCase(), token: TOKENS.other },
    ],
  };
  await fs.writeFile(file, JSON.stringify(doc, null, 2), { mode: 0o600 });
  return file;
}

export const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
