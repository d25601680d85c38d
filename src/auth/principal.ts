import { AsyncLocalStorage } from 'node:async_hooks';
import type { Principal } from './tokens.js';

/**
 * The principal of the request being served, for code that runs on its behalf but has no
 * `res` at hand (the job registry records who started a job). Set by the auth middleware once
 * the body is read; undefined without tokens (everyone is trusted) and outside a request.
 */
const current = new AsyncLocalStorage<Principal>();

export function runAsPrincipal<T>(principal: Principal, fn: () => T): T {
  return current.run(principal, fn);
}

/** The client a token binds the current request to, or null (admin, no tokens, no request). */
export function currentClient(): string | null {
  return current.getStore()?.clientUid ?? null;
}
