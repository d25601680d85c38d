import supertest from 'supertest';
import type { Express } from 'express';
import { createApp } from '../../src/api/app.js';
import { configWith, type Config } from '../../src/config.js';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { makeTree, removeTree } from './tree.js';

export interface TestDaemon {
  daemon: Daemon;
  app: Express;
  api: ReturnType<typeof supertest>;
  /** POSTs a JSON body to `/api/v1.0/<endpoint>`. */
  post(endpoint: string, body: unknown): supertest.Test;
  stop(): Promise<void>;
}

/**
 * A daemon on `mnt` with its app (no port: supertest binds an ephemeral one per request). Exports
 * are off unless the test asks for a backend, so no test touches a tgtd it did not start.
 */
export async function startTestDaemon(mnt: string, overrides: Partial<Config> = {}): Promise<TestDaemon> {
  const config = configWith({ mnt, logLevel: (process.env.ELEMENTO_TEST_LOG as Config['logLevel']) ?? 'silent', rescanIntervalMs: 0, exporter: 'none', ...overrides });
  const daemon = new Daemon(config, createLogger({ level: config.logLevel, format: 'pretty' }));
  await daemon.start();
  const app = createApp(daemon);
  const api = supertest(app);
  return {
    daemon,
    app,
    api,
    post: (endpoint, body) => api.post(`/api/v1.0/${endpoint}`).send(body as object),
    stop: () => daemon.stop(),
  };
}

/**
 * Each test of the calling suite gets a fresh tree with `roots` and a daemon on it (with `overrides`),
 * stopped and removed after the test. Read `mnt` and `d` inside the tests; a test may replace `d`:
 * the one there at the end is stopped.
 */
export function daemonPerTest(roots: Record<string, object | string> = { a: {} }, overrides: Partial<Config> = {}): { mnt: string; d: TestDaemon } {
  const env = {} as { mnt: string; d: TestDaemon };
  beforeEach(async () => {
    env.mnt = await makeTree(roots);
    env.d = await startTestDaemon(env.mnt, overrides);
  });
  afterEach(async () => {
    await env.d?.stop();
    await removeTree(env.mnt);
  });
  return env;
}
