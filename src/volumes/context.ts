import type { Config } from '../config.js';
import type { JobRegistry } from '../jobs/registry.js';
import type { Logger } from '../log.js';
import type { LockManager } from '../store/locks.js';
import type { Placement } from '../store/placement.js';
import type { Purger } from '../store/purge.js';
import type { VolumeIndex } from '../store/volume-index.js';
import type { BlankImages } from '../tools/blank-images.js';
import type { QemuImg } from '../tools/qemu-img.js';
import type { Rbd } from '../tools/rbd.js';
import type { CommandRunner } from '../tools/runner.js';

/** What every volume operation works with; built once by the daemon. */
export interface StoreContext {
  readonly config: Config;
  readonly log: Logger;
  readonly index: VolumeIndex;
  readonly locks: LockManager;
  readonly placement: Placement;
  readonly runner: CommandRunner;
  readonly qemuImg: QemuImg;
  /** The Ceph pool of Ceph volumes; null when the host has none configured. */
  readonly rbd: Rbd | null;
  /** `qemu-img create`, remembered per format and size (blank volumes). */
  readonly blankImages: BlankImages;
  readonly jobs: JobRegistry;
  /** Removes, after the answer, what an operation moved into a root's bin. */
  readonly purger: Purger;
}

/**
 * Who is asking: a client uid (the body's `creatorID` / `client_uid`), or `null` for the controller
 * (a request that names no caller, as the seed's `info` and `destroy` bodies do) and for admins.
 */
export type Caller = string | null;
