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
 * Registers mocha hooks giving every test of the suite a fresh tree with `roots` and a daemon on it
 * (stopped and removed after the test). Read `mnt` and `d` inside the tests.
 */
export function daemonPerTest(roots: Record<string, object> = { a: {} }): { readonly mnt: string; readonly d: TestDaemon } {
  const state = { mnt: '', d: undefined as TestDaemon | undefined };
  beforeEach(async () => {
    state.mnt = await makeTree(roots);
    state.d = await startTestDaemon(state.mnt);
  });
  afterEach(async () => {
    await state.d?.stop();
    await removeTree(state.mnt);
  });
  return {
    get mnt() {
      return state.mnt;
    },
    get d() {
      return state.d!;
    },
  };
}
