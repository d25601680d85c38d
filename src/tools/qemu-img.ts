import type { CommandRunner } from './runner.js';

/** What `qemu-img info --output=json` says of an image, in the fields the daemon uses. */
export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFilename?: string;
  /** The backing file's format as the image records it; absent, qemu would probe the backing file for it. */
  backingFormat?: string;
  /** qcow2 external data file, which a foreign image must not have. */
  dataFile?: string;
  /** Number of extents (vmdk split images); more than one is refused for foreign images. */
  extents: number;
  /** The extents' file names as the image names them (a vmdk descriptor can point at any file). */
  extentFiles: string[];
  /** The image's data is encrypted (qcow2 `encrypt`): it cannot be read without its key. */
  encrypted?: boolean;
}

export type DiskFormat = 'raw' | 'qcow2';

interface InfoJson {
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  encrypted?: boolean;
  'format-specific'?: { data?: { 'data-file'?: string; extents?: { filename?: string }[]; encrypt?: object } };
}

/** Progress of `qemu-img convert -p`: lines like `    (12.34/100%)` separated by `\r`. */
export function parseProgress(chunk: string): number | null {
  const matches = [...chunk.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
  return matches.length ? Number(matches.at(-1)![1]) : null;
}

/** Thin typed wrappers around qemu-img; every call goes through the one runner. */
export class QemuImg {
  constructor(
    private readonly runner: CommandRunner,
    private readonly timeoutMs: number,
  ) {}

  /** Reads an image's header; `-U` so an image held by an export can still be read. */
  async info(file: string, format?: string): Promise<ImageInfo> {
    const args = ['info', '-U', '--output=json', ...(format ? ['-f', format] : []), file];
    const { stdout } = await this.runner.run('qemu-img', args, { timeoutMs: 60_000 });
    const json = JSON.parse(stdout) as InfoJson;
    const specific = json['format-specific']?.data;
    return {
      format: json.format,
      virtualSize: json['virtual-size'],
      actualSize: json['actual-size'] ?? 0,
      ...(json['backing-filename'] ? { backingFilename: json['backing-filename'] } : {}),
      ...(json['backing-filename-format'] ? { backingFormat: json['backing-filename-format'] } : {}),
      ...(specific?.['data-file'] ? { dataFile: specific['data-file'] } : {}),
      extents: specific?.extents?.length ?? 1,
      extentFiles: (specific?.extents ?? []).map((e) => e.filename ?? ''),
      ...(json.encrypted === true || specific?.encrypt ? { encrypted: true } : {}),
    };
  }

  async create(file: string, format: DiskFormat, sizeBytes: number): Promise<void> {
    await this.runner.run('qemu-img', ['create', '-q', '-f', format, file, String(sizeBytes)], { timeoutMs: this.timeoutMs });
  }

  /** Grows an image; shrinking is never asked of it (volumes only grow). */
  async resize(file: string, format: DiskFormat, sizeBytes: number): Promise<void> {
    await this.runner.run('qemu-img', ['resize', '-q', '-f', format, file, String(sizeBytes)], { timeoutMs: this.timeoutMs });
  }

  /** Copies `src` into a new image `dst` of `dstFormat`, reporting percent done. */
  async convert(
    src: string,
    srcFormat: string,
    dst: string,
    dstFormat: DiskFormat,
    opts: { onProgress?: (percent: number) => void; signal?: AbortSignal; existingTarget?: boolean } = {},
  ): Promise<void> {
    const onStdout = opts.onProgress
      ? (chunk: string) => {
          const percent = parseProgress(chunk);
          if (percent !== null) opts.onProgress!(percent);
        }
      : undefined;
    // `-n`: write into a target made beforehand (an RBD image, made with its exact size by rbd).
    await this.runner.run('qemu-img', ['convert', '-p', ...(opts.existingTarget ? ['-n'] : []), '-f', srcFormat, '-O', dstFormat, src, dst], {
      timeoutMs: this.timeoutMs,
      signal: opts.signal,
      onStdout,
    });
  }
}
