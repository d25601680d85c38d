import { execa } from 'execa';

/** qemu-img info of a file, as JSON (the real tool, as an operator would run it). */
export async function imageInfo(file: string): Promise<{ format: string; 'virtual-size': number; 'backing-filename'?: string }> {
  return JSON.parse((await execa('qemu-img', ['info', '-U', '--output=json', file])).stdout);
}

/** Writes a byte pattern with qemu-io. */
export async function writePattern(file: string, format: string, pattern: number, offset: number, length: number): Promise<void> {
  const { stdout } = await execa('qemu-io', ['-f', format, '-c', `write -P ${pattern} ${offset} ${length}`, file]);
  if (!/wrote \d+\/\d+ bytes/.test(stdout)) throw new Error(`qemu-io write failed: ${stdout}`);
}

/** True when the range holds the pattern (qemu-io verifies it). */
export async function hasPattern(file: string, format: string, pattern: number, offset: number, length: number): Promise<boolean> {
  const { stdout, stderr } = await execa('qemu-io', ['-f', format, '-c', `read -P ${pattern} ${offset} ${length}`, file], { reject: false });
  return /read \d+\/\d+ bytes/.test(stdout) && !/Pattern verification failed/.test(stdout + stderr);
}
