#!/usr/bin/env -S MALLOC_MMAP_THRESHOLD_=131072 node --max-semi-space-size=4 --initial-heap-size=64
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import fse from 'fs-extra';
import { loadConfig } from './config.js';
import { armedFaults } from './faults.js';
import { createLogger, errorFields } from './log.js';
import { PROJECT_ROOT } from './project.js';
import { startServer } from './server.js';

/**
 * The embedded default: with no --mnt and no ELEMENTO_MNT the daemon serves `data/mnt` in the
 * project folder (ignored by git), seeded once from `examples/mnt`. Never the tracked examples,
 * never the real /mnt: a systemd unit passes --mnt /mnt explicitly.
 */
async function embeddedMnt(): Promise<string> {
  const target = path.join(PROJECT_ROOT, 'data', 'mnt');
  if (existsSync(target)) return target;
  // Seeded beside and renamed into place: a start killed mid-copy must not leave a half tree that
  // every later start would take for the seeded one.
  const staging = `${target}.seeding-${process.pid}`;
  await fse.copy(path.join(PROJECT_ROOT, 'examples', 'mnt'), staging);
  await fs.rename(staging, target);
  return target;
}

async function main(): Promise<void> {
  // VM disks (and cloud-init user-data, meta.json) are for the daemon and the iSCSI target (root) only:
  // whatever the inherited umask, no file or directory it or its tools create is readable by other local users.
  process.umask(process.umask() | 0o077);
  const program = new Command()
    .name('elemento-storage')
    .description('Elemento storage daemon: VM disk volumes as plain directories under a mount directory')
    .option('--port <port>', 'HTTP port (ELEMENTO_PORT, default 7772)')
    .option('--host <address>', 'address to listen on (ELEMENTO_HOST, default 127.0.0.1)')
    .option('--mnt <dir>', 'mount directory holding the roots (ELEMENTO_MNT, default: the embedded data/mnt)')
    .option('--log-level <level>', 'error, warn, info, debug or silent (ELEMENTO_LOG_LEVEL, default info)')
    .option('--log-format <format>', 'json or pretty (ELEMENTO_LOG_FORMAT; default: pretty on a terminal)')
    .option('--tokens <file>', 'API token file; without it every caller is trusted (ELEMENTO_TOKENS)')
    .option('--allow-insecure', 'listen beyond loopback without API tokens (ELEMENTO_ALLOW_INSECURE=1)')
    .parse();
  const flags = program.opts();
  const useEmbedded = flags.mnt === undefined && !process.env.ELEMENTO_MNT;
  const config = loadConfig({ flags, env: process.env, defaultMnt: useEmbedded ? await embeddedMnt() : '/mnt' });
  const log = createLogger({ level: config.logLevel, format: config.logFormat });
  if (useEmbedded) log.info('no --mnt given: serving the embedded demo tree', { mnt: config.mnt });
  if (armedFaults().length) log.warn('ELEMENTO_FAULTS is set: this daemon kills itself with SIGKILL at these points (crash tests only; unset it)', { faults: armedFaults() });
  const mnt = await fs.stat(config.mnt).catch(() => null);
  if (!mnt?.isDirectory()) throw new Error(`the mount directory ${config.mnt} (--mnt, ELEMENTO_MNT) ${mnt ? 'is not a directory' : 'does not exist'}`);
  const running = await startServer(config, log);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      // A second signal: the answers still streaming are cut now; the stop goes on (jobs, pending claims, exports).
      log.info('stopping now: cutting the connections still open', { signal });
      running.hurry();
      return;
    }
    stopping = true;
    log.info('stopping', { signal });
    try {
      await running.stop();
    } catch (err) {
      log.error('the stop failed; what it left is repaired at the next start', errorFields(err));
      process.exit(1);
    }
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err) => {
  console.error(`elemento-storage: ${(err as Error).message}`);
  if (process.env.ELEMENTO_LOG_LEVEL === 'debug') console.error(errorFields(err));
  process.exit(1);
});
