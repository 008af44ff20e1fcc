/**
 * @module node/state
 * What a NetManager keeps on disk so a restart changes nothing visible: its worker ID, its subnetworks and
 * its instances with their namespace addresses. Written atomically (temporary file, fsync, rename), so a crash
 * leaves either the old or the new state, never half of one. The file is the owner's alone (0600; one an older
 * version left readable is tightened at start), in a directory created 0700.
 */
import { readFileSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Type, type Static } from 'typebox';
import { InvalidInputError } from '../errors.ts';
import { parser } from '../protocol/validate.ts';
import { makePrivateDir, openPrivate, tightenFile, type ModeLog } from '../store/private-files.ts';

const InstanceState = Type.Object({
  job: Type.String(),
  instance: Type.Integer({ minimum: 0 }),
  pid: Type.Integer(),
  /** Boot ID and start time of the process: a PID reused later (after a reboot) is not the instance. */
  pidStart: Type.Optional(Type.String()),
  /** Inode of the process's network namespace when it was wired. */
  netns: Type.Optional(Type.Number()),
  /** Host slot of the namespace address inside the worker subnetworks. */
  slot: Type.Integer(),
  nsip: Type.String(),
  nsipv6: Type.String(),
  portMappings: Type.String(),
  /** The host-plumbing record needed to remove the wiring (veth names, mappings). */
  attachment: Type.Unknown(),
  deployedAt: Type.String(),
});
export type InstanceState = Static<typeof InstanceState>;

const NodeStateSchema = Type.Object({
  version: Type.Literal(1),
  workerId: Type.String(),
  subnetV4: Type.String(),
  subnetV6: Type.String(),
  /** Slot cursor and released slots (fresh first, then oldest released). */
  nextSlot: Type.Integer(),
  freeSlots: Type.Array(Type.Integer()),
  instances: Type.Array(InstanceState),
});
export type NodeState = Static<typeof NodeStateSchema>;
const parse = parser(NodeStateSchema);

export class StateFile {
  readonly path: string;

  constructor(
    /** The state directory (created 0700 when missing). */
    readonly dir: string,
    /** Where a tightened file mode is reported (default: a process warning). */
    private readonly log?: ModeLog,
  ) {
    makePrivateDir(dir);
    this.path = join(dir, 'node-state.json');
    tightenFile(this.path, log);
  }

  /** The stored state, or undefined when there is none; a corrupt file is an error, not a silent reset. */
  load(): NodeState | undefined {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      return parse.parse(JSON.parse(text), `state file ${this.path}`);
    } catch (cause) {
      throw new InvalidInputError(`state file ${this.path} is corrupt; move it away to start fresh`, {
        cause,
      });
    }
  }

  /**
   * Writes state durably. Asynchronous, so the fsync (tens of ms on an SD card) does not stall the event loop
   * that also forwards packets; saves are serialised, the last one wins.
   */
  save(state: NodeState): Promise<void> {
    const text = JSON.stringify(state, null, 2);
    const run = async () => {
      const tmp = `${this.path}.tmp`;
      // 0600 even when a crash left a looser temporary file: the rename makes it the state file
      const fh = await openPrivate(tmp, 'w', this.log);
      try {
        await fh.writeFile(text);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.path);
    };
    this.saving = this.saving.then(run, run);
    return this.saving;
  }

  private saving: Promise<void> = Promise.resolve();
}
