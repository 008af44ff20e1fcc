/*
 * offload.c: what TUN offloads and UDP GSO need done to packets, over byte buffers only. Pure C (no N-API, no
 * libuv, no system calls), so native/test/fuzz_offload.c compiles it alone under ASan/UBSan.
 *
 * A TUN opened with IFF_VNET_HDR puts a struct virtio_net_hdr (10 bytes, host byte order: the legacy layout
 * tun uses by default) in front of every packet, both ways. After TUNSETOFFLOAD the kernel hands the reader
 * TCP (and, with USO, UDP) super-packets of up to 64 KiB: one IP and transport header for many segments,
 * gso_type/gso_size in the header and the transport checksum left partial (VIRTIO_NET_HDR_F_NEEDS_CSUM: the
 * field holds the folded, uncomplemented pseudo-header sum; whoever completes it sums csum_start..end and
 * stores the complement at csum_start + csum_offset). Writes may carry the same.
 *
 * The JS side sees one number per packet, its "gso word" (src/dataplane/packet/offload.ts):
 *   0      an ordinary packet whose checksums are complete;
 *   n > 0  a TCP or UDP super-packet whose payload is cut into n-byte segments; its transport checksum field
 *          holds the pseudo-header sum over the super-packet's transport length (Linux's convention).
 * The TUN reader normalises what the kernel gives into that (gso_word_from_vnet: a partial checksum on an
 * ordinary packet is completed on read), so nothing else ever sees a half-done checksum on an ordinary packet.
 *
 * Two directions of work on super-packets live here:
 *   - segmenting (software TSO/USO, for the UDP tunnel, which carries ordinary packets only): plan_segments
 *     and write_segment_header make each segment's headers, with full checksums; the payload stays where it
 *     is, so the sender gathers header + payload with no copy;
 *   - coalescing (software GRO, for TUN writes): plan_vnet_write finds runs of consecutive segments of one
 *     TCP flow and plans ONE super-packet write for them (a fresh header, then the segments' payloads).
 */
#include "oaknet.h"

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

/* Decodes the headers of p (len bytes); false for fragments, other protocols, an IPv6 routing header with
 * segments left (its pseudo-header would name another destination) and anything malformed. */
bool parse_l4(const uint8_t *p, uint32_t len, l4_info *o) {
  if (len < 20) return false;
  uint32_t pos, total;
  uint8_t next;
  if (p[0] >> 4 == 4) {
    pos = (uint32_t)(p[0] & 0x0f) * 4;
    total = rd16(p + 2);
    if (pos < 20 || total < pos || total > len || (rd16(p + 6) & 0x3fff) != 0) return false;
    next = p[9];
    o->version = 4;
  } else if (p[0] >> 4 == 6) {
    if (len < 40) return false;
    total = 40u + rd16(p + 4);
    if (total > len) return false;
    next = p[6];
    pos = 40;
    while (next == 0 || next == 60 || next == 43) { /* hop-by-hop, destination options, routing */
      if (pos + 8 > total) return false;
      uint32_t ext = ((uint32_t)p[pos + 1] + 1) * 8;
      if (pos + ext > total || (next == 43 && p[pos + 3] != 0)) return false;
      next = p[pos];
      pos += ext;
    }
    o->version = 6;
  } else {
    return false;
  }
  if (next == IPPROTO_TCP) {
    if (pos + 20 > total) return false;
    o->l4_hdr = (uint32_t)(p[pos + 12] >> 4) * 4;
    if (o->l4_hdr < 20 || pos + o->l4_hdr > total) return false;
  } else if (next == IPPROTO_UDP) {
    if (pos + 8 > total) return false;
    o->l4_hdr = 8;
  } else {
    return false;
  }
  o->proto = next;
  o->l4 = pos;
  o->total = total;
  return true;
}

static inline uint32_t l4_checksum_at(const l4_info *pi) {
  return pi->l4 + (pi->proto == IPPROTO_TCP ? 16 : 6);
}

/* ---- virtio headers ---------------------------------------------------------------------------------- */

