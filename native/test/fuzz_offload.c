/*
 * fuzz_offload.c: the pure C of the addon (native/offload.c, native/checksum.c) under AddressSanitizer and
 * UndefinedBehaviorSanitizer, with a fixed seed. src/dataplane/tun/sanitizers.test.ts builds and runs it:
 *
 *   gcc -std=gnu11 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
 *       -D_GNU_SOURCE -I native native/checksum.c native/offload.c native/test/fuzz_offload.c -o fuzz_offload
 *   ./fuzz_offload [seed [super-packets [malformed]]]
 *
 * No N-API and no libuv: that it compiles at all proves those files do without them. It checks:
 *   1. segmenting: random TCP/UDP super-packets (IPv4 with options, IPv6 with extension headers, TCP options,
 *      any MSS), as a kernel hands them over (partial checksum), cut with plan_segments and
 *      write_segment_header, each header into a buffer of exactly its size; every segment is compared byte
 *      for byte with one an independent builder here makes (lengths, IPv4 id + k, seq + k * MSS, CWR first
 *      only, FIN/PSH last only, full checksums by a plain reference sum), and the payloads make up the whole;
 *   2. coalescing planning: those segments (TCP without options in the IP layer) through plan_vnet_write: the
 *      writes cover every segment once, in order, in runs of at most 64 segments and 64 KiB; completing a
 *      coalesced write's partial checksum (complete_checksum) gives a valid packet with the run's payload;
 *   3. malformed input: random bytes and mutated packets (bit flips, truncation, bad length and header
 *      fields, any gso word and virtio header), each in a buffer of exactly its length (packets of one batch
 *      separated by poisoned gaps), through plan_segments / write_segment_header, gso_word_from_vnet,
 *      vnet_for, complete_checksum and plan_vnet_write: nothing may read or write outside them (ASan), no
 *      undefined behaviour (UBSan), and every iovec a plan makes lies inside a covered packet or the plan;
 *   4. csum_add against the reference sum, for any length and alignment;
 *   5. vnet_for and plan_vnet_write refusing an IPv6 super-packet whose headers (about 64 KiB of extension
 *      headers) do not fit the virtio header's 16-bit fields, and describing one just below that.
 * The helpers, the packet builder and the mutator are shared with the other harnesses (fuzz.h). Any failure
 * aborts with a message; a clean run prints one summary line and exits 0.
 */
#define FUZZ_NAME "fuzz_offload"
#include "fuzz.h"

/* ---- 1 and 2: valid super-packets, segmented and coalesced again --------------------------------------- */

static const uint32_t MSS_CHOICES[] = {1, 7, 88, 536, 1000, 1220, 1398, 1410, 1440, 8960, 65535, 0xffffffffu};

typedef struct {
  uint32_t super_packets, segments, writes, coalesced_runs, malformed, completions, sums;
} totals;

static uint8_t *scratch_a, *scratch_b; /* 65535 + 40 + VNET_HDR_BYTES bytes each */

/* Every iovec of w (after the virtio header) inside the plan itself or one of the packets it covers. */
static void check_iovecs(const vnet_write *w, const packet_batch *b, uint32_t first) {
  CHECK(w->niov >= 2 && w->niov <= MAX_SEGMENTS + 2, "niov %d", w->niov);
  CHECK(w->iov[0].iov_base == &w->vh && w->iov[0].iov_len == VNET_HDR_BYTES, "the first iovec is the header");
  for (int k = 1; k < w->niov; k++) {
    const struct iovec *v = &w->iov[k];
    bool ok = inside(v->iov_base, v->iov_len, w->hdr, sizeof w->hdr);
    for (uint32_t j = first; !ok && j < first + w->covers; j++)
      ok = inside(v->iov_base, v->iov_len, b->buf + b->offsets[j], b->lengths[j]);
    CHECK(ok, "iovec %d (%zu bytes) lies outside the packets it covers", k, v->iov_len);
  }
}

