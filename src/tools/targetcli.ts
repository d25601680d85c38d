import type { CommandRunner } from './runner.js';

/**
 * Parses `targetcli ls /iscsi 1`: the children of `o- iscsi` are the target IQNs
 * (`  o- iqn.2004-10... .......... [TPGs: 1]`).
 */
export function parseIscsiTargets(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s+o- (iqn\.\S+) \.*\s*\[/.exec(line);
    if (m) out.push(m[1]);
  }
  return out;
}

/**
 * Parses `targetcli ls /backstores/fileio 1`: one child per storage object,
 * `  o- <name> ...... [<file> (<size>) write-back activated]`.
 */
export function parseFileioBackstores(text: string): Array<{ name: string; file: string }> {
  const out: Array<{ name: string; file: string }> = [];
  for (const line of text.split('\n')) {
    const m = /^\s+o- (\S+) \.*\s*\[(\/\S+) \(/.exec(line);
    if (m) out.push({ name: m[1], file: m[2] });
  }
  return out;
}

/**
 * Thin typed wrappers around targetcli (targetcli-fb), one process per command through the one runner.
 * Each call is `targetcli <path> <command> [args...]`, the non-interactive form.
 */
export class Targetcli {
  constructor(
    private readonly runner: CommandRunner,
    private readonly timeoutMs = 60_000,
  ) {}

  private async run(args: string[]): Promise<string> {
    return (await this.runner.run('targetcli', args, { timeoutMs: this.timeoutMs })).stdout;
  }

  /** Targets get only the portal the daemon is configured with, not targetcli's default 0.0.0.0:3260. */
  async disableDefaultPortal(): Promise<void> {
    await this.run(['set', 'global', 'auto_add_default_portal=false']);
  }

  async targets(): Promise<string[]> {
    return parseIscsiTargets(await this.run(['ls', '/iscsi', '1']));
  }

  async fileioBackstores(): Promise<Array<{ name: string; file: string }>> {
    return parseFileioBackstores(await this.run(['ls', '/backstores/fileio', '1']));
  }

  async createFileio(name: string, file: string): Promise<void> {
    await this.run(['/backstores/fileio', 'create', `name=${name}`, `file_or_dev=${file}`]);
  }

  async deleteFileio(name: string): Promise<void> {
    await this.run(['/backstores/fileio', 'delete', name]);
  }

  async createTarget(iqn: string): Promise<void> {
    await this.run(['/iscsi', 'create', iqn]);
  }

  async deleteTarget(iqn: string): Promise<void> {
    await this.run(['/iscsi', 'delete', iqn]);
  }

  async createLun(iqn: string, backstore: string): Promise<void> {
    await this.run([`/iscsi/${iqn}/tpg1/luns`, 'create', `/backstores/fileio/${backstore}`]);
  }

  async createPortal(iqn: string, address: string, port: number): Promise<void> {
    await this.run([`/iscsi/${iqn}/tpg1/portals`, 'create', address, String(port)]);
  }

  /**
   * Demo mode: any initiator may log in without an ACL (as tgt's `-I ALL`); a read-only volume
   * is write-protected for every initiator.
   */
  async openTpg(iqn: string, readonly: boolean): Promise<void> {
    await this.run([
      `/iscsi/${iqn}/tpg1`,
      'set',
      'attribute',
      'authentication=0',
      'generate_node_acls=1',
      'cache_dynamic_acls=1',
      `demo_mode_write_protect=${readonly ? 1 : 0}`,
    ]);
  }

  /** Writes the running configuration to /etc/target/saveconfig.json so it survives a reboot. */
  async saveconfig(): Promise<void> {
    await this.run(['saveconfig']);
  }
}
