import { randomBytes, randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';

/** A private single-node Ceph cluster: one monitor, one memstore OSD, one RBD pool of size 1. */
export interface CephCluster {
  /** Absolute path of the cluster's ceph.conf (`rbd -c conf --id id`, `rbd:pool/img:conf=…:id=…`). */
  conf: string;
  /** An RBD pool ready for `rbd create` (`rbd pool init` done, application rbd enabled). */
  pool: string;
  /** The client id: its key is in the keyring that `conf` names. */
  id: string;
  /** Kills every daemon it started and waits for them to exit. */
  stop(): Promise<void>;
}

export interface CephOptions {
  /**
   * Also start a ceph-mgr and wait for it to be active (2-4 s more). RBD does not need one; `ceph df`,
   * `rados df` and the PG statistics of `ceph -s` do.
   */
  mgr?: boolean;
}

const POOL = 'elemento';
const ID = 'admin';
const DEADLINE_MS = 60_000;
/** What the OSD may hold: enough for tests that write a few hundred MB (memstore keeps it in RAM, as written). */
const MEMSTORE_BYTES = 2 * 1024 ** 3;

/** Daemons still running, killed if the test process exits without stopping them. */
const running = new Set<ResultPromise>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** A new cephx secret, as `ceph-authtool --gen-print-key` prints it (AES, creation time, 16 random bytes). */
function cephxKey(): string {
  const key = Buffer.alloc(28);
  const now = Date.now();
  key.writeUInt16LE(1, 0);
  key.writeUInt32LE(Math.floor(now / 1000), 2);
  key.writeUInt32LE((now % 1000) * 1_000_000, 6);
  key.writeUInt16LE(16, 10);
  randomBytes(16).copy(key, 12);
  return key.toString('base64');
}

/** One keyring for every daemon and client; the monitor imports it all (caps included) when it is made. */
function keyring(osdId: string): string {
  const entity = (name: string, caps: Record<string, string>) =>
    [`[${name}]`, `\tkey = ${cephxKey()}`, ...Object.entries(caps).map(([k, v]) => `\tcaps ${k} = "${v}"`)].join('\n');
  return [
    entity('mon.', { mon: 'allow *' }),
    entity(`client.${ID}`, { mds: 'allow *', mgr: 'allow *', mon: 'allow *', osd: 'allow *' }),
    entity(`osd.${osdId}`, { mgr: 'allow profile osd', mon: 'allow profile osd', osd: 'allow *' }),
    entity('mgr.x', { mds: 'allow *', mon: 'allow profile mgr', osd: 'allow *' }),
    '',
  ].join('\n');
}

/** A port nothing listens on now, chosen by the kernel. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function cephConf(base: string, fsid: string, port: number): string {
  const dir = (n: string) => path.join(base, n);
  return [
    '[global]',
    `fsid = ${fsid}`,
    `mon host = [v1:127.0.0.1:${port}]`,
    'mon initial members = a',
    'public network = 127.0.0.1/32',
    'cluster network = 127.0.0.1/32',
    'ms bind ipv4 = true',
    'ms bind ipv6 = false',
    // cephx, not auth none: with none a client is authenticated at its first message and may send a command
    // before it has the monmap, with a zero fsid that the monitor refuses ('wrong fsid', EPERM: `ceph` says
    // "problem getting command descriptions from mon", an OSD exits at start). cephx's round trips bring the monmap first.
    'auth cluster required = cephx',
    'auth service required = cephx',
    'auth client required = cephx',
    `keyring = ${dir('keyring')}`,
    // Clients give up at once when the cluster is not there (they wait 300 s otherwise).
    'client mount timeout = 3',
    'rados mon op timeout = 10',
    'rados osd op timeout = 10',
    `run dir = ${dir('run')}`,
    `crash dir = ${dir('crash')}`,
    `mon data = ${dir('mon/$cluster-$id')}`,
    `osd data = ${dir('osd/$cluster-$id')}`,
    `mgr data = ${dir('mgr/$cluster-$id')}`,
    'osd objectstore = memstore',
    `memstore device bytes = ${MEMSTORE_BYTES}`,
    'osd pool default size = 1',
    'osd pool default min size = 1',
    'osd pool default pg num = 8',
    'osd pool default pgp num = 8',
    'osd pool default pg autoscale mode = off',
    'osd crush chooseleaf type = 0',
    'mon allow pool delete = true',
    'mon allow pool size one = true',
    // The monitor commits every change after paxos propose interval (1 s): each step of the start-up waits for it.
    'paxos propose interval = 0.01',
    'paxos min wait = 0.01',
    // Nothing here is production: no warnings for that, and no monitor stopping on a nearly full disk.
    'mon data avail warn = 1',
    'mon data avail crit = 0',
    'mon warn on insecure global id reclaim allowed = false',
    'mon warn on pool no redundancy = false',
    'mon warn on msgr2 not enabled = false',
    // The daemons log under base; clients (rbd, qemu, tgtd) keep their default of no log file.
    '[mon]',
    `log file = ${dir('log/$name.log')}`,
    '[osd]',
    `log file = ${dir('log/$name.log')}`,
    'osd fast shutdown = true',
    '[mgr]',
    `log file = ${dir('log/$name.log')}`,
    '',
  ].join('\n');
}

/**
 * Starts a private Ceph cluster with everything under `base` (config, monitor store, sockets, logs):
 * a monitor on 127.0.0.1 at a free port (msgr v1, cephx with one keyring), a memstore OSD and the RBD pool
 * `elemento` of size 1. Answers the reason when that cannot be done here (not root, Ceph missing,
 * the cluster not usable within a minute: then what was started is stopped first).
 */
export async function startCeph(base: string, options: CephOptions = {}): Promise<CephCluster | string> {
  if (process.getuid?.() !== 0) return 'Ceph needs root';
  for (const tool of ['ceph-mon', 'ceph-osd', 'monmaptool', 'ceph', 'rbd', ...(options.mgr ? ['ceph-mgr'] : [])])
    if ((await execa('sh', ['-c', 'command -v "$1"', 'sh', tool], { reject: false })).exitCode !== 0)
      return `${tool} is not installed (packages ceph-mon, ceph-osd, ceph-mgr, ceph-common)`;

  base = path.resolve(base);
  const dir = (n: string) => path.join(base, n);
  for (const d of ['mon/ceph-a', 'osd/ceph-0', 'mgr/ceph-x', 'run', 'log', 'crash']) await fs.mkdir(dir(d), { recursive: true });
  const conf = dir('ceph.conf');
  const fsid = randomUUID();
  const port = await freePort();
  // `ceph osd new` answers the lowest free id: 0 in a new cluster.
  const osdId = '0';
  await fs.writeFile(conf, cephConf(base, fsid, port));
  await fs.writeFile(dir('keyring'), keyring(osdId), { mode: 0o600 });

  const deadline = Date.now() + DEADLINE_MS;
  const left = () => Math.max(1000, deadline - Date.now());
  const run = (cmd: string, args: string[]) => execa(cmd, ['-c', conf, ...args], { timeout: left(), stdin: 'ignore' });

  const daemons: Array<{ name: string; child: ResultPromise; stderr: string[] }> = [];
  let stopped = false;
  const spawn = (name: string, cmd: string, args: string[]) => {
    if (stopped) throw new Error(`not starting ${name}: the cluster is being stopped`);
    const child = execa(cmd, ['-c', conf, '-f', ...args], { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', buffer: false });
    const stderr: string[] = [];
    child.stderr?.on('data', (b: Buffer) => {
      stderr.push(...b.toString().split('\n').filter((l) => l.trim()));
      stderr.splice(0, stderr.length - 20);
    });
    running.add(child);
    void child.then(() => running.delete(child));
    daemons.push({ name, child, stderr });
  };
  const stop = async () => {
    stopped = true;
    // SIGKILL: memstore holds nothing worth saving, and an OSD told to stop waits for the monitor (gone first or not).
    for (const { child } of [...daemons].reverse()) child.kill('SIGKILL');
    await Promise.all(daemons.map(({ child }) => child));
  };
  /** Throws with a daemon's last words when it exited. */
  const checkAlive = async () => {
    for (const { name, child, stderr } of daemons)
      if (child.exitCode !== null || child.signalCode !== null) {
        const last = stderr.filter((l) => !/^\s*$/.test(l)).slice(-1)[0] ?? '';
        throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) ${last}`.trim());
      }
  };
  const until = async (what: string, check: () => Promise<boolean>) => {
    for (;;) {
      await checkAlive();
      if (await check()) return;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  try {
    await execa('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v1:127.0.0.1:${port}]`, dir('monmap')]);
    await run('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', dir('monmap'), '--keyring', dir('keyring')]);
    spawn('ceph-mon', 'ceph-mon', ['-i', 'a']);
    await until('the monitor to listen', () => accepts(port));

    const osdUuid = randomUUID();
    await run('ceph', ['osd', 'new', osdUuid, osdId]);
    // The pool is made while the OSD starts (`rbd pool init` then waits for it to be up), but only once the OSD
    // is in the CRUSH map: the placement groups of a pool that maps to no OSD are only created at the
    // monitor's next tick (5 s later). The OSD would place itself there when it starts, too late for that.
    const steps = await Promise.allSettled([
      run('ceph', ['osd', 'crush', 'create-or-move', `osd.${osdId}`, '1', 'root=default']).then(() => run('ceph', ['osd', 'pool', 'create', POOL])),
      run('ceph-osd', ['--mkfs', '-i', osdId, '--osd-uuid', osdUuid]).then(() => spawn(`ceph-osd.${osdId}`, 'ceph-osd', ['-i', osdId])),
    ]);
    for (const step of steps) if (step.status === 'rejected') throw step.reason;
    if (options.mgr) spawn('ceph-mgr', 'ceph-mgr', ['-i', 'x']);
    await until('the RBD pool to be usable', async () => {
      const r = await execa('rbd', ['-c', conf, '--id', ID, 'pool', 'init', POOL], { reject: false, timeout: left(), stdin: 'ignore' });
      if (r.exitCode !== 0) return false;
      return (await execa('rbd', ['-c', conf, '--id', ID, 'ls', POOL], { reject: false, timeout: left(), stdin: 'ignore' })).exitCode === 0;
    });
    if (options.mgr)
      await until('the manager to be active', async () => {
        const r = await execa('ceph', ['-c', conf, 'mgr', 'stat'], { reject: false, timeout: left(), stdin: 'ignore' });
        return r.exitCode === 0 && JSON.parse(r.stdout).available === true;
      });
  } catch (err) {
    await stop();
    const e = err as Error & { shortMessage?: string; stderr?: string };
    const said = String(e.stderr ?? '').trim().split('\n').slice(-1)[0];
    return `Ceph did not come up: ${(e.shortMessage ?? e.message).split('\n')[0]}${said ? `: ${said}` : ''}`;
  }
  return { conf, pool: POOL, id: ID, stop };
}