/* The write's bytes (virtio header, then the packet), copied into out; returns their number. */
static size_t copy_write(const vnet_write *w, uint8_t *out, size_t room) {
  size_t at = 0;
  for (int k = 0; k < w->niov; k++) {
    CHECK(w->iov[k].iov_len <= room - at, "a write larger than %zu bytes", room);
    memcpy(out + at, w->iov[k].iov_base, w->iov[k].iov_len);
    at += w->iov[k].iov_len;
  }
  return at;
}

/* A valid super-packet of the segmenting round: its shape and layout, payload and MSS. */
typedef struct {
  shape s;
  layout L;
  const uint8_t *payload;
  uint32_t payload_len, mss;
} super_case;

/* Coalescing planning over the segments of c (segs[k], lens[k] bytes each). Sometimes one segment is
 * corrupted first (a payload byte: its TCP checksum no longer holds; or its IPv4 header checksum): it must be
 * written alone, as it came. */
static void coalesce_segments(const super_case *c, uint8_t *const *segs, const uint32_t *lens, uint32_t nseg,
                              totals *t) {
  const shape *s = &c->s;
  const layout *L = &c->L;
  uint32_t payload_len = c->payload_len, mss = c->mss;
  uint8_t *payload = must_malloc(payload_len);
  memcpy(payload, c->payload, payload_len);
  gapped g;
  gapped_init(&g, segs, lens, nseg);
  /* without DF, Linux coalesces IPv4 segments only while their ids go up by one: give them all one id */
  bool fixed_ids = !s->v6 && !s->df && nseg >= 2 && chance(30);
  for (uint32_t k = 0; fixed_ids && k < nseg; k++) {
    uint8_t *seg = g.buf + g.offsets[k];
    wr16(seg + 4, s->id);
    wr16(seg + 10, 0);
    wr16(seg + 10, ~ref_add(seg, L->l4, 0));
  }
  uint32_t corrupt = UINT32_MAX;
  if (!fixed_ids && nseg >= 2 && payload_len > 0 && chance(30)) {
    corrupt = below(nseg);
    uint8_t *seg = g.buf + g.offsets[corrupt];
    if (!s->v6 && chance(50)) {
      seg[10] ^= 0x5a; /* the IPv4 header checksum only */
    } else if (lens[corrupt] > L->hdr) {
      uint32_t at = below(lens[corrupt] - L->hdr);
      seg[L->hdr + at] ^= 0xff;
      payload[corrupt * mss + at] ^= 0xff; /* the stream the writes carry has the corruption too */
    } else {
      corrupt = UINT32_MAX;
    }
  }
  packet_batch b = gapped_batch(&g, false);
  uint32_t i = 0, at = 0, outputs = 0, expected = 0;
  /* the runs Linux-style coalescing must make: up to 64 segments and 64 KiB each (one segment alone: plain) */
  for (uint32_t j = 0; j < nseg;) {
    uint32_t n = 0, bytes = L->hdr;
    while (j + n < nseg && n < MAX_SEGMENTS && bytes + (lens[j + n] - L->hdr) <= IP_MAX_BYTES)
      bytes += lens[j + n++] - L->hdr;
    expected++;
    j += n;
  }
  if (payload_len == 0) expected = nseg; /* pure ACKs are never coalesced */
  vnet_write w;
  while (i < nseg) {
    plan_vnet_write(&b, i, true, &w);
    check_iovecs(&w, &b, i);
    CHECK(!w.bad && w.covers >= 1 && i + w.covers <= nseg, "covers %u at %u of %u", w.covers, i, nseg);
    size_t n = copy_write(&w, scratch_a, 65535 + 40 + VNET_HDR_BYTES);
    uint8_t *pkt = scratch_a + VNET_HDR_BYTES;
    uint32_t len = (uint32_t)(n - VNET_HDR_BYTES);
    CHECK(corrupt < i || corrupt >= i + w.covers || w.covers == 1, "a corrupt segment %u was coalesced", corrupt);
    CHECK(!fixed_ids || w.covers == 1, "segments without DF and with one id were coalesced");
    if (w.covers == 1) {
      CHECK(w.vh.flags == 0 && w.vh.gso_type == 0, "a lone segment behind a zero header");
      CHECK(len == lens[i] && memcmp(pkt, g.buf + g.offsets[i], len) == 0, "a lone segment as it came");
    } else {
      t->coalesced_runs++;
      CHECK(w.vh.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM && w.vh.gso_size == mss && w.vh.csum_start == L->l4 &&
                w.vh.csum_offset == 16 && w.vh.hdr_len == L->hdr &&
                (w.vh.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) ==
                    (s->v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4),
            "the GSO header of a coalesced run");
      CHECK(complete_checksum(pkt, len, w.vh.csum_start, w.vh.csum_offset), "completing its checksum");
      t->completions++;
      CHECK(ref_valid(pkt, len, s, L), "a coalesced super-packet with a valid checksum once completed");
    }
    CHECK(at + (len - L->hdr) <= payload_len && memcmp(pkt + L->hdr, payload + at, len - L->hdr) == 0,
          "the run's payload continues the stream at %u", at);
    at += len - L->hdr;
    i += w.covers;
    outputs++;
  }
  CHECK(at == payload_len, "the writes carry the whole payload (%u of %u)", at, payload_len);
  if (fixed_ids) expected = nseg;
  CHECK(corrupt != UINT32_MAX || outputs == expected, "%u writes for %u segments, %u expected", outputs, nseg,
        expected);
  t->writes += outputs;
  gapped_free(&g);
  free(payload);
}

