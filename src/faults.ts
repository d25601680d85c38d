/**
 * Fault injection for the crash tests (docs/RELIABILITY.md). `ELEMENTO_FAULTS` names the points at
 * which the process kills itself with SIGKILL, as a power cut or an OOM kill would, comma-separated
 * (`convert.after-rename,atomic.after-temp-write`). Unset in production: every `faultPoint` call is
 * then one comparison with null. Read once at start, so a running daemon cannot be armed remotely.
 */
const ARMED: ReadonlySet<string> | null = parseFaults(process.env.ELEMENTO_FAULTS);

function parseFaults(value: string | undefined): ReadonlySet<string> | null {
  const names = (value ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  return names.length ? new Set(names) : null;
}

/** Dies here, at once and without cleaning up, when the tests armed this point. */
export function faultPoint(name: string): void {
  if (ARMED === null || !ARMED.has(name)) return;
  process.stderr.write(`elemento-storage: fault point ${name} reached: killing the process\n`);
  process.kill(process.pid, 'SIGKILL');
}

/** The fault points armed (ELEMENTO_FAULTS), for the start's log: none in production. */
export function armedFaults(): string[] {
  return [...(ARMED ?? [])];
}
