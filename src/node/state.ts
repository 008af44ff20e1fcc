/**
 * @module node/state
 * What a NetManager keeps on disk so a restart changes nothing visible: its worker ID, its subnetworks and
 * its instances with their namespace addresses. Written atomically (temporary file, fsync, rename), so a crash
 * leaves either the old or the new state, never half of one.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Type, type Static } from 'typebox';
import { InvalidInputError } from '../errors.ts';
import { parser } from '../protocol/validate.ts';

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
    /** The state directory (0700). */
    readonly dir: string,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.path = join(dir, 'node-state.json');
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
      const fh = await open(tmp, 'w', 0o600);
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
