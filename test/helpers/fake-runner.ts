import { existsSync } from 'node:fs';
import { ToolError } from '../../src/errors.js';
import type { CommandRunner, RunOptions, RunResult, ToolName } from '../../src/tools/runner.js';

/** One command a fake runner was told about, and what the tool answers to it. */
export interface Recorded {
  cmd: string;
  stdout?: string;
  /** The tool fails with this exit code and stderr line. */
  fail?: { exitCode: number; stderr: string };
}

const line = (tool: string, args: readonly string[]) => [tool, ...args].join(' ');

/**
 * A runner that answers a recorded sequence of commands, in order, and fails the test on any
 * command it was not told about (or told about later). `calls` keeps what was run.
 */
export class RecordedRunner implements CommandRunner {
  readonly calls: string[] = [];
  private next = 0;

  constructor(private readonly script: Recorded[]) {}

  which(tool: ToolName): string | null {
    return `/usr/bin/${tool}`;
  }

  async run(tool: ToolName, args: readonly string[], _opts: RunOptions): Promise<RunResult> {
    const cmd = line(tool, args);
    this.calls.push(cmd);
    const expected = this.script[this.next];
    if (!expected || expected.cmd !== cmd)
      throw new Error(`the fake runner was not told about: ${cmd} (expected: ${expected?.cmd ?? 'nothing more'})`);
    this.next += 1;
    if (expected.fail) throw new ToolError(`${tool} failed`, expected.fail.stderr, expected.fail.exitCode);
    return { stdout: expected.stdout ?? '', stderr: '', exitCode: 0 };
  }

  /** True when every recorded command was run. */
  get done(): boolean {
    return this.next === this.script.length;
  }
}

/** A node of a targetcli tree: name, summary, children. */
export interface Tree {
  name: string;
  summary: string;
  children?: Tree[];
}

/**
 * A tree as configshell-fb's _render_tree() prints it when stdout is not a terminal: width 132, no
 * colours, two columns of margin per level (`| ` while the parent has later children), dots up to the
 * width (none when the line is too long), children sorted by name with trailing numbers as numbers.
 */
export function renderTree(root: Tree, depth: number): string {
  const lines: string[] = [];
  const key = (name: string): [string, number] => {
    const m = /(.*?)(\d+)$/.exec(name);
    return m ? [m[1], Number(m[2])] : [name, 0];
  };
  const walk = (node: Tree, margin: boolean[], left: number) => {
    const prefix = margin.slice(0, -1).map((pipe) => (pipe ? '| ' : '  ')).join('') + 'o- ';
    const pad = '.'.repeat(Math.max(0, 132 - 1 - (node.summary.length + 3) - prefix.length - node.name.length));
    lines.push(`${prefix}${node.name} ${pad} [${node.summary}]`);
    if (left === 0) return;
    const children = [...(node.children ?? [])].sort((a, b) => {
      const [ka, na] = key(a.name);
      const [kb, nb] = key(b.name);
      return ka < kb ? -1 : ka > kb ? 1 : na - nb;
    });
    children.forEach((child, i) => walk(child, [...margin, i < children.length - 1], left - 1));
  };
  walk(root, [false], depth);
  return lines.join('\n') + '\n';
}

/** A target as `targetcli ls /iscsi 4` shows it. */
export interface LsTarget {
  iqn: string;
  /** The fileio storage object of its LUN 0, if it has one. */
  backstore?: string;
  file?: string;
  portal?: string;
}

/** `targetcli ls /iscsi 4` as targetcli-fb prints it (ui_target.py summaries). */
export function lsIscsi(targets: LsTarget[]): string {
  const tree: Tree = {
    name: 'iscsi',
    summary: `Targets: ${targets.length}`,
    children: targets.map((t) => ({
      name: t.iqn,
      summary: 'TPGs: 1',
      children: [
        {
          name: 'tpg1',
          summary: 'gen-acls, no-auth',
          children: [
            { name: 'acls', summary: 'ACLs: 0' },
            {
              name: 'luns',
              summary: `LUNs: ${t.backstore ? 1 : 0}`,
              children: t.backstore ? [{ name: 'lun0', summary: `fileio/${t.backstore} (${t.file ?? '/x'}) (default_tg_pt_gp)` }] : [],
            },
            { name: 'portals', summary: `Portals: ${t.portal ? 1 : 0}`, children: t.portal ? [{ name: t.portal, summary: 'OK' }] : [] },
          ],
        },
      ],
    })),
  };
  return renderTree(tree, 4);
}

/** `targetcli ls /backstores/fileio 1` as targetcli-fb prints it (ui_backstore.py UIFileioStorageObject.summary). */
export function lsFileio(stores: Array<{ name: string; file: string; used?: boolean }>): string {
  return renderTree(
    {
      name: 'fileio',
      summary: `Storage Objects: ${stores.length}`,
      children: stores.map((s) => ({ name: s.name, summary: `${s.file} (1.0MiB) write-back ${s.used === false ? 'deactivated' : 'activated'}` })),
    },
    1,
  );
}

/**
 * A stand-in for targetcli with state, for the exporter contract suite: it accepts exactly the
 * command forms the LIO backend uses (anything else fails the test), keeps targets and backstores,
 * and prints `ls` the way targetcli-fb does. What it refuses or does besides is what targetcli-fb's
 * sources do (ui_backstore.py, ui_target.py): a second storage object on a file is refused, and
 * deleting a storage object deletes the LUNs that use it. `saves` counts saveconfig calls.
 */
