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

const dots = (text: string, width: number) => `${text} ${'.'.repeat(Math.max(3, width - text.length))} `;

/** `targetcli ls /iscsi 1` as targetcli-fb prints it. */
export function lsIscsi(iqns: string[]): string {
  return [`${dots('o- iscsi', 100)}[Targets: ${iqns.length}]`, ...iqns.map((iqn) => `  ${dots(`o- ${iqn}`, 98)}[TPGs: 1]`)].join('\n') + '\n';
}

/** `targetcli ls /backstores/fileio 1` as targetcli-fb prints it. */
export function lsFileio(stores: Array<{ name: string; file: string; used?: boolean }>): string {
  return (
    [
      `${dots('o- fileio', 100)}[Storage Objects: ${stores.length}]`,
      ...stores.map((s) => `  ${dots(`o- ${s.name}`, 60)}[${s.file} (9.5MiB) write-back ${s.used === false ? 'deactivated' : 'activated'}]`),
    ].join('\n') + '\n'
  );
}

/**
 * A stand-in for targetcli with state, for the exporter contract suite: it accepts exactly the
 * command forms the LIO backend uses (anything else fails the test), keeps targets and backstores,
 * and prints `ls` the way targetcli-fb does. `saves` counts saveconfig calls.
 */
export class FakeTargetcli implements CommandRunner {
  readonly calls: string[] = [];
  readonly targets = new Map<string, { lun?: string; portal?: string; writeProtect?: boolean }>();
  readonly backstores = new Map<string, string>();
  saves = 0;
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
    if (cmd === 'targetcli set global auto_add_default_portal=false') return out('Parameter auto_add_default_portal is now \'false\'.');
    if (cmd === 'targetcli saveconfig') {
      this.saves += 1;
      this.unsaved = 0;
      return out('Configuration saved to /etc/target/saveconfig.json');
    }
    if (cmd === 'targetcli ls /iscsi 1') return out(lsIscsi([...this.targets.keys()]));
    if (cmd === 'targetcli ls /backstores/fileio 1')
      return out(lsFileio([...this.backstores].map(([name, file]) => ({ name, file, used: [...this.targets.values()].some((t) => t.lun === name) }))));
    this.unsaved += 1;
    let m: RegExpExecArray | null;
    if (p === '/backstores/fileio' && verb === 'create' && (m = /^name=(\S+) file_or_dev=(\/\S+)$/.exec(rest.join(' ')))) {
      if (this.backstores.has(m[1])) refuse(`Storage object fileio/${m[1]} exists`);
      if (!existsSync(m[2])) refuse('Attempting to create file for new fileio backstore, need a size');
      this.backstores.set(m[1], m[2]);
      return out(`Created fileio ${m[1]}.`);
    }
    if (p === '/backstores/fileio' && verb === 'delete' && rest.length === 1) {
      if (!this.backstores.delete(rest[0])) refuse(`No storage object named ${rest[0]}.`);
      return out(`Deleted storage object ${rest[0]}.`);
    }
    if (p === '/iscsi' && verb === 'create' && rest.length === 1) {
      if (this.targets.has(rest[0])) refuse(`This Target already exists in configFS`);
      this.targets.set(rest[0], {});
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
      target.lun = store;
      return out('Created LUN 0.');
    }
    if ((m = /^\/iscsi\/(\S+)\/tpg1\/portals$/.exec(p)) && verb === 'create' && rest.length === 2 && /^\d+$/.test(rest[1])) {
      const target = this.targets.get(m[1]) ?? refuse('No such path');
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
