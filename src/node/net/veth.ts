/**
 * @module node/net/veth
 * Connecting one instance's namespace to the bridge and disconnecting it again: its veth pair, the
 * addresses and default routes inside, and its port mappings (firewall.ts).
 */
import { SystemError } from '../../errors.ts';
import { type AttachPlan, type Attachment, containerVethName, hostVethName } from './attachment.ts';
import type { EnvironmentContext } from './environment-config.ts';
import { addMappings, removeMappings } from './firewall.ts';
import { CommandFailedError, ipBatch, isAlreadyGone } from './runner.ts';

/**
 * Wires the namespace of `plan.pid`: the veth (host end on the bridge, hairpin on), the other end as eth0
 * (or `oakc<id>` if eth0 exists there), addresses, default routes via the gateways and the port mappings.
 * Any failure removes the veth again and throws.
 */
export async function attachInstance(ctx: EnvironmentContext, plan: AttachPlan): Promise<Attachment> {
  const t0 = performance.now();
  const { id, pid, nsip, nsipv6, mappings } = plan;
  const { bridge, mtu, subnetV4, subnetV6 } = ctx.config;
  const hostVeth = hostVethName(id);
  // Whether the veth exists and must be removed on failure: ip stops at the first failing line, so a
  // failure on line 1 created nothing; a failure without a line (timeout) may have created it.
  const veth = { created: 'no' as 'no' | 'yes' | 'maybe' };
  const createVeth = async (peer: string): Promise<void> => {
    try {
      await ipBatch(ctx.runner, [
        `link add ${hostVeth} mtu ${mtu} type veth peer name ${peer} mtu ${mtu} netns ${pid}`,
        `link set dev ${hostVeth} master ${bridge}`,
        // br_netfilter (if loaded) bridges DNATed packets; hairpin lets one go back out of its ingress port.
        `link set dev ${hostVeth} type bridge_slave hairpin on`,
        `link set dev ${hostVeth} up`,
      ]);
      veth.created = 'yes';
    } catch (err) {
      const line = err instanceof CommandFailedError ? err.failedLine : undefined;
      veth.created = line === 1 ? 'no' : line !== undefined ? 'yes' : 'maybe';
      throw err;
    }
  };
  let peer = 'eth0';
  try {
    try {
      await createVeth(peer);
    } catch (err) {
      // The peer name is checked inside the target namespace: eth0 may exist there already.
      if (!(err instanceof CommandFailedError && err.failedLine === 1 && /File exists/.test(err.stderr)))
        throw err;
      peer = containerVethName(id);
      try {
        await createVeth(peer);
      } catch (err2) {
        if (err2 instanceof CommandFailedError && err2.failedLine === 1 && /File exists/.test(err2.stderr)) {
          throw new SystemError(
            `cannot attach ${id}: ${hostVeth} already exists on the node, or both eth0 and ${peer} exist in the namespace of pid ${pid}`,
            { cause: err2 },
          );
        }
        throw err2;
      }
    }
    const inside = [
      'link set dev lo up',
      `addr add ${nsip.toString()}/${subnetV4.prefix} dev ${peer}`,
      ...(nsipv6 ? [`addr add ${nsipv6.toString()}/${subnetV6.prefix} dev ${peer} nodad`] : []),
      `link set dev ${peer} up`,
      `route replace 0.0.0.0/0 via ${ctx.gatewayV4.toString()} dev ${peer}`,
      ...(nsipv6 ? [`route replace ::/0 via ${ctx.gatewayV6.toString()} dev ${peer}`] : []),
    ];
    await ipBatch(ctx.runner, inside, pid);
    await addMappings(ctx, plan);
  } catch (err) {
    if (veth.created !== 'no') await deleteVeth(ctx, hostVeth, 'roll back a failed attach');
    ctx.logger.warn({ id, pid, err }, 'attach failed; rolled back');
    throw err;
  }
  const att: Attachment = {
    id,
    pid,
    hostVeth,
    containerVeth: peer,
    nsip: nsip.toString(),
    portMappings: mappings,
  };
  if (nsipv6) att.nsipv6 = nsipv6.toString();
  ctx.logger.debug({ ...att, ms: Math.round(performance.now() - t0) }, 'instance attached');
  return att;
}

/**
 * Removes the attachment's port mappings (those that still lead to it) and its veth; what is already gone
 * is fine. SystemError on other failures, after trying both steps.
 */
export async function detachInstance(ctx: EnvironmentContext, a: Attachment): Promise<void> {
  const t0 = performance.now();
  // The two steps are independent and each waits for the kernel (an nft commit and a device unregister
  // both wait for an RCU grace period), so they run side by side.
  const results = await Promise.allSettled([
    a.portMappings.length > 0 ? removeMappings(ctx, a) : Promise.resolve(),
    deleteVeth(ctx, a.hostVeth, 'detach', true),
  ]);
  const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (errors.length > 0) {
    throw new SystemError(
      `detach of ${a.id} incomplete: ${errors.map((e) => (e instanceof Error ? e.message : String(e))).join('; ')}`,
      { cause: errors[0] },
    );
  }
  ctx.logger.debug({ id: a.id, ms: Math.round(performance.now() - t0) }, 'instance detached');
}

/** Deletes a veth (both ends go); a missing one is fine. Other failures throw when `strict`, else are logged. */
async function deleteVeth(ctx: EnvironmentContext, name: string, why: string, strict = false): Promise<void> {
  try {
    await ctx.runner.run('ip', ['link', 'del', 'dev', name]);
  } catch (err) {
    if (isAlreadyGone(err)) return;
    if (strict) throw err;
    ctx.logger.warn({ err, link: name }, `could not delete the veth to ${why}`);
  }
}
