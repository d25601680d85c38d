import type { CommandRunner } from './runner.js';

/** The files of a NoCloud seed, as cloud-init reads them from the `cidata` ISO. */
export interface SeedFiles {
  userData: string;
  metaData?: string;
  networkConfig?: string;
}

/**
 * `cloud-localds [--network-config=F] out.iso user-data [meta-data]`: an ISO 9660 image labelled
 * `cidata` holding the files byte for byte (cloud-init's NoCloud datasource).
 */
export async function buildSeedIso(runner: CommandRunner, out: string, files: SeedFiles, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<void> {
  const args = [
    ...(files.networkConfig ? [`--network-config=${files.networkConfig}`] : []),
    out,
    files.userData,
    ...(files.metaData ? [files.metaData] : []),
  ];
  await runner.run('cloud-localds', args, opts);
}
