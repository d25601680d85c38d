import { NotSupportedError } from '../errors.js';
import type { CommandRunner } from './runner.js';

/*
 * What this file relies on, read in targetcli-fb, configshell-fb and rtslib-fb (open-iscsi on GitHub):
 * - targetcli-fb targetcli_shell.py main(): the arguments are joined with spaces and run as one shell
 *   line (`shell.run_cmdline(" ".join(sys.argv[1:]))`), starting at the root node; an error prints its
 *   message on stderr and exits 1. `auto_save_on_exit` only applies to the interactive shell: every
 *   change made this way is lost at reboot unless `saveconfig` runs.
 * - configshell-fb shell.py: the line grammar is `[PATH] COMMAND [PARAM]... [KEY=VALUE]...`, a value
 *   being a run of letters, digits and `_\+/.<>()~@:-%]` (newer versions also accept `"quoted"` values,
 *   older ones do not): a file name with a space or an `=` cannot be passed, whatever the quoting.
 * - configshell-fb node.py _render_tree(): `ls` prints one line per node, two columns of margin
 *   (`| ` or spaces) per level, `o- <name> <dots> [<summary>]`; dots pad to the console width (132 when
 *   stdout is not a terminal), so there may be none; colours only on a terminal (older versions always).
 */

/** A line of `targetcli ls`: its depth below the listed node (the node itself is 0), name and summary. */
export interface TreeNode {
  depth: number;
  name: string;
  summary: string;
}

