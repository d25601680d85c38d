import supertest from 'supertest';
import type { Express } from 'express';
import { createApp } from '../../src/api/app.js';
import { configWith, type Config } from '../../src/config.js';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';

export interface TestDaemon {
  daemon: Daemon;
  app: Express;
  api: ReturnType<typeof supertest>;
  /** POSTs a JSON body to `/api/v1.0/<endpoint>`. */
  post(endpoint: string, body: unknown): supertest.Test;
  stop(): Promise<void>;
}

/** A daemon on `mnt` with its app (no port: supertest binds an ephemeral one per request). */
export async function startTestDaemon(mnt: string, overrides: Partial<Config> = {}): Promise<TestDaemon> {
  const config = configWith({ mnt, logLevel: (process.env.ELEMENTO_TEST_LOG as Config['logLevel']) ?? 'silent', rescanIntervalMs: 0, ...overrides });
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
