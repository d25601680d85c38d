import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { checkDocument } from '../schemas.js';

/** Who a valid token belongs to. `clientUid` is null for an admin. */
export interface Principal {
  readonly role: 'admin' | 'client';
  readonly clientUid: string | null;
  /** The entry's `name` (or its role and position): for the log, never the token. */
  readonly name: string;
}

interface TokenEntry {
  name?: string;
  token?: string;
  sha256?: string;
  role: 'admin' | 'client';
  client_uid?: string;
}

const sha256 = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

/**
 * The API tokens of schemas/tokens.json, kept only as sha256 digests. A presented token is hashed
 * once and compared with every entry in constant time (no early exit), so neither the answer time
 * nor a lookup structure tells how close a guess came.
 */
export class TokenTable {
  private constructor(private readonly entries: ReadonlyArray<{ digest: Buffer; principal: Principal }>) {}

  /** No tokens: the daemon trusts the caller each request names (SPEC §2). */
  static readonly NONE = new TokenTable([]);

  /** Reads and checks the token file; throws one sentence naming the file and the problem. */
  static load(file: string): TokenTable {
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      const reason = err instanceof SyntaxError ? 'is not valid JSON' : `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
      throw new Error(`the token file ${file} ${reason}`);
    }
    const problem = checkDocument('tokens', doc)?.replace(
      /must NOT be valid$/, // the schema's `not` clauses, in words
      'must give either token or sha256, not both, and a client_uid only with role client',
    );
    if (problem) throw new Error(`the token file ${file} is invalid: ${problem}`);
    const entries = (doc as { tokens: TokenEntry[] }).tokens.map((e, i) => ({
      digest: e.sha256 ? Buffer.from(e.sha256, 'hex') : sha256(e.token!),
      principal: Object.freeze({ role: e.role, clientUid: e.client_uid?.toLowerCase() ?? null, name: e.name ?? `${e.role}#${i}` }),
    }));
    const seen = new Set<string>();
    for (const { digest, principal } of entries) {
      if (seen.has(digest.toString('hex'))) throw new Error(`the token file ${file} gives the same token twice (again at '${principal.name}')`);
      seen.add(digest.toString('hex'));
    }
    return new TokenTable(entries);
  }

  /** The tokens of `file` when one is configured, else NONE. */
  static fromFile(file: string | undefined): TokenTable {
    return file ? TokenTable.load(file) : TokenTable.NONE;
  }

  /** True when the file holds tokens in clear and others than its owner may read it. */
  static exposesSecrets(file: string): boolean {
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { tokens: TokenEntry[] };
    return doc.tokens.some((e) => e.token !== undefined) && (statSync(file).mode & 0o077) !== 0;
  }

  get configured(): boolean {
    return this.entries.length > 0;
  }

  /** The principal of `token`, or null when no entry matches. */
  lookup(token: string): Principal | null {
    const digest = sha256(token);
    let found: Principal | null = null;
    for (const entry of this.entries) if (timingSafeEqual(entry.digest, digest)) found = entry.principal;
    return found;
  }
}