/* Sets the first payload word of every segment so that the segment's UDP checksum comes out as 0, which
 * must go out as 0xffff (0 means "no checksum"). */
static void zero_udp_checksums(const shape *s, uint8_t *payload, uint32_t payload_len, uint32_t mss) {
  for (uint32_t at = 0; at + 2 <= payload_len; at += mss) {
    uint32_t plen = payload_len - at < mss ? payload_len - at : mss;
    payload[at] = payload[at + 1] = 0;
    layout M = build(s, payload + at, plen, scratch_b);
    /* the checksum of the segment with the word 0 is ~S; the word ~S makes the sum 0xffff, the checksum 0 */
    memcpy(payload + at, scratch_b + M.l4 + 6, 2);
    if (mss > payload_len - at) break;
  }
}

static void segment_round(totals *t) {
  shape s;
  bool for_coalescing = chance(50);
  random_shape(&s, for_coalescing);
  uint32_t mss = MSS_CHOICES[below(sizeof MSS_CHOICES / sizeof MSS_CHOICES[0])];
  if (for_coalescing || chance(50)) mss = MSS_CHOICES[3 + below(6)]; /* the realistic ones */
  uint32_t max_payload = 65535 - (s.v6 ? 8 * s.extensions : 20 + s.ip_options) - (s.udp ? 8 : 20 + s.tcp_options);
  uint32_t payload_len = chance(80) ? below(max_payload + 1) : below(3000);
  if (mss < 88 && payload_len > 20 * mss) payload_len = below(20 * mss + 1); /* at most a few hundred segments */
  uint8_t *payload = must_malloc(payload_len);
  fill_random(payload, payload_len);
  if (s.udp && chance(30)) zero_udp_checksums(&s, payload, payload_len, mss);
  layout L = build(&s, payload, payload_len, scratch_a);
  uint8_t *whole = must_malloc(L.len);
  memcpy(whole, scratch_a, L.len);
  uint8_t *sp = must_malloc(L.len); /* the super-packet, exactly its size */
  memcpy(sp, whole, L.len);
  make_partial(sp, &s, &L);

  segment_plan plan;
  CHECK(plan_segments(sp, L.len, mss, &plan), "a valid super-packet can be cut");
  uint32_t nseg = payload_len <= mss ? 1 : (payload_len + mss - 1) / mss;
  CHECK(plan.nseg == nseg && plan.hdr == L.hdr && plan.payload == payload_len, "the plan of %u segments", nseg);
  uint8_t **segs = must_malloc(nseg * sizeof *segs);
  uint32_t *lens = must_malloc(nseg * sizeof *lens);
  for (uint32_t k = 0; k < nseg; k++) {
    uint8_t *head = must_malloc(plan.hdr); /* exactly the header: writing past it is caught */
    uint32_t plen = write_segment_header(&plan, k, head);
    uint32_t at = k * mss, want = payload_len - at < mss ? payload_len - at : mss;
    CHECK(plen == want, "segment %u payload %u, %u expected", k, plen, want);
    CHECK(segment_payload(&plan, k) == sp + L.hdr + at, "segment %u's payload in place", k);
    segs[k] = must_malloc(L.hdr + plen);
    memcpy(segs[k], head, L.hdr);
    memcpy(segs[k] + L.hdr, segment_payload(&plan, k), plen);
    lens[k] = L.hdr + plen;
    free(head);
    /* what the independent builder makes of segment k */
    shape e = s;
    e.id = (uint16_t)(s.id + k);
    e.seq = s.seq + at;
    if (k > 0) e.flags &= (uint8_t)~0x80;                 /* CWR on the first only */
    if (k + 1 < nseg) e.flags &= (uint8_t)~(0x01 | 0x08); /* FIN and PSH on the last only */
    layout M = build(&e, payload + at, plen, scratch_b);
    CHECK(M.len == lens[k] && memcmp(scratch_b, segs[k], M.len) == 0,
          "segment %u of %u (%s/IPv%d, MSS %u) as the builder makes it", k, nseg, s.udp ? "UDP" : "TCP",
          s.v6 ? 6 : 4, mss);
    CHECK(ref_valid(segs[k], lens[k], &s, &M), "segment %u has valid checksums", k);
  }
  t->super_packets++;
  t->segments += nseg;
  if (for_coalescing && nseg <= 20 * MAX_SEGMENTS) {
    super_case c = {s, L, payload, payload_len, mss};
    coalesce_segments(&c, segs, lens, nseg, t);
  }
  /* the partial checksum completed as a NIC would gives the original packet back */
  if (chance(20)) {
    CHECK(complete_checksum(sp, L.len, L.l4, s.udp ? 6 : 16), "completing a super-packet's checksum");
    t->completions++;
    CHECK(memcmp(sp, whole, L.len) == 0, "the completed super-packet is the packet built whole");
  }
  free(whole);
  for (uint32_t k = 0; k < nseg; k++) free(segs[k]);
  free(segs);
  free(lens);
  free(sp);
  free(payload);
}

