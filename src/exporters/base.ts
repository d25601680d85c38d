/**
 * The narrow interface every iSCSI backend implements (STYLE lesson 2): one file per backend
 * (`tgt.ts`, `lio.ts`), capabilities declared as data, and anything a backend cannot do fails with
 * NotSupportedError rather than succeeding silently.
 */

/** What a hypervisor is given: one target named `iqn` whose LUN `lun` is `file`. */
export interface TargetSpec {
  iqn: string;
  /** The LUN's backing file, or for a Ceph volume its RBD image as `pool/image` (then `rbd` is set). */
  file: string;
  readonly: boolean;
  /** A Ceph volume: the cluster (ceph.conf) and client id the backend reads the RBD image with. */
  rbd?: { conf: string; id: string };
}

/** A target that exists on the backend, as read back from it. */
export interface ExistingTarget {
  iqn: string;
  /** The LUN's backing file or RBD image `pool/image` ('' when the target has none). */
  file: string;
}

export interface ExporterCapabilities {
  /** Read-only LUNs (read-only volumes are exported read-only). */
  readonlyLuns: boolean;
  /** The daemon can start and stop the target daemon itself (tgtd); LIO lives in the kernel. */
  managedDaemon: boolean;
  /** The backend's state is saved to disk after each change (LIO's saveconfig). */
  savesConfig: boolean;
  /** LUNs backed by an RBD image (Ceph volumes); a backend without answers 501 to their export. */
  rbdLuns: boolean;
}

export interface Exporter {
  readonly name: 'tgt' | 'lio' | 'none';
  readonly capabilities: Readonly<ExporterCapabilities>;
  /** The LUN number of the volume inside its target (tgt keeps LUN 0 for its controller). */
  readonly lun: number;
  /** Prepares the backend (starts a managed tgtd); throws when the backend cannot be reached. */
  start(): Promise<void>;
  /**
   * Releases what start took (stops a managed tgtd, once the targets `ours` names are deleted: one that
   * serves other targets, another daemon's of this host included, keeps running with them).
   */
  stop(ours: (target: ExistingTarget) => boolean): Promise<void>;
  /** Every target on the backend, ours or not. */
  list(): Promise<ExistingTarget[]>;
  /** Creates the target; a target of that name that already exists is left as it is. */
  ensure(spec: TargetSpec): Promise<void>;
  /** Removes the target; a target that does not exist is not an error. */
  remove(iqn: string): Promise<void>;
}
