/*
 * fuzz.h: what the sanitizer harnesses of native/test share (fuzz_offload.c, fuzz_udp.c, fuzz_tun.c; each
 * defines FUZZ_NAME, its name in failure messages, before including it): ASan poisoning, CHECK, a seeded
 * splitmix64, a reference RFC 1071 sum written out word by word, an independent packet builder (IPv4 with
 * options, IPv6 with extension headers of up to 2 KiB each, TCP with options, UDP), a mutator that makes
 * malformed inputs from its packets, and batches whose packets are each followed by a poisoned gap.
 * Everything is static inline: a harness that does not use a function gets no warning about it.
 */
#ifndef FUZZ_H
#define FUZZ_H

#ifndef FUZZ_NAME
#error "define FUZZ_NAME (the harness's name, for failure messages) before including fuzz.h"
#endif

#include <stdio.h>
#include <stdlib.h>

#include "oaknet.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define CHECK(cond, ...)                                                                                       \
  do {                                                                                                         \
    if (!(cond)) {                                                                                             \
      fprintf(stderr, FUZZ_NAME ": check failed at line %d (%s): ", __LINE__, #cond);                          \
      fprintf(stderr, __VA_ARGS__);                                                                            \
      fprintf(stderr, "\n");                                                                                   \
      abort();                                                                                                 \
    }                                                                                                          \
  } while (0)

/* ---- random numbers (splitmix64: reproducible from the seed) ----------------------------------------- */

static uint64_t rng_state;
static inline uint64_t next64(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static inline uint32_t below(uint32_t n) { return n ? (uint32_t)(next64() % n) : 0; }
static inline bool chance(unsigned percent) { return below(100) < percent; }
static inline void fill_random(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)next64();
}

static inline void *must_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  CHECK(p, "out of memory (%zu bytes)", n);
  return p;
}

/* ---- the reference checksum: 16-bit big-endian words, as RFC 1071 writes it out ----------------------- */

