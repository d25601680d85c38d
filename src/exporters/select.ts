import { existsSync } from 'node:fs';
import type { Config } from '../config.js';
import { NotSupportedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CommandRunner } from '../tools/runner.js';
import { Targetcli } from '../tools/targetcli.js';
import { Tgtadm } from '../tools/tgtadm.js';
import type { Exporter } from './base.js';
import { LioExporter } from './lio.js';
import { TgtExporter } from './tgt.js';

/** Where the kernel's LIO target shows itself: present only when configfs and target_core_mod are loaded. */
export const LIO_CONFIGFS = '/sys/kernel/config/target';

/** Exports switched off (ELEMENTO_EXPORTER=none): every export request answers 501. */
export class NoExporter implements Exporter {
  readonly name = 'none' as const;
  readonly capabilities = Object.freeze({ readonlyLuns: false, managedDaemon: false, savesConfig: false, rbdLuns: false });
  readonly lun = 0;
  /** Called before any change of a marker: an export request is refused before the tree changes. */
  async start(): Promise<void> {
    throw new NotSupportedError('exports are switched off on this storage host (ELEMENTO_EXPORTER=none)');
  }
  async stop(): Promise<void> {}
  async list() {
    return [];
  }
  async ensure(): Promise<void> {
    throw new NotSupportedError('exports are switched off on this storage host (ELEMENTO_EXPORTER=none)');
  }
  async remove(): Promise<void> {
    throw new NotSupportedError('exports are switched off on this storage host (ELEMENTO_EXPORTER=none)');
  }
}

/** `ELEMENTO_EXPORTER`, or when unset LIO if the kernel offers it, else tgt. */
export function exporterKind(config: Config, lioPath = LIO_CONFIGFS): 'lio' | 'tgt' | 'none' {
  return config.exporter ?? (existsSync(lioPath) ? 'lio' : 'tgt');
}

export function createExporter(config: Config, runner: CommandRunner, log: Logger, lioPath = LIO_CONFIGFS): Exporter {
  const kind = exporterKind(config, lioPath);
  if (kind === 'none') return new NoExporter();
  if (kind === 'lio') {
    if (config.tgtManage) throw new Error('invalid configuration: ELEMENTO_TGT_MANAGE applies to the tgt exporter, not to LIO');
    return new LioExporter(new Targetcli(runner), config.iscsiPortal, log);
  }
  return new TgtExporter(
    new Tgtadm(runner, config.tgtControlPort),
    { manage: config.tgtManage, portal: config.iscsiPortal, controlPort: config.tgtControlPort },
    log,
  );
}