const ANSI = /\x1b\[[0-9;]*m/g;

/**
 * Parses the tree `targetcli ls <path> <depth>` prints, `root` being the name of the listed node (its
 * line is left out when the `tree_show_root` preference is false; `tree_round_nodes=false` draws `+-`).
 */
export function parseTree(text: string, root: string): TreeNode[] {
  const nodes: TreeNode[] = [];
  let shift: number | null = null;
  for (const line of text.replace(ANSI, '').split('\n')) {
    const m = /^([ |]*)[o+]- (\S+)(?: \.*\s*\[(.*)\])?\s*$/.exec(line);
    if (!m) continue;
    const level = m[1].length / 2;
    shift ??= level === 0 && m[2] === root ? 0 : 1;
    nodes.push({ depth: level + shift, name: m[2], summary: m[3] ?? '' });
  }
  return nodes;
}

/** An iSCSI target and the fileio storage objects its LUNs use, tpg1's lowest LUN first. */
export interface IscsiTarget {
  iqn: string;
  backstores: string[];
}

/**
 * Parses `targetcli ls /iscsi 4`: targets (depth 1), their TPGs (2), each TPG's `acls`, `luns` and
 * `portals` (3) and the LUNs (4), whose summary starts with `<plugin>/<storage object>`
 * (ui_target.py UILUN.summary: `fileio/name (/file) (default_tg_pt_gp)`).
 */
export function parseIscsiTree(text: string): IscsiTarget[] {
  const out: Array<{ iqn: string; luns: Array<{ first: boolean; lun: number; name: string }> }> = [];
  let tpg = '';
  let group = '';
  for (const node of parseTree(text, 'iscsi')) {
    if (node.depth === 1) out.push({ iqn: node.name, luns: [] });
    else if (node.depth === 2) tpg = node.name;
    else if (node.depth === 3) group = node.name;
    else if (node.depth === 4 && out.length > 0 && group === 'luns') {
      const m = /^fileio\/(\S+)/.exec(node.summary);
      if (m) out.at(-1)!.luns.push({ first: tpg === 'tpg1', lun: Number(node.name.replace(/^lun/, '')), name: m[1] });
    }
  }
  return out.map(({ iqn, luns }) => ({
    iqn,
    backstores: luns.sort((a, b) => Number(b.first) - Number(a.first) || a.lun - b.lun).map((l) => l.name),
  }));
}

/** A fileio storage object: `o- <name> ... [<file> (<size>) write-back|write-thru activated|deactivated]` (ui_backstore.py). */
export interface FileioBackstore {
  name: string;
  file: string;
}

/** Parses `targetcli ls /backstores/fileio 1`. */
export function parseFileioBackstores(text: string): FileioBackstore[] {
  const out: FileioBackstore[] = [];
  for (const node of parseTree(text, 'fileio')) {
    if (node.depth !== 1) continue;
    const m = /^(\/.*) \([^()]*\) write-(?:back|thru) \S+$/.exec(node.summary);
    if (m) out.push({ name: node.name, file: m[1] });
  }
  return out;
}

/** What configshell-fb's grammar takes as one value, in every version (see above). */
const SAFE_VALUE = /^[A-Za-z0-9_+/.~@:%-]+$/;

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

  /**
   * Targets get only the portal the daemon is configured with. Without this, `/iscsi create` adds a
   * portal on every address, port 3260 (`[::0]`, `0.0.0.0` in older versions: ui_target.py
   * UIMultiTPGTarget.ui_command_create), and the configured portal on the same port then fails to
   * bind. A `global` preference is saved at once to ~/.targetcli/prefs.bin of the user running
   * targetcli (ui_node.py UINode.ui_setgroup_global), so it holds for the next invocations.
   */
  async disableDefaultPortal(): Promise<void> {
    await this.run(['set', 'global', 'auto_add_default_portal=false']);
  }

  async targets(): Promise<IscsiTarget[]> {
    return parseIscsiTree(await this.run(['ls', '/iscsi', '4']));
  }

  async fileioBackstores(): Promise<FileioBackstore[]> {
    return parseFileioBackstores(await this.run(['ls', '/backstores/fileio', '1']));
  }

  /**
   * A fileio storage object on an existing file: its size is the file's (`size` is only for a file to
   * create), write-back caching by default (the initiator is told the write cache is on and sends
   * SYNCHRONIZE CACHE, which LIO turns into an fsync, as tgt's rdwr store does). fileio has no
   * read-only option: a read-only export is write-protected in its TPG. targetcli refuses a second
   * storage object on a file that already backs one (ui_backstore.py UIFileIOBackstore.ui_command_create).
   */
  async createFileio(name: string, file: string): Promise<void> {
    if (!SAFE_VALUE.test(file) || !file.startsWith('/'))
      throw new NotSupportedError(`the LIO exporter cannot pass the file name ${JSON.stringify(file)} to targetcli (only letters, digits and _+/.~@:%- are safe)`);
    await this.run(['/backstores/fileio', 'create', `name=${name}`, `file_or_dev=${file}`]);
  }

  /** Deletes a storage object and every LUN that uses it (ui_backstore.py UIBackstore.ui_command_delete). */
  async deleteFileio(name: string): Promise<void> {
    await this.run(['/backstores/fileio', 'delete', name]);
  }

  /** Makes the target and its TPG 1, enabled, with authentication=0 (and no portal: see disableDefaultPortal). */
  async createTarget(iqn: string): Promise<void> {
    await this.run(['/iscsi', 'create', iqn]);
  }

  async deleteTarget(iqn: string): Promise<void> {
    await this.run(['/iscsi', 'delete', iqn]);
  }

  /** The first free LUN number: LUN 0 in a new TPG (ui_target.py UILUNs.ui_command_create). */
  async createLun(iqn: string, backstore: string): Promise<void> {
    await this.run([`/iscsi/${iqn}/tpg1/luns`, 'create', `/backstores/fileio/${backstore}`]);
  }

  /** An IPv6 address is given bare: targetcli brackets it (ui_target.py UIPortals._canonicalize_ip). */
  async createPortal(iqn: string, address: string, port: number): Promise<void> {
    await this.run([`/iscsi/${iqn}/tpg1/portals`, 'create', address, String(port)]);
  }

  /**
   * Demo mode: any initiator may log in without an ACL (as tgt's `-I ALL`); a read-only volume
   * is write-protected for every initiator. The kernel's default for demo_mode_write_protect is 1,
   * so a writable export sets 0.
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

  /** Writes the running configuration to /etc/target/saveconfig.json (no prompt; ui_root.py ui_command_saveconfig). */
  async saveconfig(): Promise<void> {
    await this.run(['saveconfig']);
  }
}