/* Completes a partial checksum as a NIC would: the sum of [start, len) (which includes the pseudo-header sum
 * already in the field), complemented, stored at start + offset. UDP's 0 goes out as 0xffff (0 = none). */
bool complete_checksum(uint8_t *p, uint32_t len, uint32_t start, uint32_t offset) {
  if (start > len || offset > len - start || len - start - offset < 2) return false;
  uint16_t c = (uint16_t)~csum_fold(csum_add(p + start, len - start, 0));
  l4_info pi;
  if (c == 0 && parse_l4(p, len, &pi) && pi.proto == IPPROTO_UDP && pi.l4 == start) c = 0xffff;
  put_host16(p + start + offset, c);
  return true;
}

/* The gso word for a packet just read with the virtio header vh, after normalising the packet so the word's
 * contract holds; sets *len to 0 (a drop) for a packet the proxy cannot handle (an unknown GSO type, a GSO
 * type that does not match the headers, a partial checksum pointing outside the packet). */
uint32_t gso_word_from_vnet(const struct virtio_net_hdr *vh, uint8_t *pkt, uint32_t *len) {
  uint8_t type = vh->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
  if (type == VIRTIO_NET_HDR_GSO_NONE) {
    if ((vh->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && !complete_checksum(pkt, *len, vh->csum_start, vh->csum_offset))
      *len = 0;
    return 0;
  }
  l4_info pi;
  bool ok = vh->gso_size > 0 && parse_l4(pkt, *len, &pi) &&
            ((type == VIRTIO_NET_HDR_GSO_TCPV4 && pi.version == 4 && pi.proto == IPPROTO_TCP) ||
             (type == VIRTIO_NET_HDR_GSO_TCPV6 && pi.version == 6 && pi.proto == IPPROTO_TCP) ||
             (type == VIRTIO_NET_HDR_GSO_UDP_L4 && pi.proto == IPPROTO_UDP));
  if (!ok) {
    *len = 0;
    return 0;
  }
  /* The field is whatever the packet's sender left there (a forwarded super-packet carries its writer's
   * value, which nothing checked): never trust it, write the pseudo-header sum the gso word promises. */
  put_host16(pkt + l4_checksum_at(&pi), csum_fold(pseudo_sum(pkt, pi.version, pi.proto, pi.total - pi.l4)));
  return vh->gso_size;
}

/* The virtio header for writing packet p with gso word `gso`: all zero for an ordinary packet; for a
 * super-packet GSO type and size, NEEDS_CSUM at its transport checksum. False if p cannot be one, if its gso
 * word does not fit gso_size (0xffff is the kernel's GSO_BY_FRAGS, which it refuses from a writer), or if its
 * headers do not fit hdr_len (an IPv6 packet can carry more than 65,535 bytes of extension headers; the
 * 16-bit fields would truncate them). */
bool vnet_for(const uint8_t *p, uint32_t len, uint32_t gso, struct virtio_net_hdr *vh) {
  memset(vh, 0, sizeof *vh);
  if (gso == 0) return true;
  l4_info pi;
  if (gso >= 0xffff || !parse_l4(p, len, &pi) || pi.l4 + pi.l4_hdr > 0xffff) return false;
  vh->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vh->csum_start = (uint16_t)pi.l4;
  vh->csum_offset = pi.proto == IPPROTO_TCP ? 16 : 6;
  vh->hdr_len = (uint16_t)(pi.l4 + pi.l4_hdr);
  vh->gso_size = (uint16_t)gso;
  if (pi.proto == IPPROTO_UDP) {
    vh->gso_type = VIRTIO_NET_HDR_GSO_UDP_L4;
  } else {
    vh->gso_type = pi.version == 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
    if (p[pi.l4 + 13] & TCP_CWR) vh->gso_type |= VIRTIO_NET_HDR_GSO_ECN;
  }
  return true;
}

/* ---- segmenting (software TSO/USO) ------------------------------------------------------------------- */

/* Plans cutting packet p (len bytes) with gso word `gso` (> 0) into segments of gso payload bytes (the last
 * shorter): one segment when the payload fits in one, however large the word. False when p cannot be cut
 * (not an unfragmented TCP/UDP packet, or malformed). */
bool plan_segments(const uint8_t *p, uint32_t len, uint32_t gso, segment_plan *s) {
  if (gso == 0 || !parse_l4(p, len, &s->pi)) return false;
  const l4_info *pi = &s->pi;
  s->p = p;
  s->gso = gso;
  s->hdr = pi->l4 + pi->l4_hdr;
  s->payload = pi->total - s->hdr;
  s->nseg = s->payload <= gso ? 1 : (s->payload - 1) / gso + 1; /* (payload + gso - 1) / gso can wrap */
  bool tcp = pi->proto == IPPROTO_TCP;
  s->seq = tcp ? rd32(p + pi->l4 + 4) : 0;
  s->id = pi->version == 4 ? rd16(p + 4) : 0;
  s->flags = tcp ? p[pi->l4 + 13] : 0;
  s->addresses = pi->version == 4 ? csum_add(p + 12, 8, 0) : csum_add(p + 8, 32, 0);
  return true;
}

/* Writes the headers of segment k (< s->nseg) of a planned super-packet to dst (s->hdr bytes): its IP header
 * (length, IPv4 id + k, header checksum), TCP header (seq + k * gso; CWR only on the first, FIN and PSH only
 * on the last) or UDP header (length), and a full transport checksum over those headers and the segment's
 * payload (segment_payload(s, k), left where it is). Returns that payload's length. */
uint32_t write_segment_header(const segment_plan *s, uint32_t k, uint8_t *dst) {
  const l4_info *pi = &s->pi;
  uint32_t at = k * s->gso, plen = s->payload - at < s->gso ? s->payload - at : s->gso;
  uint32_t l4_len = pi->l4_hdr + plen;
  memcpy(dst, s->p, s->hdr);
  if (pi->version == 4) {
    wr16(dst + 2, s->hdr + plen);
    wr16(dst + 4, s->id + k);
    dst[10] = dst[11] = 0;
    put_host16(dst + 10, (uint16_t)~csum_fold(csum_add(dst, pi->l4, 0)));
  } else {
    wr16(dst + 4, s->hdr + plen - 40);
  }
  uint8_t *l4 = dst + pi->l4;
  uint64_t pseudo = s->addresses + htons(pi->proto) + htons((uint16_t)l4_len);
  if (pi->proto == IPPROTO_TCP) {
    uint8_t f = s->flags;
    if (k > 0) f &= (uint8_t)~TCP_CWR;
    if (k + 1 < s->nseg) f &= (uint8_t)~(TCP_FIN | TCP_PSH);
    wr32(l4 + 4, s->seq + at);
    l4[13] = f;
    l4[16] = l4[17] = 0;
    /* the transport header is a whole number of 16-bit words, so the payload sums on from it */
    uint64_t sum = csum_add(segment_payload(s, k), plen, csum_add(l4, pi->l4_hdr, pseudo));
    put_host16(l4 + 16, (uint16_t)~csum_fold(sum));
  } else {
    wr16(l4 + 4, l4_len);
    l4[6] = l4[7] = 0;
    uint64_t sum = csum_add(segment_payload(s, k), plen, csum_add(l4, pi->l4_hdr, pseudo));
    uint16_t c = (uint16_t)~csum_fold(sum);
    put_host16(l4 + 6, c ? c : 0xffff);
  }
  return plen;
}

/* ---- coalescing (software GRO) ----------------------------------------------------------------------- */

/* A TCP segment that may be coalesced: unfragmented IPv4 without options (and with a valid header checksum:
 * the super-packet gets a fresh one, so a corrupt header must not be hidden in it) or IPv6 without extension
 * headers, exactly its IP length, with data, ACK set and nothing but PSH besides. */
typedef struct {
  const uint8_t *p;
  uint32_t len, payload;
  l4_info pi;
} tcp_seg;

static bool gro_candidate(const uint8_t *p, uint32_t len, tcp_seg *s) {
  if (!parse_l4(p, len, &s->pi) || s->pi.proto != IPPROTO_TCP || s->pi.total != len ||
      s->pi.l4 != (s->pi.version == 4 ? 20u : 40u) || (p[s->pi.l4 + 13] & (uint8_t)~TCP_PSH) != TCP_ACK)
    return false;
  if (s->pi.version == 4 && csum_fold(csum_add(p, 20, 0)) != 0xffff) return false;
  s->p = p;
  s->len = len;
  s->payload = len - s->pi.l4 - s->pi.l4_hdr;
  return s->payload > 0;
}

/* Whether segment b continues the run headed by h as its k-th segment (k >= 1) at sequence number seq: the
 * same IP header but for length, id and checksum (so the same addresses, TOS/traffic class, TTL, DF), the
 * same TCP header but for sequence number, PSH and checksum (ports, ACK number, window, options). Without DF
 * the IPv4 id must be the head's + k (as Linux GRO asks: TSO makes the ids of the segments that way). */
static bool gro_continues(const tcp_seg *h, uint32_t k, uint32_t seq, const tcp_seg *b) {
  const uint8_t *x = h->p, *y = b->p;
  if (b->pi.version != h->pi.version || b->pi.l4_hdr != h->pi.l4_hdr) return false;
  if (h->pi.version == 4) {
    if (x[1] != y[1] || memcmp(x + 6, y + 6, 4) != 0 || memcmp(x + 12, y + 12, 8) != 0) return false;
    if (!(x[6] & 0x40) && rd16(y + 4) != (uint16_t)(rd16(x + 4) + k)) return false;
  } else if (memcmp(x, y, 4) != 0 || memcmp(x + 6, y + 6, 34) != 0) {
    return false;
  }
  const uint8_t *ht = x + h->pi.l4, *bt = y + b->pi.l4;
  return memcmp(ht, bt, 4) == 0 && rd32(bt + 4) == seq && memcmp(ht + 8, bt + 8, 5) == 0 &&
         memcmp(ht + 14, bt + 14, 2) == 0 && memcmp(ht + 18, bt + 18, h->pi.l4_hdr - 18) == 0;
}

/* A coalesced segment goes out under a checksum that the kernel no longer verifies (NEEDS_CSUM), so only
 * segments whose own checksum is right are coalesced: a corrupt one is written alone, for the kernel to drop. */
static bool tcp_checksum_ok(const tcp_seg *s) {
  uint32_t l4_len = s->len - s->pi.l4;
  return csum_fold(csum_add(s->p + s->pi.l4, l4_len, pseudo_sum(s->p, s->pi.version, IPPROTO_TCP, l4_len))) ==
         0xffff;
}

/* Plans packet p with a gso word no virtio header can carry (>= 0xffff, see vnet_for) as the segmenter would
 * cut it: one segment, since no IP packet holds that much payload. It goes out as an ordinary packet whose
 * transport header is a copy in w->hdr with its length and full checksum (the caller's buffer is left as it
 * is). False when p is not an unfragmented TCP/UDP packet. */
static bool plan_one_segment(uint8_t *p, uint32_t len, uint32_t gso, vnet_write *w) {
  l4_info pi;
  if (!parse_l4(p, len, &pi) || pi.total - pi.l4 - pi.l4_hdr > gso || pi.l4_hdr > sizeof w->hdr) return false;
  uint32_t l4_len = pi.total - pi.l4;
  uint8_t *t = w->hdr;
  memcpy(t, p + pi.l4, pi.l4_hdr);
  uint32_t at = pi.proto == IPPROTO_TCP ? 16 : 6;
  if (pi.proto == IPPROTO_UDP) wr16(t + 4, l4_len);
  t[at] = t[at + 1] = 0;
  uint64_t sum = csum_add(t, pi.l4_hdr, pseudo_sum(p, pi.version, pi.proto, l4_len));
  uint16_t c = (uint16_t)~csum_fold(csum_add(p + pi.l4 + pi.l4_hdr, l4_len - pi.l4_hdr, sum));
  put_host16(t + at, c == 0 && pi.proto == IPPROTO_UDP ? 0xffff : c);
  memset(&w->vh, 0, sizeof w->vh);
  w->iov[1] = (struct iovec){p, pi.l4};
  w->iov[2] = (struct iovec){t, pi.l4_hdr};
  w->iov[3] = (struct iovec){p + pi.l4 + pi.l4_hdr, l4_len - pi.l4_hdr};
  w->niov = 4;
  return true;
}

/* Plans the write for packets first.. of b: a run of coalescible segments when `coalesce`, else packet
 * `first` alone (behind the virtio header its gso word asks for). */
void plan_vnet_write(const packet_batch *b, uint32_t first, bool coalesce, vnet_write *w) {
  uint8_t *p = b->buf + b->offsets[first];
  uint32_t len = b->lengths[first];
  uint32_t word = batch_gso(b, first);
  w->covers = 1;
  w->bad = false;
  w->niov = 2;
  w->iov[0] = (struct iovec){&w->vh, VNET_HDR_BYTES};
  w->iov[1] = (struct iovec){p, len};
  tcp_seg head, next;
  if (word != 0 || !coalesce || first + 1 >= b->count || !gro_candidate(p, len, &head)) {
    w->bad = !vnet_for(p, len, word, &w->vh) && !(word >= 0xffff && plan_one_segment(p, len, word, w));
    return;
  }
  uint32_t hdr = head.pi.l4 + head.pi.l4_hdr, mss = head.payload, total = head.payload, n = 1;
  uint32_t seq = rd32(p + head.pi.l4 + 4) + head.payload, last_payload = head.payload;
  uint8_t last_flags = p[head.pi.l4 + 13];
  bool head_checked = false;
  for (uint32_t j = first + 1; j < b->count && n < MAX_SEGMENTS; j++) {
    if ((last_flags & TCP_PSH) || last_payload < mss) break; /* PSH or a short segment ends a run */
    if (batch_gso(b, j) != 0 || !gro_candidate(b->buf + b->offsets[j], b->lengths[j], &next) ||
        next.payload > mss || hdr + total + next.payload > IP_MAX_BYTES || !gro_continues(&head, n, seq, &next))
      break;
    if (!head_checked) {
      if (!tcp_checksum_ok(&head)) break;
      head_checked = true;
    }
    if (!tcp_checksum_ok(&next)) break;
    w->iov[2 + n] = (struct iovec){(uint8_t *)next.p + hdr, next.payload};
    n++;
    total += next.payload;
    seq += next.payload;
    last_payload = next.payload;
    last_flags = next.p[next.pi.l4 + 13];
  }
  memset(&w->vh, 0, sizeof w->vh);
  if (n == 1) return; /* alone after all: an ordinary packet */
  /* the super-packet's header: the head's, with the run's length, PSH of its last segment, and the
   * pseudo-header sum (NEEDS_CSUM) in the TCP checksum field */
  uint8_t *h = w->hdr;
  memcpy(h, p, hdr);
  if (head.pi.version == 4) {
    wr16(h + 2, hdr + total);
    h[10] = h[11] = 0;
    put_host16(h + 10, (uint16_t)~csum_fold(csum_add(h, 20, 0)));
  } else {
    wr16(h + 4, hdr + total - 40);
  }
  h[head.pi.l4 + 13] |= last_flags & TCP_PSH;
  put_host16(h + head.pi.l4 + 16, csum_fold(pseudo_sum(h, head.pi.version, IPPROTO_TCP, head.pi.l4_hdr + total)));
  w->iov[1] = (struct iovec){h, hdr};
  w->iov[2] = (struct iovec){p + hdr, head.payload};
  w->niov = (int)n + 2;
  w->covers = n;
  w->vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  w->vh.gso_type = head.pi.version == 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
  w->vh.gso_size = (uint16_t)mss;
  w->vh.hdr_len = (uint16_t)hdr;
  w->vh.csum_start = (uint16_t)head.pi.l4;
  w->vh.csum_offset = 16;
}
