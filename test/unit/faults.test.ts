import { expect } from 'chai';
import { execa } from 'execa';
import { PROJECT_ROOT } from '../../src/project.js';

const script = (point: string) => `import { faultPoint } from './src/faults.ts'; faultPoint(${JSON.stringify(point)}); console.log('alive');`;

async function runWith(faults: string | undefined, point: string) {
  return execa('node', ['--import', 'tsx/esm', '--input-type=module', '-e', script(point)], {
    cwd: PROJECT_ROOT,
    env: { ELEMENTO_FAULTS: faults },
    extendEnv: true,
    reject: false,
  });
}

describe('fault points (ELEMENTO_FAULTS)', function () {
  this.timeout(20_000);

  it('kill the process with SIGKILL at a point the variable names, and only there', async () => {
    const killed = await runWith('convert.after-rename,create.after-meta', 'create.after-meta');
    expect(killed.signal).to.equal('SIGKILL');
    expect(killed.stderr).to.equal('elemento-storage: fault point create.after-meta reached: killing the process');
    const passed = await runWith('convert.after-rename', 'create.after-meta');
    expect([passed.exitCode, passed.stdout]).to.deep.equal([0, 'alive']);
  });

  it('do nothing when the variable is unset', async () => {
    const passed = await runWith(undefined, 'create.after-meta');
    expect([passed.exitCode, passed.stdout]).to.deep.equal([0, 'alive']);
  });
});
