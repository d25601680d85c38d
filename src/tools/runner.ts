import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { NotSupportedError, ToolError } from '../errors.js';

/** Every external program the daemon may run; nothing else is ever executed. */
export const TOOL_NAMES = [
  'qemu-img',
  'qemu-io',
  'cloud-localds',
  'xorriso',
  'tgtadm',
  'tgtd',
  'targetcli',
  'rsync',
  'rclone',
  'rbd',
  'cp',
  'mkfs.ext4',
] as const;
export type ToolName = (typeof TOOL_NAMES)[number];

export interface RunOptions {
  /** Milliseconds before the tool is killed; every call has one. */
  timeoutMs: number;
  /** Cancels the call (the tool is killed) when aborted. */
  signal?: AbortSignal;
  /** Receives stdout as it arrives (progress lines). */
  onStdout?: (chunk: string) => void;
  /** Exit codes that are not failures (qemu-img check answers 2 and 3 for findings). */
  okExitCodes?: number[];
  /**
   * Receives stdout's bytes as they come, instead of the result's `stdout` (a tool's binary output
   * streamed to a client). It is not ended: the caller ends it once the tool succeeded.
   */
  stdoutTo?: NodeJS.WritableStream;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** The narrow interface the wrappers use, so tests of LIO can pass a recording fake. */
export interface CommandRunner {
  run(tool: ToolName, args: readonly string[], opts: RunOptions): Promise<RunResult>;
  /** Absolute path of a tool, or null when it is not installed. */
  which(tool: ToolName): string | null;
}

function findInPath(name: string, searchPath: string): string | null {
  for (const dir of searchPath.split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return null;
}

/**
 * The last non-empty lines of a tool's stderr (at most `count`): what it says went wrong, for the errors' classifiers
 * and the log. More than one: a tool's own verdict and its library's log lines come from different threads, in either
 * order (`rbd snap rm` of a protected snapshot ends with rbd's sentence or with librbd's), or a warning comes last.
 */
export function lastLines(text: string, count = 5): string {
  return text
    .split(/[\r\n]+/)
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(-count)
    .join('\n');
}

/** execa is loaded on the first tool run: importing it costs ~70 ms of CPU before the daemon can answer. */
let loadExeca: Promise<typeof import('execa')> | null = null;

/**
 * Runs tools with execa: argument arrays only (never a shell), absolute binaries resolved once from
 * PATH (sbin included), a mandatory timeout, cancellation, and a ToolError carrying stderr for the log.
 */
export class ExecaRunner implements CommandRunner {
  private readonly paths = new Map<ToolName, string | null>();
  /**
   * util-linux's setpriv, which starts each tool with PR_SET_PDEATHSIG: the kernel kills the tool when
   * the daemon dies. A tool outlives a daemon killed with SIGKILL otherwise, and an orphaned copy kept
   * writing into (and making again) a volume directory the restarted daemon had just recovered. systemd
   * kills the unit's processes in production; this covers every other way the daemon is run.
   */
  private readonly setpriv: string | null;

  constructor(private readonly searchPath = `${process.env.PATH ?? ''}:/usr/sbin:/sbin:/usr/local/sbin`) {
    this.setpriv = findInPath('setpriv', searchPath);
  }

  which(tool: ToolName): string | null {
    if (!this.paths.has(tool)) this.paths.set(tool, findInPath(tool, this.searchPath));
    return this.paths.get(tool)!;
  }

  async run(tool: ToolName, args: readonly string[], opts: RunOptions): Promise<RunResult> {
    const binary = this.which(tool);
    if (!binary) throw new NotSupportedError(`${tool} is not installed on this storage host`);
    const { execa } = await (loadExeca ??= import('execa'));
    const [file, argv] = this.setpriv ? [this.setpriv, ['--pdeathsig', 'KILL', '--', binary, ...args]] : [binary, args];
    const child = execa(file, argv, {
      timeout: opts.timeoutMs,
      cancelSignal: opts.signal,
      reject: false,
      stdin: 'ignore',
      encoding: 'utf8',
      // Streamed stdout is binary: it goes to its destination as Buffers and is not kept.
      ...(opts.stdoutTo ? { encoding: 'buffer' as const, buffer: { stdout: false } } : {}),
      env: { LC_ALL: 'C' },
    });
    if (opts.stdoutTo) {
      child.stdout?.pipe(opts.stdoutTo, { end: false });
      // A destination closed before the tool ends (a client gone) would leave it blocked on a full pipe.
      opts.stdoutTo.once('close', () => child.kill());
    }
    if (opts.onStdout) child.stdout?.on('data', (chunk: Buffer | string) => opts.onStdout!(chunk.toString()));
    const result = await child;
    const text = (out: unknown) => (out instanceof Uint8Array ? Buffer.from(out).toString('utf8') : String(out ?? ''));
    const stderr = text(result.stderr);
    const exitCode = result.exitCode ?? -1;
    if (result.isCanceled) throw Object.assign(new ToolError(`${tool} was cancelled`, stderr, exitCode), { cancelled: true });
    if (result.timedOut) throw new ToolError(`${tool} did not finish within ${opts.timeoutMs} ms`, stderr, exitCode);
    if (exitCode !== 0 && !(opts.okExitCodes ?? []).includes(exitCode)) {
      const why = lastLines(stderr) || result.shortMessage;
      throw new ToolError(`${tool} failed`, `${args.join(' ')}: ${why}`, exitCode);
    }
    return { stdout: text(result.stdout), stderr, exitCode };
  }
}