/* ---- 3: malformed input ------------------------------------------------------------------------------ */

static uint32_t random_gso(void) {
  switch (below(5)) {
    case 0: return 0;
    case 1: return 1 + below(16);
    case 2: return MSS_CHOICES[below(sizeof MSS_CHOICES / sizeof MSS_CHOICES[0])];
    case 3: return 0xfff0 + below(32);
    default: return (uint32_t)next64();
  }
}

static void malformed_round(totals *t) {
  uint8_t *packets[8];
  uint32_t lens[8];
  uint32_t count = chance(50) ? 1 : 1 + below(8);
  for (uint32_t i = 0; i < count; i++) {
    lens[i] = malformed_packet(scratch_a, 65535 + 40);
    packets[i] = must_malloc(lens[i]); /* exactly its length */
    memcpy(packets[i], scratch_a, lens[i]);
    t->malformed++;

    /* segmenting */
    uint32_t gso = random_gso();
    segment_plan plan;
    if (plan_segments(packets[i], lens[i], gso, &plan)) {
      CHECK(gso > 0 && plan.nseg >= 1 && (uint64_t)plan.hdr + plan.payload <= lens[i], "a plan inside the packet");
      if (plan.nseg <= SEND_WIRE_MAX && (uint64_t)plan.nseg * plan.hdr <= SEND_HEADER_BYTES) {
        uint8_t *head = must_malloc(plan.hdr);
        uint32_t total = 0;
        for (uint32_t k = 0; k < plan.nseg; k++) {
          uint32_t plen = write_segment_header(&plan, k, head);
          CHECK(plen <= gso && segment_payload(&plan, k) + plen <= packets[i] + lens[i], "segment %u in bounds", k);
          total += plen;
        }
        CHECK(total == plan.payload, "the segments carry the payload");
        free(head);
      }
    }
    /* reading it with a random virtio header (the TUN reader), in a copy of its own */
    uint8_t *copy = must_malloc(lens[i]);
    memcpy(copy, packets[i], lens[i]);
    struct virtio_net_hdr vh;
    fill_random((uint8_t *)&vh, sizeof vh);
    if (chance(50)) vh.gso_type = (uint8_t)below(6) | (chance(20) ? VIRTIO_NET_HDR_GSO_ECN : 0);
    if (chance(50)) vh.flags = chance(50) ? VIRTIO_NET_HDR_F_NEEDS_CSUM : 0;
    if (chance(50)) {
      vh.csum_start = (uint16_t)below(lens[i] + 8);
      vh.csum_offset = (uint16_t)(chance(50) ? 16 : 6);
    }
    uint32_t len = lens[i];
    uint32_t word = gso_word_from_vnet(&vh, copy, &len);
    CHECK(len <= lens[i] && (word == 0 || len == lens[i]), "the reader's word %u and length %u", word, len);
    /* the writer's virtio header for it */
    struct virtio_net_hdr out;
    if (vnet_for(packets[i], lens[i], gso, &out) && gso)
      CHECK((uint32_t)out.csum_start + out.csum_offset + 2 <= lens[i], "NEEDS_CSUM inside the packet");
    /* completing a checksum anywhere */
    memcpy(copy, packets[i], lens[i]);
    uint32_t start = below(lens[i] + 4), offset = below(64);
    if (complete_checksum(copy, lens[i], start, offset)) {
      t->completions++;
      CHECK(start + offset + 2 <= lens[i], "a completed checksum inside the packet");
    }
    free(copy);
  }
  /* coalescing planning over the batch */
  gapped g;
  gapped_init(&g, packets, lens, count);
  bool with_gso = chance(50);
  for (uint32_t i = 0; i < count; i++) g.gso[i] = chance(70) ? 0 : random_gso();
  packet_batch b = gapped_batch(&g, with_gso);
  bool coalesce = chance(80);
  vnet_write w;
  for (uint32_t i = 0; i < count;) {
    plan_vnet_write(&b, i, coalesce, &w);
    CHECK(w.covers >= 1 && i + w.covers <= count, "covers %u at %u of %u", w.covers, i, count);
    if (!w.bad) {
      check_iovecs(&w, &b, i);
      copy_write(&w, scratch_b, 65535 + 40 + VNET_HDR_BYTES);
    }
    i += w.covers;
  }
  gapped_free(&g);
  for (uint32_t i = 0; i < count; i++) free(packets[i]);
}

