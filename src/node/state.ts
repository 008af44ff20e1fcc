/**
 * @module node/state
 * What a NetManager keeps on disk so a restart changes nothing visible: its worker ID, its subnetworks and
 * its instances with their namespace addresses. Written atomically (temporary file, fsync, rename), so a crash
 * leaves either the old or the new state, never half of one.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Type, type Static } from 'typebox';
import { InvalidInputError } from '../errors.ts';
import { parser } from '../protocol/validate.ts';

const InstanceState = Type.Object({
  job: Type.String(),
  instance: Type.Integer({ minimum: 0 }),
  pid: Type.Integer(),
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

  constructor(dir: string) {
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

  save(state: NodeState): void {
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(state, null, 2));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }
}
