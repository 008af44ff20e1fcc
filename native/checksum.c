/*
 * checksum.c: Internet checksums (RFC 1071) over byte buffers, and the TCP/UDP pseudo-header sum. Pure C (no
 * N-API, no libuv): offload.c builds on it, and native/test/fuzz_offload.c compiles both alone.
 */
#include "oaknet.h"

static inline uint64_t add_with_carry(uint64_t a, uint64_t b) {
  a += b;
  return a + (a < b);
}

/* The one's-complement sum (RFC 1071) of len bytes at p added to `sum` (an unfolded accumulation), as
 * 16-bit words in host byte order. RFC 1071 2(B): the sum is byte-order independent, so the folded result
 * stored in host order lands in the right bytes, and network-order constants are added as htons(value).
 * 32-bit words go into four independent 64-bit accumulators (no carries to chase for up to 2^32 words, and
 * no dependency chain between them); 2^16 = 1 modulo 0xffff, so a 32-bit word sums like its two halves. A
 * region must start at an even distance from the start of what it is summed with; an odd last byte is padded
 * with a zero. Fold the result with csum_fold. */
uint64_t csum_add(const uint8_t *p, size_t len, uint64_t sum) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, a, b;
  while (len >= 32) {
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    s0 += (uint32_t)a;
    s1 += a >> 32;
    s2 += (uint32_t)b;
    s3 += b >> 32;
    memcpy(&a, p + 16, 8);
    memcpy(&b, p + 24, 8);
    s0 += (uint32_t)a;
    s1 += a >> 32;
    s2 += (uint32_t)b;
    s3 += b >> 32;
    p += 32;
    len -= 32;
  }
  while (len >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    s0 += w;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    s1 += w;
    p += 2;
    len -= 2;
  }
  if (len) {
    uint8_t last[2] = {p[0], 0};
    uint16_t w;
    memcpy(&w, last, 2);
    s2 += w;
  }
  return add_with_carry(add_with_carry(add_with_carry(add_with_carry(sum, s0), s1), s2), s3);
}

/* Folds a csum_add accumulation to 16 bits (host order). Nonzero in, nonzero out. */
uint16_t csum_fold(uint64_t sum) {
  sum = (sum & 0xffffffffu) + (sum >> 32);
  sum = (sum & 0xffffffffu) + (sum >> 32);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)sum;
}

/* The TCP/UDP pseudo-header sum of the IP packet at ip: both addresses, the protocol, the transport length
 * (IPv4 RFC 9293 3.1 and IPv6 RFC 8200 8.1 hold the same words apart from zeros). Unfolded. */
uint64_t pseudo_sum(const uint8_t *ip, int version, uint8_t proto, uint32_t l4_len) {
  uint64_t sum = version == 4 ? csum_add(ip + 12, 8, 0) : csum_add(ip + 8, 32, 0);
  return sum + htons(proto) + htons((uint16_t)(l4_len >> 16)) + htons((uint16_t)l4_len);
}
