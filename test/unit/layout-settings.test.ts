import { expect } from 'chai';
import { gbToBytes, isInside, isTempName, lockMarkerName, parseLockMarker, tempNameFor, uidOfBinEntry, uidOfDirName, volumeDirName } from '../../src/store/layout.js';
import { parseSettings, parseSizeSpec } from '../../src/store/settings.js';
import { formatTimestamp } from '../../src/volumes/describe.js';
import { parseProgress } from '../../src/tools/qemu-img.js';

describe('on-disk names and sizes', () => {
  const uid = '155a8574f06542f1ac2fbe8790b35160';

  it('names volume directories vid.<uid>.elimg and reads them back', () => {
    expect(volumeDirName(uid)).to.equal(`vid.${uid}.elimg`);
    expect(uidOfDirName(`vid.${uid}.elimg`)).to.equal(uid);
    for (const bad of [`vol.${uid}.elimg`, `vid.${uid.toUpperCase()}.elimg`, `vid.${uid}`, 'vid.../.elimg', `vid.${uid}.elimg.x`])
      expect(uidOfDirName(bad), bad).to.equal(null);
    expect(() => volumeDirName('../etc')).to.throw();
  });

  it('finds the volume of a bin entry (a directory moved there by destroy or recovery), not of a file moved there', () => {
    expect(uidOfBinEntry(`vid.${uid}.elimg.${'0'.repeat(32)}`)).to.equal(uid);
    for (const bad of [`vid.${uid}.elimg`, `vid.${uid}.elimg.data.img.${'0'.repeat(32)}`, `vid.${uid}.elimg.x`])
      expect(uidOfBinEntry(bad), bad).to.equal(null);
  });

  it('round-trips lock markers elemento.<purpose>.<operation_uid>.ignore', () => {
    const name = lockMarkerName('convert', uid);
    expect(name).to.equal(`elemento.convert.${uid}.ignore`);
    expect(parseLockMarker(name)).to.deep.equal({ purpose: 'convert', operationUid: uid });
    expect(parseLockMarker('elemento.3.expected')).to.equal(null);
  });

  it('recognises its temp names and nothing else', () => {
    expect(isTempName(tempNameFor('/x/meta.json'))).to.equal(true);
    expect(isTempName(tempNameFor('/x/data.qcow2'))).to.equal(true);
    for (const name of ['meta.json', 'data.img', 'settings.json', 'user-data']) expect(isTempName(name), name).to.equal(false);
  });

  it('keeps paths inside their parent', () => {
    expect(isInside('/mnt', '/mnt/a/b')).to.equal(true);
    expect(isInside('/mnt', '/mnt/../etc')).to.equal(false);
    expect(isInside('/mnt', '/mntx')).to.equal(false);
  });

  const sizes: Array<[number, number]> = [
    [1, 1_000_000_000],
    [4, 4_000_000_000],
    [0.5, 500_000_256],
    [0.0000001, 512],
    [2.5e-7, 512],
    [1.0000000003, 1_000_000_512],
  ];
  for (const [gb, bytes] of sizes)
    it(`${gb} GB is ${bytes} bytes (decimal, rounded up to 512)`, () => expect(gbToBytes(gb)).to.equal(bytes));

  it('keeps a decimal size that is already a whole number of sectors (0.536, 1.072, 4.272 GB: no extra 512 bytes)', () => {
    expect(gbToBytes(0.536)).to.equal(536_000_000);
    for (let mb = 1; mb < 100_000; mb++) {
      const exact = mb * 1_000_000;
      expect(gbToBytes(mb / 1000), `${mb / 1000} GB`).to.equal(Math.ceil(exact / 512) * 512);
    }
  });
});

describe('settings.json', () => {
  it('parses the seed example', () => {
    expect(parseSettings('{"max-volumes": 6, "max-volume-size": "50G", "max-total-size": "200G", "file-system": "default"}')).to.deep.equal({
      maxVolumes: 6,
      maxVolumeSize: 50e9,
      maxTotalSize: 200e9,
      fileSystem: 'default',
    });
  });

  it('takes the older max-size as the total, in GB', () => {
    expect(parseSettings('{"max-size": 100}')).to.deep.equal({ maxTotalSize: 100e9, fileSystem: 'default' });
  });

  const specs: Array<[number | string, number]> = [
    ['50G', 50e9],
    ['2T', 2e12],
    ['500M', 500e6],
    ['1.5TB', 1.5e12],
    [10, 10e9],
    ['10', 10e9],
    ['0.57G', 570e6],
    [0.57, 570e6],
  ];
  for (const [spec, bytes] of specs) it(`reads ${JSON.stringify(spec)} as ${bytes} bytes`, () => expect(parseSizeSpec(spec)).to.equal(bytes));

  const invalid: Array<[string, RegExp]> = [
    ['{', /not valid JSON/],
    ['{"max-volumes": "six"}', /max-volumes/],
    ['{"max-volume-size": "lots"}', /max-volume-size/],
    ['{"file-system": "zfs"}', /file-system/],
    ['[]', /invalid/],
  ];
  for (const [text, reason] of invalid) it(`refuses ${text} with a reason`, () => expect(() => parseSettings(text)).to.throw(reason));

  it('refuses an unknown key (a misspelt limit would leave the root unlimited), naming the keys', () => {
    expect(() => parseSettings('{"max_volumes": 2}')).to.throw(
      "settings.json is invalid: 'max_volumes' is not a key of settings.json (its keys: max-volumes, max-volume-size, max-total-size, max-size, file-system)",
    );
  });

  it('says which size forms are accepted when a size is not one of them', () => {
    const forms = 'a number of GB or a string such as "50G", "2T" or "500M" (decimal units K, M, G, T, P, an optional B)';
    expect(() => parseSettings('{"max-volume-size": "50Gi"}')).to.throw(`settings.json is invalid: 'max-volume-size' must be ${forms}, not "50Gi"`);
    expect(() => parseSettings('{"max-total-size": -1}')).to.throw(`settings.json is invalid: 'max-total-size' must be ${forms}, not -1`);
  });
});

describe('formats of the seed', () => {
  it('writes lastUpdated as "YYYY-MM-DD HH:MM:SS.ffff" (UTC)', () => {
    expect(formatTimestamp(Date.UTC(2025, 1, 5, 23, 34, 7, 185))).to.equal('2025-02-05 23:34:07.1850');
  });

  it('reads qemu-img convert -p progress', () => {
    expect(parseProgress('    (0.00/100%)\r    (12.34/100%)\r')).to.equal(12.34);
    expect(parseProgress('nothing')).to.equal(null);
    expect(parseProgress('    (100.00/100%)\r')).to.equal(100);
  });
});
