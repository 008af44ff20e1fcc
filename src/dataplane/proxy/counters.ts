/**
 * @module dataplane/proxy/counters
 * Why packets did not make it: every drop has a reason and a counter, so a bad packet is a number in
 * `oaknet status`, never an exception. Counters are plain fields the data path increments; status reads them.
 */
import type { DataPlaneStatus } from '../../protocol/dataplane-status.ts';
import { DECODE_ERROR_COUNT, decodeErrorName } from '../packet/index.ts';

/** Drop reasons besides decode errors (which are counted per DecodeError). */
export const Drop = {
  NotSemantic: 0,
  UnknownSource: 1,
  NoInstance: 2,
  Unresolved: 3,
  QueueFull: 4,
  NotForThisNode: 5,
  FromOutsideOverlay: 6,
  UnsupportedIcmp: 7,
  FragmentUnmatched: 8,
  TunnelSendFailed: 9,
  TunWriteFailed: 10,
  Truncated: 11,
  WrongPeer: 12,
} as const;
export type Drop = (typeof Drop)[keyof typeof Drop];

const DROP_NAMES: Record<Drop, string> = {
  0: 'destination not a ServiceIP or instance IP',
  1: 'source is no deployed instance',
  2: 'no live instance for the address',
  3: 'address unknown to the control plane',
  4: 'queue for an unresolved address full',
  5: 'tunnelled packet not for this node',
  6: 'tunnelled packet from outside the overlay',
  7: 'ICMP other than echo',
  8: 'fragment without its first fragment',
  9: 'tunnel send failed',
  10: 'TUN write failed',
  11: 'packet truncated on read',
  12: 'tunnelled packet from an instance its sender does not host',
};

/** The counter fields of the data plane's status. */
export type CounterStatus = Pick<
  DataPlaneStatus,
  | 'tun_in'
  | 'tunnel_in'
  | 'tun_out'
  | 'tunnel_out'
  | 'local'
  | 'flows_created'
  | 'resets_sent'
  | 'questions_throttled'
  | 'multicast_ignored'
  | 'drops'
  | 'dropped'
>;

export class ProxyCounters {
  readonly drops = new Float64Array(Object.keys(Drop).length);
  readonly decodeErrors = new Float64Array(DECODE_ERROR_COUNT);
  /** Packets read from the TUN and from the tunnel. */
  tunIn = 0;
  tunnelIn = 0;
  /** Packets written to the TUN, and wire datagrams sent into the tunnel. */
  tunOut = 0;
  tunnelOut = 0;
  /** Packets delivered on this node without the network. */
  local = 0;
  flowsCreated = 0;
  resetsSent = 0;
  /** Table queries not asked because too many were asked (a scan of the semantic range). */
  questionsThrottled = 0;
  /** IPv6 multicast the kernel sent into the TUN (link chatter), ignored. */
  multicast = 0;

  drop(reason: Drop, n = 1): void {
    this.drops[reason]! += n;
  }

  /** The counters as the status shows them: drop counts by reason name (only those that occurred). */
  status(): CounterStatus {
    const drops: Record<string, number> = {};
    let dropped = 0;
    this.drops.forEach((n, i) => {
      if (!n) return;
      drops[DROP_NAMES[i as Drop]] = n;
      dropped += n;
    });
    this.decodeErrors.forEach((n, i) => {
      if (!n) return;
      drops[`malformed: ${decodeErrorName(i)}`] = n;
      dropped += n;
    });
    return {
      tun_in: this.tunIn,
      tunnel_in: this.tunnelIn,
      tun_out: this.tunOut,
      tunnel_out: this.tunnelOut,
      local: this.local,
      flows_created: this.flowsCreated,
      resets_sent: this.resetsSent,
      questions_throttled: this.questionsThrottled,
      multicast_ignored: this.multicast,
      drops,
      dropped,
    };
  }
}
