import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Express } from 'express';
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
  /** Stops serving and the daemon, in a bounded time (STOP_GRACE_MS for the answers still streaming). */
  stop(): Promise<void>;
  /** Cuts every connection now (a second signal during stop). */
  hurry(): void;
}

/** How long, at a stop, answers still streaming (downloads, upload bodies) get before their connections are cut. */
export const STOP_GRACE_MS = 3000;

/** The answer while the tree is being read at start (the port is already bound): retry in a moment. */
function starting(res: ServerResponse): void {
  res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'retry-after': '1', connection: 'close' });
  res.end(JSON.stringify({ error: 'the storage daemon is starting; send the request again in a moment', code: 'unavailable' }));
}

/** Starts the daemon and its HTTP server; `stop` closes both (used by main and by the tests). */
export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  // Before anything is scanned: a bad token file or an unsafe address stops the start at once.
  const tokens = TokenTable.fromFile(config.tokensFile);
  checkExposure(config, tokens, log.child({ module: 'auth' }));
  // The port is bound before the tree is read: a second daemon started by mistake on the same port (same
  // unit, same tree) must exit before its start-up sweep and export reconciliation touch what the first one
  // serves (with ELEMENTO_TGT_MANAGE=1 its failed start used to stop the first one's tgtd, every export with it).
  // Node's whole-request limit (300 s) would cut an upload longer than five minutes: bodies are timed by the app
  // (transfer-timeouts.ts). The headers keep Node's 60 s, stated: its default follows requestTimeout, and 0 would mean none.
  let app: Express | null = null;
  const server = createServer({ requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => (app ? app(req, res) : starting(res)));
  try {
    await new Promise<void>((resolve, reject) => {
      // Express 5's app.listen hands a bind error to its callback as if listening: the plain server says it.
      server.once('error', reject);
      server.listen(config.port, config.host, () => resolve());
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new Error(`port ${config.port} on ${config.host} is already in use (another elemento-storage?)`);
    if (code === 'EACCES') throw new Error(`port ${config.port} on ${config.host} may not be bound by this user`);
    throw err;
  }
  const daemon = new Daemon(config, log);
  try {
    await daemon.start();
  } catch (err) {
    server.close();
    throw err;
  }
  app = createApp(daemon, tokens);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  log.info('listening', { host: config.host, port, api: `http://${config.host}:${port}/api/v1.0` });
  return {
    daemon,
    server,
    port,
    stop: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // The server waits for every answer: jobs are cancelled first (their requests answer 503), and what
      // still streams (a download to a slow client, an upload body that stalls) is cut after a grace period.
      await daemon.stopWork();
      // A connection kept alive goes as soon as its answer is sent (node closes idle ones only when asked).
      const idle = setInterval(() => server.closeIdleConnections(), 50);
      server.closeIdleConnections();
      const cut = setTimeout(() => server.closeAllConnections(), STOP_GRACE_MS);
      await closed;
      clearInterval(idle);
      clearTimeout(cut);
      await daemon.stop();
    },
    hurry: () => server.closeAllConnections(),
  };
}
