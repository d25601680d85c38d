import type { Server } from 'node:http';
import { createApp } from './api/app.js';
import { checkExposure } from './auth/exposure.js';
import { TokenTable } from './auth/tokens.js';
import type { Config } from './config.js';
import { Daemon } from './daemon.js';
import type { Logger } from './log.js';

export interface RunningServer {
  daemon: Daemon;
  server: Server;
  port: number;
  stop(): Promise<void>;
}

/** Starts the daemon and its HTTP server; `stop` closes both (used by main and by the tests). */
export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  // Before anything is scanned: a bad token file or an unsafe address stops the start at once.
  const tokens = TokenTable.fromFile(config.tokensFile);
  checkExposure(config, tokens, log.child({ module: 'auth' }));
  const daemon = new Daemon(config, log);
  await daemon.start();
  const app = createApp(daemon, tokens);
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(config.port, config.host, () => resolve(s));
    s.once('error', reject);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  log.info('listening', { host: config.host, port, api: `http://${config.host}:${port}/api/v1.0` });
  return {
    daemon,
    server,
    port,
    stop: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await daemon.stop();
    },
  };
}
