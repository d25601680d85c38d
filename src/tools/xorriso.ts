import type { CommandRunner } from './runner.js';

/**
 * Writes `out`, a copy of the ISO `input` (volume id and files kept) with `files` added at their
 * ISO paths. Used to put a cloud-init set's extra scripts beside user-data on the seed ISO.
 */
export async function addFilesToIso(
  runner: CommandRunner,
  input: string,
  out: string,
  files: { source: string; isoPath: string }[],
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<void> {
  const maps = files.flatMap((f) => ['-map', f.source, f.isoPath]);
  await runner.run('xorriso', ['-indev', input, '-outdev', out, '-joliet', 'on', ...maps, '-commit'], opts);
}