static inline uint32_t ref_add(const uint8_t *p, size_t len, uint32_t sum) {
  for (size_t i = 0; i + 1 < len; i += 2) {
    sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    sum = (sum & 0xffff) + (sum >> 16);
  }
  if (len & 1) sum += (uint32_t)p[len - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

/* The pseudo-header sum for a transport of l4_len bytes (ref_add form). */
static inline uint32_t ref_pseudo(const uint8_t *ip, bool v6, uint8_t proto, uint32_t l4_len) {
  uint32_t sum = v6 ? ref_add(ip + 8, 32, 0) : ref_add(ip + 12, 8, 0);
  sum += proto + (l4_len >> 16) + (l4_len & 0xffff);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

/* ---- the independent packet builder ------------------------------------------------------------------ */

typedef struct {
  bool v6, udp, df;
  uint32_t ip_options;  /* IPv4 option bytes (multiple of 4) */
  uint32_t extensions;  /* IPv6: extension headers (hop-by-hop, destination options, routing, in turn) */
  uint8_t ext_units;    /* ... each 8 * (1 + ext_units) bytes (0: 8 bytes; 255: 2 KiB, the most one can be) */
  uint32_t tcp_options; /* multiple of 4 */
  uint8_t flags, tos, ttl;
  uint16_t id, sport, dport, window;
  uint32_t seq, ack;
  uint8_t src[16], dst[16];
} shape;

typedef struct {
  uint32_t l4, l4_hdr, hdr, len;
} layout;

static const uint8_t EXTENSION_TYPES[3] = {0, 60, 43};

static inline uint32_t extension_bytes(const shape *s) { return 8 * (1 + (uint32_t)s->ext_units); }

/* Writes the packet of `s` with `payload` to out (room: 65535 + 40, and the caller keeps the IP length within
 * 65,535); full checksums. */
static inline layout build(const shape *s, const uint8_t *payload, uint32_t payload_len, uint8_t *out) {
  layout L;
  uint8_t proto = s->udp ? IPPROTO_UDP : IPPROTO_TCP;
  L.l4 = s->v6 ? 40 + s->extensions * extension_bytes(s) : 20 + s->ip_options;
  L.l4_hdr = s->udp ? 8 : 20 + s->tcp_options;
  L.hdr = L.l4 + L.l4_hdr;
  L.len = L.hdr + payload_len;
  memset(out, 0, L.hdr);
  if (s->v6) {
    out[0] = 0x60 | (s->tos >> 4);
    out[1] = (uint8_t)(s->tos << 4);
    wr16(out + 4, L.len - 40);
    out[7] = s->ttl;
    memcpy(out + 8, s->src, 16);
    memcpy(out + 24, s->dst, 16);
    uint8_t *next = out + 6;
    for (uint32_t e = 0; e < s->extensions; e++) {
      uint8_t *x = out + 40 + e * extension_bytes(s);
      *next = EXTENSION_TYPES[e % 3];
      x[1] = s->ext_units;
      if (*next == 43) { /* routing: type 0 with segments left 0 */
        x[2] = 0;
        x[3] = 0;
      } else { /* PadN with 4 bytes, then Pad1s (zeros) to the end */
        x[2] = 1;
        x[3] = 4;
      }
      next = x;
    }
    *next = proto;
  } else {
    out[0] = (uint8_t)(0x40 | (L.l4 / 4));
    out[1] = s->tos;
    wr16(out + 2, L.len);
    wr16(out + 4, s->id);
    wr16(out + 6, s->df ? 0x4000 : 0);
    out[8] = s->ttl;
    out[9] = proto;
    memcpy(out + 12, s->src, 4);
    memcpy(out + 16, s->dst, 4);
    memset(out + 20, 1, s->ip_options); /* NOPs */
    wr16(out + 10, ~ref_add(out, L.l4, 0));
  }
  uint8_t *t = out + L.l4;
  wr16(t, s->sport);
  wr16(t + 2, s->dport);
  if (s->udp) {
    wr16(t + 4, L.l4_hdr + payload_len);
  } else {
    wr32(t + 4, s->seq);
    wr32(t + 8, s->ack);
    t[12] = (uint8_t)((L.l4_hdr / 4) << 4);
    t[13] = s->flags;
    wr16(t + 14, s->window);
    memset(t + 20, 1, s->tcp_options);
  }
  memcpy(out + L.hdr, payload, payload_len);
  uint32_t l4_len = L.len - L.l4;
  uint32_t c = (uint16_t)~ref_add(t, l4_len, ref_pseudo(out, s->v6, proto, l4_len));
  if (s->udp && c == 0) c = 0xffff;
  wr16(t + (s->udp ? 6 : 16), c);
  return L;
}

/* Makes a full packet a kernel-style super-packet: its transport checksum field holds the folded pseudo-header
 * sum of the whole transport length. */
static inline void make_partial(uint8_t *p, const shape *s, const layout *L) {
  uint32_t l4_len = L->len - L->l4;
  wr16(p + L->l4 + (s->udp ? 6 : 16), ref_pseudo(p, s->v6, s->udp ? IPPROTO_UDP : IPPROTO_TCP, l4_len));
}

static inline bool ref_valid(const uint8_t *p, uint32_t len, const shape *s, const layout *L) {
  if (!s->v6 && ref_add(p, L->l4, 0) != 0xffff) return false;
  uint32_t l4_len = len - L->l4;
  return ref_add(p + L->l4, l4_len, ref_pseudo(p, s->v6, s->udp ? IPPROTO_UDP : IPPROTO_TCP, l4_len)) == 0xffff;
}

static inline void random_shape(shape *s, bool for_coalescing) {
  memset(s, 0, sizeof *s);
  s->v6 = chance(50);
  s->udp = !for_coalescing && chance(25);
  s->df = chance(70);
  if (!for_coalescing) {
    if (!s->v6 && chance(30)) s->ip_options = 4 * below(11);
    if (s->v6 && chance(30)) s->extensions = 1 + below(3);
  }
  if (chance(60)) s->tcp_options = 4 * below(11);
  static const uint8_t FLAGS[] = {0x10, 0x18, 0x19, 0x10 | 0x80 | 0x40, 0x10 | 0x80 | 0x08 | 0x01};
  s->flags = for_coalescing ? (chance(50) ? 0x10 : 0x18) : FLAGS[below(sizeof FLAGS)];
  s->tos = (uint8_t)next64();
  s->ttl = (uint8_t)(1 + below(255));
  s->id = (uint16_t)next64();
  s->sport = (uint16_t)next64();
  s->dport = (uint16_t)next64();
  s->window = (uint16_t)next64();
  s->seq = (uint32_t)next64();
  s->ack = (uint32_t)next64();
  fill_random(s->src, 16);
  fill_random(s->dst, 16);
}

/* ---- malformed input --------------------------------------------------------------------------------- */

/* A random input: a mutated valid packet (mostly), or random bytes. Returns its length (in out, room bytes). */
static inline uint32_t malformed_packet(uint8_t *out, uint32_t room) {
  if (chance(15)) {
    uint32_t len = below(chance(50) ? 80 : 3000);
    if (len > room) len = room;
    fill_random(out, len);
    if (len && chance(70)) out[0] = (uint8_t)((chance(50) ? 0x40 : 0x60) | (out[0] & 0x0f));
    return len;
  }
  shape s;
  random_shape(&s, chance(30));
  uint32_t payload_len = chance(50) ? below(200) : below(20000);
  uint8_t *payload = must_malloc(payload_len);
  fill_random(payload, payload_len);
  layout L = build(&s, payload, payload_len, out);
  free(payload);
  if (chance(50)) make_partial(out, &s, &L);
  uint32_t len = L.len;
  unsigned mutations = below(7);
  for (unsigned m = 0; m < mutations; m++) {
    uint32_t at = below(L.hdr + 8 < len ? L.hdr + 8 : len);
    switch (below(7)) {
      case 0: out[at] ^= (uint8_t)(1u << below(8)); break;
      case 1: out[at] = (uint8_t)next64(); break;
      case 2: /* a length field: IPv4 total, or IPv6 payload length */
        wr16(out + (s.v6 ? 4 : 2), (uint32_t)next64());
        break;
      case 3: /* header lengths: IHL, or the next header; TCP data offset */
        if (s.v6) out[6] = (uint8_t)next64();
        else out[0] = (uint8_t)(0x40 | below(16));
        if (!s.udp) out[L.l4 + 12] = (uint8_t)(below(16) << 4);
        break;
      case 4: /* fragment fields */
        if (!s.v6) wr16(out + 6, (uint32_t)next64());
        break;
      case 5: /* truncated, with the length field saying so (header chains then end at the buffer's end) */
        len = below(len + 1);
        if (s.v6 && len >= 40) wr16(out + 4, len - 40);
        else if (!s.v6 && len >= 4) wr16(out + 2, len);
        break;
      default: len = below(len + 1); break; /* truncated */
    }
  }
  return len;
}

/* ---- batches with poisoned gaps ---------------------------------------------------------------------- */

/* A batch of packets in one buffer, each followed by a poisoned gap, so reading past one is caught. */
typedef struct {
  uint8_t *buf;
  size_t size;
  uint32_t offsets[MAX_SEGMENTS * 20], lengths[MAX_SEGMENTS * 20], gso[MAX_SEGMENTS * 20];
  uint32_t count;
} gapped;

#define GAP 16

static inline void gapped_init(gapped *g, uint8_t *const *packets, const uint32_t *lengths, uint32_t count) {
  size_t size = 0;
  for (uint32_t i = 0; i < count; i++) size += lengths[i] + GAP;
  g->buf = must_malloc(size);
  g->size = size;
  g->count = count;
  size_t at = 0;
  for (uint32_t i = 0; i < count; i++) {
    memcpy(g->buf + at, packets[i], lengths[i]);
    g->offsets[i] = (uint32_t)at;
    g->lengths[i] = lengths[i];
    g->gso[i] = 0;
    POISON(g->buf + at + lengths[i], GAP);
    at += lengths[i] + GAP;
  }
}

static inline void gapped_free(gapped *g) {
  UNPOISON(g->buf, g->size);
  free(g->buf);
}

static inline packet_batch gapped_batch(gapped *g, bool with_gso) {
  return (packet_batch){g->buf, g->offsets, g->lengths, with_gso ? g->gso : NULL, NULL, g->count};
}

/* Whether [p, p + n) lies inside [lo, lo + size). */
static inline bool inside(const void *p, size_t n, const void *lo, size_t size) {
  const uint8_t *x = p, *a = lo;
  return x >= a && n <= size && (size_t)(x - a) <= size - n;
}

#endif /* FUZZ_H */