/* ---- 4: checksum sums -------------------------------------------------------------------------------- */

static void sum_round(totals *t) {
  uint32_t len = chance(50) ? below(100) : below(5000);
  uint32_t skew = below(8);
  uint8_t *buf = must_malloc(len + skew);
  fill_random(buf, len + skew);
  uint8_t *p = buf + skew; /* any alignment */
  uint64_t initial = chance(50) ? 0 : below(1u << 20);
  uint16_t folded = csum_fold(csum_add(p, len, initial));
  uint8_t host[2];
  put_host16(host, folded);
  /* the initial value in host order: its 16-bit words taken as host words, so add them byte-swapped here */
  uint8_t init_bytes[4];
  uint32_t initial32 = (uint32_t)initial;
  memcpy(init_bytes, &initial32, 4);
  uint32_t want = ref_add(p, len, ref_add(init_bytes, 4, 0));
  CHECK(rd16(host) == want || (rd16(host) == 0xffff && want == 0) || (rd16(host) == 0 && want == 0xffff),
        "csum_add of %u bytes at +%u: %04x, reference %04x", len, skew, rd16(host), want);
  t->sums++;
  free(buf);
}

/* ---- 5: headers that pass 65,535 bytes --------------------------------------------------------------- */

/* An IPv6 super-packet (TCP, 4-byte segments) with `extensions` extension headers of 8 * (1 + units) bytes
 * each and as much payload as fits (at most 40 bytes), through vnet_for and plan_vnet_write: false and
 * rejected when its headers (IPv6, extension and TCP) do not fit the virtio header's 16-bit hdr_len and
 * csum_start, else a header that says exactly where they end. */
