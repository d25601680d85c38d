import winston from 'winston';
import { ApiError } from './errors.js';

export type Logger = winston.Logger;

/**
 * Flattens an Error so winston keeps its message and stack (winston drops them from `{ err }`).
 * ToolError's tool output and exit code come along, for the log only. The daemon's own errors
 * (ApiError) say what happened in their message: only unexpected ones carry their stack.
 */
export function errorFields(err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { error: String(err) };
  const extra = err as Error & { code?: unknown; toolOutput?: unknown; exitCode?: unknown };
  return {
    error: err.message,
    errorName: err.name,
    ...(extra.code !== undefined ? { errorCode: extra.code } : {}),
    ...(extra.toolOutput ? { toolOutput: extra.toolOutput } : {}),
    ...(extra.exitCode !== undefined ? { exitCode: extra.exitCode } : {}),
    ...(err instanceof ApiError ? {} : { stack: err.stack }),
  };
}

export interface LogOptions {
  level: 'error' | 'warn' | 'info' | 'debug' | 'silent';
  /** json for services and pipes, pretty for a terminal; chosen from stdout when not set. */
  format?: 'json' | 'pretty';
}

/** The root logger; modules take a child with `{ module }` so every line says where it came from. */
export function createLogger(opts: LogOptions): Logger {
  const format = opts.format ?? (process.stdout.isTTY ? 'pretty' : 'json');
  const pretty = winston.format.combine(
    winston.format.colorize(),
    winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
    winston.format.printf(({ level, message, timestamp, module, stack, ...rest }) => {
      const fields = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      return `${timestamp} ${level} [${module ?? 'daemon'}] ${message}${fields ? ' ' + fields : ''}${stack && opts.level === 'debug' ? '\n' + stack : ''}`;
    }),
  );
  return winston.createLogger({
    level: opts.level === 'silent' ? 'error' : opts.level,
    silent: opts.level === 'silent',
    format: format === 'json' ? winston.format.combine(winston.format.timestamp(), winston.format.json()) : pretty,
    transports: [new winston.transports.Console()],
  });
}
