import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Exporter } from '../../src/exporters/base.js';
import { iqnFor } from '../../src/exporters/iqn.js';
import { LioExporter } from '../../src/exporters/lio.js';
import { TgtExporter } from '../../src/exporters/tgt.js';
import { createLogger } from '../../src/log.js';
import { ExecaRunner } from '../../src/tools/runner.js';
import { Targetcli } from '../../src/tools/targetcli.js';
import { parseTgtTargets, Tgtadm } from '../../src/tools/tgtadm.js';
import { FakeTargetcli } from '../helpers/fake-runner.js';
import { missingIscsiTool, startTgtd, type TestTgtd } from '../helpers/tgt.js';
import { OTHER, OWNER, skipBecause } from '../helpers/tree.js';

const log = createLogger({ level: 'silent', format: 'json' });

/** A backend under test, with what the contract needs to look at behind its interface. */
interface Backend {
  exporter: Exporter;
  /** Whether the backend serves the target's LUN read-only. */
  isReadonly(iqn: string): Promise<boolean>;
  /** Changes not yet saved to disk (0 for a backend that does not save). */
  unsaved(): number;
  cleanup(): Promise<void>;
}

interface BackendFactory {
  name: string;
  /** Why it cannot run here, or null. */
  missing(): string | null;
  setup(): Promise<void>;
  make(): Promise<Backend>;
  teardown(): Promise<void>;
}

let tgtd: TestTgtd | undefined;
const tgt: BackendFactory = {
  name: 'tgt (real tgtd)',
  missing: missingIscsiTool,
  setup: async () => {
    tgtd = await startTgtd();
  },
  make: async () => {
    const tgtadm = new Tgtadm(new ExecaRunner(), tgtd!.controlPort);
    return {
      exporter: new TgtExporter(tgtadm, { manage: false, portal: tgtd!.portal, controlPort: tgtd!.controlPort }, log),
      isReadonly: async (iqn) => parseTgtTargets(await tgtd!.tgtadm(['--op', 'show', '--mode', 'target'])).find((t) => t.iqn === iqn)!.luns[0].readonly,
      unsaved: () => 0,
      cleanup: () => tgtd!.removeTargets(),
    };
  },
  teardown: async () => tgtd?.stop(),
};

const lio: BackendFactory = {
  name: 'LIO (targetcli, fake runner)',
  missing: () => null,
  setup: async () => undefined,
  make: async () => {
    const fake = new FakeTargetcli();
    return {
      exporter: new LioExporter(new Targetcli(fake), '127.0.0.1:3260', log),
      isReadonly: async (iqn) => fake.targets.get(iqn)!.writeProtect === true,
      unsaved: () => fake.unsaved,
      cleanup: async () => undefined,
    };
  },
  teardown: async () => undefined,
};

/** The one contract every exporter backend meets. */
for (const factory of [tgt, lio])
  describe(`exporter contract: ${factory.name}`, function () {
    let b: Backend;
    let dir: string;
    const vids = ['1'.repeat(32), '2'.repeat(32), '3'.repeat(32), '4'.repeat(32), '5'.repeat(32)];
    const spec = (i: number, readonly = false) => ({ iqn: iqnFor(OWNER, vids[i]), file: path.join(dir, `data${i}.img`), readonly });

    before(async function () {
      const missing = factory.missing();
      if (missing) skipBecause(this, missing);
      await factory.setup();
    });
    after(async () => factory.teardown());
    beforeEach(async () => {
      dir = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-exporter-'));
      for (let i = 0; i < vids.length; i++) await fs.writeFile(path.join(dir, `data${i}.img`), Buffer.alloc(1024 * 1024));
      b = await factory.make();
      await b.exporter.start();
    });
    afterEach(async () => {
      await b.cleanup();
      await fs.rm(dir, { recursive: true, force: true });
    });

    it('declares its capabilities as data', () => {
      expect(b.exporter.capabilities).to.have.all.keys('readonlyLuns', 'managedDaemon', 'savesConfig', 'rbdLuns');
      expect(Object.isFrozen(b.exporter.capabilities)).to.equal(true);
    });

    it('creates a target whose LUN is the file, and lists it back', async () => {
      await b.exporter.ensure(spec(0));
      expect(await b.exporter.list()).to.deep.equal([{ iqn: spec(0).iqn, file: spec(0).file }]);
      expect(await b.isReadonly(spec(0).iqn)).to.equal(false);
      expect(b.unsaved()).to.equal(0);
    });

    it('ensure is idempotent and remove of an unknown target is not an error', async () => {
      await b.exporter.ensure(spec(0));
      await b.exporter.ensure(spec(0));
      expect((await b.exporter.list()).map((t) => t.iqn)).to.deep.equal([spec(0).iqn]);
      await b.exporter.remove(iqnFor(OTHER, vids[0]));
      await b.exporter.remove(spec(0).iqn);
      await b.exporter.remove(spec(0).iqn);
      expect(await b.exporter.list()).to.deep.equal([]);
      expect(b.unsaved()).to.equal(0);
    });

    it('serves a read-only spec read-only', async () => {
      await b.exporter.ensure(spec(1, true));
      expect(await b.isReadonly(spec(1).iqn)).to.equal(true);
    });

    it('exports one file to two targets (a shareable volume), each with its own write protection; removing one keeps the other', async () => {
      const first = spec(0);
      const second = { ...spec(0), iqn: iqnFor(OTHER, vids[0]), readonly: true };
      await b.exporter.ensure(first);
      await b.exporter.ensure(second);
      const byIqn = (x: { iqn: string }, y: { iqn: string }) => (x.iqn < y.iqn ? -1 : 1);
      expect((await b.exporter.list()).sort(byIqn)).to.deep.equal([first, second].map(({ iqn, file }) => ({ iqn, file })).sort(byIqn));
      expect(await b.isReadonly(first.iqn)).to.equal(false);
      expect(await b.isReadonly(second.iqn)).to.equal(true);
      await b.exporter.remove(first.iqn);
      expect(await b.exporter.list()).to.deep.equal([{ iqn: second.iqn, file: second.file }]);
      await b.exporter.remove(second.iqn);
      expect(await b.exporter.list()).to.deep.equal([]);
      expect(b.unsaved()).to.equal(0);
    });

    it('keeps concurrent calls apart (one at a time): every target made, none twice', async () => {
      await Promise.all(vids.map((_, i) => b.exporter.ensure(spec(i))));
      const listed = await b.exporter.list();
      expect(listed.map((t) => t.iqn).sort()).to.deep.equal(vids.map((_, i) => spec(i).iqn).sort());
      await Promise.all([b.exporter.remove(spec(1).iqn), b.exporter.remove(spec(3).iqn), b.exporter.ensure(spec(0))]);
      expect((await b.exporter.list()).map((t) => t.iqn).sort()).to.deep.equal([0, 2, 4].map((i) => spec(i).iqn).sort());
      expect(b.unsaved()).to.equal(0);
    });

    it('leaves nothing behind when a target cannot be made', async () => {
      let failed = false;
      await b.exporter.ensure({ ...spec(0), file: path.join(dir, 'missing.img') }).catch(() => (failed = true));
      expect(failed).to.equal(true);
      expect(await b.exporter.list()).to.deep.equal([]);
      await b.exporter.ensure(spec(0));
      expect((await b.exporter.list()).map((t) => t.iqn)).to.deep.equal([spec(0).iqn]);
      expect(b.unsaved()).to.equal(0);
    });
  });