static void huge_headers(uint32_t extensions, uint8_t units) {
  shape s;
  memset(&s, 0, sizeof s);
  s.v6 = true;
  s.extensions = extensions;
  s.ext_units = units;
  s.flags = 0x10;
  uint32_t hdr = 40 + extensions * extension_bytes(&s) + 20, room = 40 + 0xffff - hdr;
  CHECK(hdr <= 40 + 0xffff, "%u bytes of headers cannot be an IPv6 packet", hdr);
  uint8_t payload[40] = {0};
  layout L = build(&s, payload, room < sizeof payload ? room : sizeof payload, scratch_a);
  uint8_t *p = must_malloc(L.len);
  memcpy(p, scratch_a, L.len);
  make_partial(p, &s, &L);
  struct virtio_net_hdr vh;
  bool fits = L.hdr <= 0xffff;
  CHECK(vnet_for(p, L.len, 4, &vh) == fits, "vnet_for with %u bytes of headers", L.hdr);
  if (fits) CHECK(vh.hdr_len == L.hdr && vh.csum_start == L.l4, "hdr_len %u, csum_start %u", vh.hdr_len, vh.csum_start);
  uint32_t offsets[1] = {0}, lengths[1] = {L.len}, gso[1] = {4};
  packet_batch b = {p, offsets, lengths, gso, NULL, 1};
  vnet_write w;
  plan_vnet_write(&b, 0, true, &w);
  CHECK(w.bad == !fits && w.covers == 1, "a write of %u bytes of headers planned (bad %d)", L.hdr, w.bad);
  free(p);
}

int main(int argc, char **argv) {
  uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 0x0a4b6e7ull;
  uint32_t super_packets = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 2000;
  uint32_t malformed = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 0) : 20000;
  rng_state = seed;
  scratch_a = must_malloc(65535 + 40 + VNET_HDR_BYTES);
  scratch_b = must_malloc(65535 + 40 + VNET_HDR_BYTES);
  totals t = {0};
  for (uint32_t n = 0; n < super_packets; n++) segment_round(&t);
  while (t.malformed < malformed) malformed_round(&t);
  for (uint32_t n = 0; n < malformed; n++) sum_round(&t);
  huge_headers(93, 87); /* 93 headers of 704 bytes: 65,532 bytes of headers with TCP's, which fit */
  huge_headers(92, 88); /* 92 of 712: 65,564, which do not */
  free(scratch_a);
  free(scratch_b);
  printf("fuzz_offload: seed 0x%llx: %u super-packets cut into %u segments, %u coalescing writes (%u runs), "
         "%u malformed inputs, %u checksum completions, %u checksum sums: all checks passed\n",
         (unsigned long long)seed, t.super_packets, t.segments, t.writes, t.coalesced_runs, t.malformed,
         t.completions, t.sums);
  return 0;
}
