/**
 * @module dataplane/packet/rewrite
 * In-place NAT rewrites of a decoded packet: source/destination address, TCP/UDP ports and the ICMP echo
 * identifier. Each rewrite changes a few 16-bit words, so every checksum covering them is updated incrementally
 * (RFC 1624, see checksum.ts) from the same delta: no re-summing of the packet, no allocation, IPv4 and IPv6 on
 * one path.
 *
 * Which checksums cover what:
 * - IPv4 header checksum: the addresses (IPv6 has no header checksum).
 * - TCP, UDP and ICMPv6: the pseudo-header (both addresses) and their own header (ports / echo identifier).
 * - ICMPv4: only the ICMP message, so an address change leaves it alone; the echo identifier is inside it.
 * - UDP checksum 0 means "no checksum" (RFC 768; for IPv6 only on tunnel ports, RFC 6936): it stays 0. A result
 *   of 0 is written as 0xffff, its other one's-complement representation, because 0 would mean "none".
 * - A partial checksum (`p.l4ChecksumPartial`: an offloaded super-packet's pseudo-header sum, offload.ts) is a
 *   sum, not a checksum: an address change adds the delta to it, and port or identifier changes leave it
 *   alone (the header words are summed when the checksum is completed).
 * - A non-first fragment has no transport header: only the IP header changes. For a first fragment the
 *   transport checksum covers the whole reassembled datagram, but the rewritten words all lie in the first
 *   fragment and the pseudo-header, so adding the same delta keeps the reassembled checksum right.
 *
 * Preconditions are programmer errors and throw: `buf` must be the buffer `p` last decoded, the new address
 * must have the packet's family, ports/identifiers must be 16-bit integers. A packet that cannot take the
 * rewrite (it did not decode that far, or has no such field) is bad input: the function returns false and
 * changes nothing.
 */
import { applyChecksumDelta } from './checksum.ts';
import { addToPartialChecksum } from './offload.ts';
import { IpProto } from './constants.ts';
import type { ParsedPacket } from './parsed-packet.ts';

function u16(buf: Uint8Array, i: number): number {
  return (buf[i]! << 8) | buf[i + 1]!;
}

function put16(buf: Uint8Array, i: number, value: number): void {
  buf[i] = value >>> 8;
  buf[i + 1] = value & 0xff;
}

function checkBuffer(p: ParsedPacket, buf: Uint8Array): void {
  if (buf !== p.buffer)
    throw new Error('packet rewrite: buf is not the buffer the ParsedPacket last decoded');
}

function check16(value: number, what: string): void {
  if ((value & 0xffff) !== value)
    throw new RangeError(`packet rewrite: ${what} ${value} is not a 16-bit integer`);
}

/** Adds `delta` to the transport checksum at `at`, honouring UDP's "0 = no checksum" rule. */
function patchL4Checksum(p: ParsedPacket, buf: Uint8Array, at: number, delta: number): void {
  const old = u16(buf, at);
  if (p.l4ChecksumPartial) {
    put16(buf, at, addToPartialChecksum(old, delta));
    return;
  }
  if (p.proto === IpProto.Udp) {
    if (old === 0) return;
    const updated = applyChecksumDelta(old, delta);
    put16(buf, at, updated === 0 ? 0xffff : updated);
    return;
  }
  put16(buf, at, applyChecksumDelta(old, delta));
}