export class FakeTargetcli implements CommandRunner {
  readonly calls: string[] = [];
  readonly targets = new Map<string, { lun?: string; portal?: string; writeProtect?: boolean }>();
  readonly backstores = new Map<string, string>();
  saves = 0;
  /** targetcli's global auto_add_default_portal preference (true until set). */
  defaultPortal = true;
  /** Changes since the last saveconfig (the contract: none are left unsaved). */
  unsaved = 0;

  which(tool: ToolName): string | null {
    return `/usr/bin/${tool}`;
  }

  async run(tool: ToolName, args: readonly string[], _opts: RunOptions): Promise<RunResult> {
    const cmd = line(tool, args);
    this.calls.push(cmd);
    const out = (stdout = '') => ({ stdout, stderr: '', exitCode: 0 });
    const refuse = (why: string) => {
      throw new ToolError('targetcli failed', why, 1);
    };
    if (tool !== 'targetcli') throw new Error(`the fake targetcli was not told about: ${cmd}`);
    const [p, verb, ...rest] = args;
    if (cmd === 'targetcli set global auto_add_default_portal=false') {
      this.defaultPortal = false;
      return out("Parameter auto_add_default_portal is now 'false'.");
    }
    if (cmd === 'targetcli saveconfig') {
      this.saves += 1;
      this.unsaved = 0;
      return out('Configuration saved to /etc/target/saveconfig.json');
    }
    if (cmd === 'targetcli ls /iscsi 4')
      return out(lsIscsi([...this.targets].map(([iqn, t]) => ({ iqn, backstore: t.lun, file: t.lun && this.backstores.get(t.lun), portal: t.portal }))));
    if (cmd === 'targetcli ls /backstores/fileio 1')
      return out(lsFileio([...this.backstores].map(([name, file]) => ({ name, file, used: [...this.targets.values()].some((t) => t.lun === name) }))));
    this.unsaved += 1;
    let m: RegExpExecArray | null;
    if (p === '/backstores/fileio' && verb === 'create' && (m = /^name=(\S+) file_or_dev=(\/\S+)$/.exec(rest.join(' ')))) {
      if (this.backstores.has(m[1])) refuse(`Storage object fileio/${m[1]} exists`);
      const holder = [...this.backstores].find(([, file]) => file === m![2]);
      if (holder) refuse(`storage object for ${m[2]} already exists: ${holder[0]}`);
      if (!existsSync(m[2])) refuse('Attempting to create file for new fileio backstore, need a size');
      this.backstores.set(m[1], m[2]);
      return out(`Created fileio ${m[1]}.`);
    }
    if (p === '/backstores/fileio' && verb === 'delete' && rest.length === 1) {
      if (!this.backstores.delete(rest[0])) refuse(`No storage object named ${rest[0]}.`);
      for (const t of this.targets.values()) if (t.lun === rest[0]) delete t.lun;
      return out(`Deleted storage object ${rest[0]}.`);
    }
    if (p === '/iscsi' && verb === 'create' && rest.length === 1) {
      if (this.targets.has(rest[0])) refuse(`This Target already exists in configFS`);
      // ui_target.py: the TPG is made with a portal on every address when the preference is on.
      this.targets.set(rest[0], this.defaultPortal ? { portal: '[::0]:3260' } : {});
      return out(`Created target ${rest[0]}.\nCreated TPG 1.`);
    }
    if (p === '/iscsi' && verb === 'delete' && rest.length === 1) {
      if (!this.targets.delete(rest[0])) refuse(`No such Target in configfs: ${rest[0]}`);
      return out(`Deleted Target ${rest[0]}.`);
    }
    if ((m = /^\/iscsi\/(\S+)\/tpg1\/luns$/.exec(p)) && verb === 'create' && rest.length === 1 && rest[0].startsWith('/backstores/fileio/')) {
      const target = this.targets.get(m[1]) ?? refuse('No such path');
      const store = rest[0].slice('/backstores/fileio/'.length);
      if (!this.backstores.has(store)) refuse(`No such path ${rest[0]}`);
      if (target.lun) refuse(`lun for storage object fileio/${target.lun} already exists`);
      target.lun = store;
      return out('Created LUN 0.');
    }
    if ((m = /^\/iscsi\/(\S+)\/tpg1\/portals$/.exec(p)) && verb === 'create' && rest.length === 2 && /^\d+$/.test(rest[1])) {
      const target = this.targets.get(m[1]) ?? refuse('No such path');
      // The kernel cannot bind an address on a port a portal on every address already listens on.
      if (target.portal?.endsWith(`:${rest[1]}`)) refuse('Could not create NetworkPortal in configFS');
      target.portal = `${rest[0]}:${rest[1]}`;
      return out(`Created network portal ${rest[0]}:${rest[1]}.`);
    }
    if (
      (m = /^\/iscsi\/(\S+)\/tpg1$/.exec(p)) &&
      verb === 'set' &&
      (rest.join(' ') === 'attribute authentication=0 generate_node_acls=1 cache_dynamic_acls=1 demo_mode_write_protect=0' ||
        rest.join(' ') === 'attribute authentication=0 generate_node_acls=1 cache_dynamic_acls=1 demo_mode_write_protect=1')
    ) {
      const target = this.targets.get(m[1]) ?? refuse('No such path');
      target.writeProtect = rest.at(-1)!.endsWith('=1');
      return out('Parameter demo_mode_write_protect is now set.');
    }
    throw new Error(`the fake targetcli was not told about: ${cmd}`);
  }
}
