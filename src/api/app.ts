import { randomUUID } from 'node:crypto';
import express, { type Express } from 'express';
import { TokenTable } from '../auth/tokens.js';
import type { Daemon } from '../daemon.js';
import { NotFoundError, UnavailableError } from '../errors.js';
import { actAsPrincipal, authenticate, requireAdmin } from './auth.js';
import { errorHandler } from './errors.js';
import { exportRoutes } from './routes/exports.js';
import { CloudInitSets } from '../images/cloudinit.js';
import { tusUploads } from '../uploads/tus.js';
import { cloudInitRoutes } from './routes/cloudinit.js';
import { downloadRoutes } from './routes/download.js';
import { imageRoutes } from './routes/images.js';
import { transferTimeouts } from './transfer-timeouts.js';
import { jsonBody } from './json-body.js';
import { jobRoutes } from './routes/jobs.js';
import { lifecycleRoutes } from './routes/lifecycle.js';
import { statusRoutes } from './routes/status.js';
import { volumeRoutes } from './routes/volumes.js';

/** `/api/v1.0` is what Elemento clients call; `/api/v1` is its alias. */
export const API_VERSIONS = ['v1.0', 'v1'] as const;
/** How much of a request's URL (or of the sentence refusing it, which may quote it) its log line keeps. */
const MAX_LOGGED = 512;
const cut = (text: string) => (text.length > MAX_LOGGED ? `${text.slice(0, MAX_LOGGED)}…` : text);
/** The largest JSON body accepted, in bytes (1 MB); more is 413. */
export const JSON_LIMIT = 1024 * 1024;

/**
 * The HTTP face of the daemon: one router per API area under each supported version. `tokens`
 * defaults to the file the configuration names (none: every caller is trusted).
 */
export function createApp(daemon: Daemon, tokens = TokenTable.fromFile(daemon.config.tokensFile)): Express {
  const log = daemon.log.child({ module: 'http' });
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');

  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.locals.requestId = randomUUID().slice(0, 8);
    res.on('finish', () => {
      const body = req.body as Record<string, unknown> | undefined;
      const vid = body && typeof body === 'object' ? (body.volume_id ?? body.vid) : undefined;
      log.info('request', {
        method: req.method,
        // Cut: a client hammering 16 KB URLs must not make each of its lines 16 KB.
        path: cut(req.originalUrl),
        status: res.statusCode,
        // The sentence a refused request was answered with (a 5xx has its own error line).
        ...(typeof res.locals.refusal === 'string' ? { error: cut(res.locals.refusal) } : {}),
        ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
        ...(typeof vid === 'string' ? { vid: vid.slice(0, 64) } : {}),
        ...(res.locals.principal ? { principal: (res.locals.principal as { name: string }).name } : {}),
        requestId: res.locals.requestId,
      });
    });
    next();
  });
  // A request on a kept-alive connection while the daemon stops would start work nobody cancels.
  app.use((_req, res, next) => {
    if (!daemon.stopping) return next();
    res.set('Connection', 'close');
    next(new UnavailableError('the storage daemon is stopping; send the request again once it is back'));
  });

  app.use(transferTimeouts(daemon.config.transferIdleTimeoutMs));

  // Resumable uploads (tus) take raw bodies: they sit before the JSON parser.
  const tus = tusUploads(daemon.ctx);
  const cloudInit = new CloudInitSets(daemon.ctx);
  daemon.onStop(() => tus.close());
  daemon.onStop(() => cloudInit.close());
  // They are token-checked like the JSON API, and run as the token's principal (tus.ts checks ownership).
  for (const version of API_VERSIONS)
    app.all([`/api/${version}/files`, `/api/${version}/files/*splat`], authenticate(tokens), actAsPrincipal(), tus.handler);

  const api = express.Router();
  // The token is checked before the body is read, and the body's caller fields right after.
  api.use(authenticate(tokens));
  api.use(jsonBody(JSON_LIMIT));
  api.use(actAsPrincipal());
  api.get('/status', requireAdmin);
  api.use(statusRoutes(daemon));
  api.use(volumeRoutes(daemon.ctx));
  api.use(lifecycleRoutes(daemon.ctx));
  api.use(jobRoutes(daemon.ctx.jobs));
  api.use(exportRoutes(daemon.ctx, daemon.exports));
  api.use(imageRoutes(daemon));
  api.use(cloudInitRoutes(daemon.ctx, cloudInit));
  api.use(downloadRoutes(daemon.ctx));
  api.use((req, _res, next) => next(new NotFoundError(`no endpoint ${req.method} ${req.path}`)));
  for (const version of API_VERSIONS) app.use(`/api/${version}`, api);

  app.use('/api/:version', (req, _res, next) => {
    next(new NotFoundError(`API version '${req.params.version}' is not supported; use one of: ${API_VERSIONS.join(', ')}`, { supported: API_VERSIONS }));
  });
  app.use((req, _res, next) => next(new NotFoundError(`no endpoint ${req.method} ${req.path}; the API is under /api/v1.0`)));
  app.use(errorHandler(log));
  return app;
}