function setAddress(
  p: ParsedPacket,
  buf: Uint8Array,
  at: number,
  addr: Uint8Array,
  addrOffset: number,
  addrLength: number,
): boolean {
  checkBuffer(p, buf);
  if (at < 0) return false;
  if (addrLength !== p.addrLength) {
    throw new Error(`packet rewrite: IPv${p.version} packet given a ${addrLength}-byte address`);
  }
  if (addrOffset < 0 || addrOffset + addrLength > addr.length) {
    throw new RangeError(`packet rewrite: address ${addrOffset}+${addrLength} outside ${addr.length} bytes`);
  }
  let delta = 0;
  for (let i = 0; i < addrLength; i += 2) {
    const oldWord = u16(buf, at + i);
    const newWord = u16(addr, addrOffset + i);
    if (oldWord !== newWord) {
      delta += (~oldWord & 0xffff) + newWord;
      put16(buf, at + i, newWord);
    }
  }
  if (delta === 0) return true;
  if (p.version === 4) {
    const c = p.ipOffset + 10;
    put16(buf, c, applyChecksumDelta(u16(buf, c), delta));
  }
  // ICMPv4 has no pseudo-header; every other checksummed transport here (TCP, UDP, ICMPv6) has one.
  const l4 = p.l4ChecksumOffset;
  if (l4 >= 0 && p.proto !== IpProto.Icmp) patchL4Checksum(p, buf, l4, delta);
  return true;
}

/** Replaces the transport word at l4Offset + rel and patches the transport checksum. */
function setL4Word(p: ParsedPacket, buf: Uint8Array, rel: number, value: number): void {
  const at = p.l4Offset + rel;
  const oldWord = u16(buf, at);
  if (oldWord === value) return;
  put16(buf, at, value);
  if (!p.l4ChecksumPartial) patchL4Checksum(p, buf, p.l4ChecksumOffset, (~oldWord & 0xffff) + value);
}

function hasPorts(p: ParsedPacket): boolean {
  return p.l4ChecksumOffset >= 0 && (p.proto === IpProto.Tcp || p.proto === IpProto.Udp);
}

/**
 * Writes the source address from addr[addrOffset..addrOffset+addrLength) and updates the IPv4 header and
 * TCP/UDP/ICMPv6 checksums. Returns false (nothing changed) when the IP header did not decode. Throws when buf is
 * not p's buffer or addrLength differs from p.addrLength (family mismatch).
 */
export function setSrcAddress(
  p: ParsedPacket,
  buf: Uint8Array,
  addr: Uint8Array,
  addrOffset = 0,
  addrLength: number = addr.length - addrOffset,
): boolean {
  return setAddress(p, buf, p.srcOffset, addr, addrOffset, addrLength);
}

/** Like setSrcAddress, for the destination address. */
export function setDstAddress(
  p: ParsedPacket,
  buf: Uint8Array,
  addr: Uint8Array,
  addrOffset = 0,
  addrLength: number = addr.length - addrOffset,
): boolean {
  return setAddress(p, buf, p.dstOffset, addr, addrOffset, addrLength);
}

/**
 * Writes the TCP/UDP source port, updates the checksum and p.srcPort. Returns false (nothing changed) unless
 * p decoded Ok as TCP or UDP with a transport header. Throws when buf is not p's buffer or port is not 0..65535.
 */
export function setSrcPort(p: ParsedPacket, buf: Uint8Array, port: number): boolean {
  checkBuffer(p, buf);
  check16(port, 'port');
  if (!hasPorts(p)) return false;
  setL4Word(p, buf, 0, port);
  p.srcPort = port;
  return true;
}

/** Like setSrcPort, for the TCP/UDP destination port (updates p.dstPort). */
export function setDstPort(p: ParsedPacket, buf: Uint8Array, port: number): boolean {
  checkBuffer(p, buf);
  check16(port, 'port');
  if (!hasPorts(p)) return false;
  setL4Word(p, buf, 2, port);
  p.dstPort = port;
  return true;
}

/**
 * Writes the ICMP/ICMPv6 echo identifier, updates the ICMP checksum and sets p.srcPort and p.dstPort to it.
 * Returns false (nothing changed) unless p decoded Ok as an echo request/reply with its header. Throws when buf
 * is not p's buffer or id is not 0..65535.
 */
export function setEchoId(p: ParsedPacket, buf: Uint8Array, id: number): boolean {
  checkBuffer(p, buf);
  check16(id, 'echo identifier');
  if (!p.isEcho || p.l4ChecksumOffset < 0) return false;
  setL4Word(p, buf, 4, id);
  p.srcPort = id;
  p.dstPort = id;
  return true;
}
