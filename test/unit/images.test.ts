import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import { formValue } from '../../src/api/multipart.js';
import { isoInfoOf, isoResponse, type IsoRequest } from '../../src/images/iso.js';
import { streamToFile } from '../../src/images/transfer.js';
import { probeUntrusted } from '../../src/images/untrusted.js';
import type { ImageInfo, QemuImg } from '../../src/tools/qemu-img.js';

const fakeQemuImg = (info: Partial<ImageInfo>) =>
  ({ info: async () => ({ format: 'qcow2', virtualSize: 1, actualSize: 1, extents: 1, extentFiles: [], ...info }) }) as unknown as QemuImg;

describe('untrusted images', () => {
  const refusals: Array<[string, Partial<ImageInfo>, RegExp]> = [
    ['a backing file', { backingFilename: '/etc/shadow' }, /has a backing file/],
    ['an external data file', { dataFile: '/dev/sda' }, /external data file/],
    ['several extents', { format: 'vmdk', extents: 2, extentFiles: ['/x/a.vmdk', '/x/b.vmdk'] }, /several extents/],
    ['an extent in another file', { format: 'vmdk', extentFiles: ['/etc/passwd'] }, /another file/],
    ['a format not accepted', { format: 'dmg' }, /format dmg are not accepted/],
    ['encryption', { encrypted: true }, /^encrypted images are not accepted$/],
  ];
  for (const [what, info, message] of refusals)
    it(`refuses an image with ${what}`, async () => {
      const err = await probeUntrusted(fakeQemuImg(info), '/x/a.vmdk').then(() => null, (e: Error) => e);
      expect(err?.message).to.match(message);
    });

  it('accepts a self-contained image, a vmdk whose extent is itself included', async () => {
    expect((await probeUntrusted(fakeQemuImg({}), '/x/a.qcow2')).format).to.equal('qcow2');
    expect((await probeUntrusted(fakeQemuImg({ format: 'vmdk', extentFiles: ['a.vmdk'] }), '/x/a.vmdk')).format).to.equal('vmdk');
  });
});

describe('ISO volume descriptions (seed 002)', () => {
  const base = { creatorID: 'f'.repeat(32), name: 'n', private: false, clonable: true, alg: 'cp', bus: 'sata', shareable: false } as const;
  it('writes isoinfo.json with the seed tree names and answers with the request names, others null', () => {
    const tool: IsoRequest = { ...base, isotype: 'tool', os_family: 'windows', scope: 'drivers', version: '2021' };
    expect(isoInfoOf(tool)).to.deep.equal({ isotype: 'tool', os_family: 'windows', scope: 'drivers', version: '2021' });
    expect(isoResponse(tool, 'v')).to.include({ tool_scope: 'drivers', tool_version: '2021', os_flavour: null, os_version: null, vid: 'v' });
    const os: IsoRequest = { ...base, isotype: 'os_generic', os_family: 'linux', os_flavour: 'debian', os_version: '12.10' };
    expect(isoInfoOf(os)).to.deep.equal({ isotype: 'os_generic', os_family: 'linux', os_flavour: 'debian', os_version: '12.10' });
    expect(isoResponse(os, 'v')).to.include({ tool_scope: null, tool_version: null, os_flavour: 'debian', os_version: '12.10' });
  });
});

describe('form and query values (text) typed by the endpoint schema', () => {
  const cases: Array<[string, string, string, unknown]> = [
    ['iso-create', 'os_version', '12.10', '12.10'],
    ['iso-create', 'name', '2024', '2024'],
    ['iso-create', 'os_version', 'null', 'null'],
    ['create-upload', 'size', '20', 20],
    ['create-upload', 'private', 'true', true],
    ['create-upload', 'labels', '{"os":"none"}', { os: 'none' }],
    ['create-upload', 'format', '"raw"', 'raw'],
    ['create-upload', 'size', 'big', 'big'],
    ['create-upload', 'unknown', '15', 15],
    ['cloudinit-metadata', 'expectedFiles', '3', 3],
  ];
  for (const [schema, key, text, value] of cases)
    it(`${schema} ${key}=${text} → ${JSON.stringify(value)}`, () => expect(formValue(schema, key, text)).to.deep.equal(value));
});

describe('streamed transfers', () => {
  it("report their bytes at least every second, not only every 4 MB: a slow import's progressAt keeps moving", async function () {
    this.timeout(10_000);
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-transfer-'));
    try {
      // 64 kB a second: 4 MB would take over a minute, and the job looked stuck all along.
      const slow = Readable.from((async function* () {
        for (let i = 0; i < 4; i++) {
          yield Buffer.alloc(16 * 1024, 1);
          await new Promise((r) => setTimeout(r, 600));
        }
      })());
      const reported: number[] = [];
      const bytes = await streamToFile(slow, path.join(dir, 'image'), { onBytes: (done) => reported.push(done) });
      expect(bytes).to.equal(64 * 1024);
      expect(reported.filter((n) => n < bytes)).to.not.be.empty;
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
