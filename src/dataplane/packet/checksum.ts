/**
 * @module dataplane/packet/checksum
 * Internet checksum arithmetic (RFC 1071) for the NAT data path. The proxy rewrites a few 16-bit words of each
 * packet (addresses, ports, the echo identifier), so it updates checksums incrementally (RFC 1624) instead of
 * re-summing the packet: the cost is a handful of integer operations whatever the packet size. The full sum is
 * still here for builders, tests and the rare packet that needs one.
 *
 * Incremental update, derived. The checksum field holds HC = ~C, where C is the one's-complement sum of all
 * 16-bit words it covers. Changing one word m into m' changes the sum to C' = C - m + m'. In one's-complement
 * arithmetic the negation of m is its bitwise complement ~m, so C' = C + ~m + m'. Substituting C = ~HC gives
 *
 *     HC' = ~C' = ~(~HC + ~m + m')                                       (RFC 1624, eqn. 3)
 *
 * Because one's-complement addition is associative and commutative, several changed words can be summed into
 * one delta D = Σ(~m_i + m'_i) and applied once: HC' = ~(~HC + D). Eqn. 3 is the form to use: the older
 * HC' = HC + m - m' form of RFC 1141 can yield 0x0000 where a full recomputation yields 0xffff.
 *
 * Why the result equals a full recomputation bit for bit: folding a sum with end-around carry gives 0 only when
 * every term is 0, so for a nonzero ~HC the folded ~HC + D lies in 1..0xffff, as does the full sum S' of the new
 * words (nonzero because each covered message has a nonzero word: the IPv4 version byte, the protocol number in
 * the pseudo-header, the ICMP type). Both are congruent modulo 0xffff, and 1..0xffff holds one member of each
 * class, so they are equal. Words that did not change contribute nothing, so an unchanged packet keeps its
 * checksum exactly.
 */

/**
 * Folds a non-negative integer sum (< 2^53) to 16 bits with end-around carry. Returns 0 only for 0.
 */
export function foldSum(sum: number): number {
  let s = sum;
  while (s > 0xffffffff) s = (s % 0x100000000) + Math.floor(s / 0x100000000);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/**
 * One's-complement sum, folded to 16 bits but not complemented, of buf[offset..offset+length) read as
 * big-endian 16-bit words; an odd last byte is padded with a zero byte. `initial` (a folded or unfolded sum)
 * is added in. Throws RangeError when the range is outside buf.
 */
export function onesComplementSum(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  if (offset < 0 || length < 0 || offset + length > buf.length) {
    throw new RangeError(`checksum range ${offset}+${length} is outside a ${buf.length}-byte buffer`);
  }
  let sum = initial;
  const end = offset + length;
  const evenEnd = end - (length & 1);
  let i = offset;
  // Fold every 32k words so the running sum stays a small integer.
  while (i < evenEnd) {
    const chunkEnd = Math.min(evenEnd, i + 0x10000);
    for (; i < chunkEnd; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
    sum = foldSum(sum);
  }
  if (length & 1) sum += buf[end - 1]! << 8;
  return foldSum(sum);
}

/** The checksum field value for a (folded or unfolded) one's-complement sum: ~sum as 16 bits. */
export function finishChecksum(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

/** The Internet checksum (RFC 1071) of buf[offset..offset+length) plus `initial`; throws RangeError on bad range. */
export function internetChecksum(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  return finishChecksum(onesComplementSum(buf, offset, length, initial));
}

/**
 * Folded sum of the TCP/UDP/ICMPv6 pseudo-header for either family. The IPv4 pseudo-header (RFC 9293 §3.1:
 * src, dst, zero, protocol, 16-bit length) and the IPv6 one (RFC 8200 §8.1: src, dst, 32-bit length, 3 zero
 * bytes, next header) contain the same words apart from zeros, so one sum serves both: the address words, the
 * protocol number and the length split into two 16-bit halves. `addrLength` is 4 or 16.
 */
export function pseudoHeaderSum(
  buf: Uint8Array,
  srcOffset: number,
  dstOffset: number,
  addrLength: number,
  proto: number,
  l4Length: number,
): number {
  const sum =
    onesComplementSum(buf, srcOffset, addrLength) +
    onesComplementSum(buf, dstOffset, addrLength) +
    proto +
    Math.floor(l4Length / 0x10000) +
    (l4Length & 0xffff);
  return foldSum(sum);
}

/** The RFC 1624 delta term ~m + m' for the 16-bit word m changing to m' (both 0..0xffff). */
export function wordDelta(oldWord: number, newWord: number): number {
  return (~oldWord & 0xffff) + newWord;
}

/**
 * The checksum after adding `delta` (a sum of wordDelta terms, < 2^31) to the words it covers: ~(~HC + delta)
 * per RFC 1624 eqn. 3. A delta of 0 returns the checksum unchanged.
 */
export function applyChecksumDelta(checksum: number, delta: number): number {
  let s = (~checksum & 0xffff) + delta;
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** The checksum after one covered 16-bit word changed from oldWord to newWord (RFC 1624 eqn. 3). */
export function updateChecksum16(checksum: number, oldWord: number, newWord: number): number {
  if (oldWord === newWord) return checksum;
  return applyChecksumDelta(checksum, wordDelta(oldWord, newWord));
}
