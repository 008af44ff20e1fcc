/*
 * fuzz_wg.c: native/wg.c (WireGuard transport messages) under AddressSanitizer and UndefinedBehaviorSanitizer,
 * with a fixed seed, linked with Debian's libcrypto (libssl-dev) where the addon uses Node's. src/dataplane/
 * tun/sanitizers.test.ts builds and runs it:
 *
 *   gcc -std=gnu11 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
 *       -D_GNU_SOURCE -I native native/wg.c native/udp.c native/offload.c native/checksum.c \
 *       native/test/fuzz_wg.c -lcrypto -o fuzz_wg
 *   ./fuzz_wg [seed [rounds [send-rounds]]]
 *
 * Two tables, a sender's and a receiver's, with sessions installed in both directions (random keys and
 * indexes; now and then one is reinstalled with new ones). Each round opens one batch (wg_open_batch) of up
 * to 64 datagrams, each in a buffer of exactly its length (poisoned gaps), in random order:
 *   - sealed packets (fuzz.h's random and mutated IP packets, random bytes, keepalives), sealed by wg_sealer
 *     in two parts split anywhere and compared byte for byte with a twin table sealing them whole: each must
 *     open with its slot to the plaintext trimmed as an independent trim here says (or be Malformed);
 *   - sealed packets mutated (a bit of header, ciphertext or tag flipped, truncated, extended): never opened;
 *   - replays of messages opened in earlier rounds: Replayed;
 *   - type-4 headers with random indexes and counters over random bytes (counters at the exhaustion limit
 *     with a known index: Exhausted);
 *   - anything else (random bytes, IP packets): NotTransport and untouched, or Malformed when empty.
 * A datagram that did not open keeps its offset and length.
 *
 * Then sealed sends: udp_send (udp.c, with offload.c and checksum.c) with sessions over a real loopback UDP
 * socket with GSO, batches of ordinary packets and TCP/UDP super-packets with random slots (-1, installed, a
 * slot without keys) and some packets too big to seal; every wire datagram is accounted for (sent, rejected,
 * busy, unsent or seal-dropped, exactly the expected seal drops), every one sent arrives, and each arrives
 * either sealed (it opens, and its payload is a sealed packet's) or in plaintext (its payload is an unsealed
 * packet's): nothing of a sealed packet ever goes out in plaintext. Any failure aborts with a message; a
 * clean run prints one summary line and exits 0.
 */
#define FUZZ_NAME "fuzz_wg"
#include <arpa/inet.h>
#include <poll.h>
#include <unistd.h>

#include "fuzz.h"

#define SLOTS 8
#define MAX_DATAGRAMS 64
#define ROOM (65535 + 64)
#define POOL 256
#define LIMIT (UINT64_MAX - 8192u)

typedef struct {
  uint32_t datagrams, opened, keepalives, malformed_opened, mutated, replayed, headers, exhausted, other,
      reinstalls, verdicts[7];
} totals;

static wg_table *tx, *twin, *rx;
static uint32_t rx_index[SLOTS];

/* a replay pool of opened messages, per slot */
typedef struct {
  uint8_t *msg;
  uint32_t len;
  uint32_t slot;
} kept;
static kept pool[POOL];
static uint32_t pooled;

static void install(uint32_t slot) {
  uint8_t k1[32], k2[32];
  fill_random(k1, 32);
  fill_random(k2, 32);
  uint32_t index;
  do index = (uint32_t)next64();
  while (wg_lookup(rx, index) >= 0 && (uint32_t)wg_lookup(rx, index) != slot);
  uint32_t tx_index = (uint32_t)next64();
  CHECK(wg_install(tx, slot, k1, k2, tx_index ^ slot, index) == 0, "install tx");
  CHECK(wg_install(twin, slot, k1, k2, tx_index ^ slot, index) == 0, "install twin");
  CHECK(wg_install(rx, slot, k2, k1, index, tx_index ^ slot) == 0, "install rx");
  CHECK(wg_lookup(rx, index) == (int32_t)slot, "lookup after install");
  rx_index[slot] = index;
  for (uint32_t i = 0; i < pooled; i++)
    if (pool[i].slot == slot) {
      free(pool[i].msg);
      pool[i] = pool[--pooled];
      i--;
    }
}

/* The independent trim: the IP header's length, the (padded) plaintext's for non-IP, -1 when the header says
 * more. */
static int64_t ref_trim(const uint8_t *p, uint32_t len) {
  if (len == 0) return 0;
  if ((p[0] >> 4) == 4) {
    if (len < 20) return -1;
    uint32_t t = ((uint32_t)p[2] << 8) | p[3];
    return t < 20 || t > len ? -1 : (int64_t)t;
  }
  if ((p[0] >> 4) == 6) {
    if (len < 40) return -1;
    uint32_t t = 40 + (((uint32_t)p[4] << 8) | p[5]);
    return t > len ? -1 : (int64_t)t;
  }
  return len;
}

typedef struct {
  uint8_t *msg;
  uint32_t len;
  int kind; /* 0 sealed, 1 mutated, 2 replay, 3 header, 4 other */
  int32_t want; /* kind 0: slot or WG_MALFORMED; 2: WG_REPLAYED; 3: WG_EXHAUSTED or 0 (any < 0) */
  uint8_t *plain; /* kind 0: the plaintext */
  int64_t plain_len;
} input;

static uint32_t seal_random(uint32_t slot, uint8_t *plain, uint32_t *plain_len, uint8_t *out) {
  uint32_t len;
  if (chance(5)) len = 0;
  else len = malformed_packet(plain, 20000 + 40);
  *plain_len = len;
  uint32_t split = below(len + 1);
  uint32_t sealed = wg_sealed_len(len);
  CHECK(wg_seal(tx, slot, plain, len, NULL, 0, out, sealed - 1) == -1, "sealing into too little room");
  int64_t n = wg_sealer(tx, slot, plain, split, plain + split, len - split, out, ROOM);
  CHECK(n == (int64_t)sealed, "sealed %lld bytes of %u", (long long)n, len);
  uint8_t *whole = must_malloc(sealed);
  CHECK(wg_seal(twin, slot, plain, len, NULL, 0, whole, sealed) == (int64_t)sealed, "twin seal");
  CHECK(memcmp(whole, out, sealed) == 0, "split seal differs from whole seal (len %u, split %u)", len, split);
  free(whole);
  CHECK(out[0] == 4 && !out[1] && !out[2] && !out[3], "header type");
  return sealed;
}

static void round_(totals *t) {
  uint32_t count = 1 + below(MAX_DATAGRAMS);
  input in[MAX_DATAGRAMS];
  uint8_t *scratch = must_malloc(ROOM);
  for (uint32_t i = 0; i < count; i++) {
    input *x = &in[i];
    memset(x, 0, sizeof *x);
    x->msg = must_malloc(ROOM);
    uint32_t slot = below(SLOTS), r = below(100);
    if (r < 40 || (r < 75 && r >= 60 && pooled == 0)) {
      x->kind = 0;
      x->plain = must_malloc(ROOM);
      uint32_t pl;
      x->len = seal_random(slot, x->plain, &pl, x->msg);
      /* the receiver sees the zero-padded plaintext: the IP header's length is checked against that */
      uint32_t padded = (pl + 15) & ~15u;
      memset(x->plain + pl, 0, padded - pl);
      x->plain_len = ref_trim(x->plain, padded);
      x->want = x->plain_len < 0 ? WG_MALFORMED : (int32_t)slot;
    } else if (r < 60) {
      x->kind = 1;
      uint32_t pl;
      x->len = seal_random(slot, scratch, &pl, x->msg);
      switch (below(4)) {
        case 0: x->msg[4 + below(x->len - 4)] ^= (uint8_t)(1u << below(8)); break; /* index, counter, body, tag */
        case 1: x->msg[x->len - 1 - below(16)] ^= (uint8_t)(1u << below(8)); break; /* the tag */
        case 2: x->len = below(x->len); break;
        default: {
          uint32_t more = 1 + below(40);
          fill_random(x->msg + x->len, more);
          x->len += more;
        }
      }
    } else if (r < 75) {
      x->kind = 2;
      const kept *k = &pool[below(pooled)];
      memcpy(x->msg, k->msg, k->len);
      x->len = k->len;
      x->want = WG_REPLAYED;
    } else if (r < 90) {
      x->kind = 3;
      x->len = 4 + below(200);
      fill_random(x->msg, x->len);
      x->msg[0] = 4;
      x->msg[1] = x->msg[2] = x->msg[3] = 0;
      bool known = chance(60);
      if (x->len >= 8 && known) memcpy(x->msg + 4, &rx_index[slot], 4); /* little-endian host */
      if (x->len >= 16 && chance(30)) {
        uint64_t c = LIMIT + below(8192);
        memcpy(x->msg + 8, &c, 8);
        if (known && x->len >= 32) x->want = WG_EXHAUSTED;
      }
    } else {
      x->kind = 4;
      x->len = chance(10) ? 0 : malformed_packet(x->msg, 3000);
      if (x->len >= 4 && x->msg[0] == 4 && !x->msg[1] && !x->msg[2] && !x->msg[3]) x->msg[1] = 1;
    }
  }
  /* random order: counters within a round arrive out of order (all within the window) */
  for (uint32_t i = count; i > 1; i--) {
    uint32_t j = below(i);
    input tmp = in[i - 1];
    in[i - 1] = in[j];
    in[j] = tmp;
  }
  uint8_t *ptrs[MAX_DATAGRAMS];
  uint32_t lens[MAX_DATAGRAMS];
  for (uint32_t i = 0; i < count; i++) {
    ptrs[i] = in[i].msg;
    lens[i] = in[i].len;
  }
  gapped *g = must_malloc(sizeof *g);
  gapped_init(g, ptrs, lens, count);
  uint32_t offsets[MAX_DATAGRAMS];
  memcpy(offsets, g->offsets, sizeof offsets);
  int32_t verdicts[MAX_DATAGRAMS];
  wg_open_batch(rx, g->buf, g->offsets, g->lengths, count, verdicts);
  for (uint32_t i = 0; i < count; i++) {
    input *x = &in[i];
    int32_t v = verdicts[i];
    t->datagrams++;
    CHECK(v >= -6 && v < SLOTS, "verdict %d", v);
    t->verdicts[v < 0 ? -v : 0]++;
    if (v < 0) {
      CHECK(g->offsets[i] == offsets[i] && g->lengths[i] == x->len, "a datagram that did not open moved");
    } else {
      CHECK(g->offsets[i] == offsets[i] + 16, "offset of an opened datagram");
      CHECK(g->lengths[i] <= x->len - 32, "length of an opened datagram");
    }
    switch (x->kind) {
      case 0:
        CHECK(v == x->want, "sealed datagram: verdict %d, want %d", v, x->want);
        if (v >= 0) {
          CHECK(g->lengths[i] == x->plain_len, "trimmed to %u, want %lld", g->lengths[i], (long long)x->plain_len);
          CHECK(memcmp(g->buf + g->offsets[i], x->plain, g->lengths[i]) == 0, "plaintext differs");
          t->opened++;
          if (x->plain_len == 0) t->keepalives++;
        } else {
          t->malformed_opened++;
        }
        if (pooled < POOL) {
          pool[pooled].msg = must_malloc(x->len);
          memcpy(pool[pooled].msg, x->msg, x->len); /* the sealed bytes, from before opening */
          pool[pooled].len = x->len;
          pool[pooled].slot = (uint32_t)(v >= 0 ? v : -1);
          if (v >= 0) pooled++;
          else free(pool[pooled].msg);
        }
        break;
      case 1:
        CHECK(v < 0, "a mutated message opened");
        t->mutated++;
        break;
      case 2:
        CHECK(v == WG_REPLAYED, "a replay: verdict %d", v);
        t->replayed++;
        break;
      case 3:
        CHECK(v < 0, "a random type-4 message opened");
        if (x->want == WG_EXHAUSTED) {
          CHECK(v == WG_EXHAUSTED, "counter at the limit: verdict %d", v);
          t->exhausted++;
        }
        t->headers++;
        break;
      default:
        CHECK(v == (x->len == 0 ? WG_MALFORMED : WG_NOT_TRANSPORT), "other input: verdict %d", v);
        CHECK(memcmp(g->buf + g->offsets[i], x->msg, x->len) == 0, "not transport, but changed");
        t->other++;
    }
    free(x->msg);
    free(x->plain);
  }
  gapped_free(g);
  free(g);
  free(scratch);
  if (chance(3)) {
    install(below(SLOTS));
    t->reinstalls++;
  }
  if (chance(1)) { /* removed: its index is unknown, its slot seals nothing */
    uint32_t s = below(SLOTS);
    wg_remove(rx, s);
    CHECK(wg_lookup(rx, rx_index[s]) == -1, "lookup after remove");
    uint8_t out[64];
    wg_remove(tx, s);
    CHECK(wg_seal(tx, s, out, 0, NULL, 0, out, sizeof out) == -1, "sealing with a removed slot");
    wg_remove(twin, s);
    install(s);
  }
}

/* ---- sealed sends ------------------------------------------------------------------------------------ */

typedef struct {
  uint32_t rounds, packets, supers, wire, sent, sealed_in, plain_in, seal_dropped, gso_messages;
} send_totals;

#define SEALED_FILL 0xaa
#define PLAIN_FILL 0x55
#define SEND_PACKETS 24

static uint32_t build_packet(uint8_t *out, bool super, uint32_t *gso, bool huge, uint8_t fill) {
  shape s;
  random_shape(&s, false);
  uint32_t payload_len = super ? 1 + below(20000) : 1 + below(1500);
  if (huge) {
    s.v6 = s.udp = false;
    s.ip_options = s.tcp_options = 0;
    payload_len = 65460; /* 65,500 bytes: sent in plaintext, too big sealed (65,536 > 65,507) */
  }
  if (s.v6 && s.extensions) payload_len = payload_len > 8000 ? payload_len - 8000 : payload_len;
  uint8_t *payload = must_malloc(payload_len);
  memset(payload, fill, payload_len);
  layout L = build(&s, payload, payload_len, out);
  free(payload);
  static const uint32_t GSO[] = {536, 1000, 1220, 1400, 1448, 8000};
  *gso = super ? GSO[below(sizeof GSO / sizeof GSO[0])] : 0;
  if (super) make_partial(out, &s, &L);
  return L.len;
}

static void sealed_sends(uint32_t rounds, send_totals *t) {
  wg_table *stx = wg_create(3), *srx = wg_create(2);
  uint8_t k1[32], k2[32];
  fill_random(k1, 32);
  fill_random(k2, 32);
  CHECK(wg_install(stx, 0, k1, k2, 10, 20) == 0 && wg_install(srx, 0, k2, k1, 20, 10) == 0, "install 0");
  CHECK(wg_install(stx, 1, k2, k1, 11, 21) == 0 && wg_install(srx, 1, k1, k2, 21, 11) == 0, "install 1");
  /* slot 2 of stx has no keys */
  udp_socket sock;
  os_error e;
  CHECK(udp_open(0, true, NULL, &sock, &e), "udp_open: %s", strerror(e.err));
  int rx = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr = {htonl(INADDR_LOOPBACK)}};
  socklen_t alen = sizeof a;
  CHECK(rx >= 0 && bind(rx, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(rx, (struct sockaddr *)&a, &alen) == 0,
        "receiver: %s", strerror(errno));
  int bytes = 64 << 20;
  CHECK(setsockopt(rx, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) == 0,
        "SO_RCVBUFFORCE (needs CAP_NET_ADMIN): %s", strerror(errno));
  uint8_t to[ENDPOINT_BYTES] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
  memcpy(to + 16, &a.sin_port, 2);
  send_scratch sc = {must_malloc(SEND_WIRE_MAX * sizeof(wire_datagram)), must_malloc(SEND_HEADER_BYTES),
                     must_malloc(SEND_SEALED_BYTES)};
  uint8_t *buf = must_malloc(SEND_PACKETS * (65535 + 40));
  uint8_t *got = must_malloc(65536);
  uint8_t endpoints[SEND_PACKETS * ENDPOINT_BYTES];
  for (uint32_t n = 0; n < rounds; n++) {
    uint32_t offsets[SEND_PACKETS], lengths[SEND_PACKETS], gso[SEND_PACKETS], count = 1 + below(SEND_PACKETS);
    int32_t slots[SEND_PACKETS];
    size_t at = 0;
    uint32_t want_dropped = 0;
    for (uint32_t i = 0; i < count; i++) {
      uint32_t r = below(100);
      slots[i] = r < 35 ? -1 : r < 90 ? (int32_t)below(2) : 2;
      bool super = chance(60), huge = !super && chance(4);
      offsets[i] = (uint32_t)at;
      lengths[i] = build_packet(buf + at, super, &gso[i], huge, slots[i] >= 0 ? SEALED_FILL : PLAIN_FILL);
      memcpy(endpoints + i * ENDPOINT_BYTES, to, ENDPOINT_BYTES);
      packet_batch one = {buf, offsets, lengths, gso, endpoints, i + 1};
      udp_send_result tmp = {0};
      uint32_t wire = udp_wire_count(&one, i, &tmp);
      if (slots[i] == 2 || (slots[i] >= 0 && huge)) want_dropped += wire;
      at += lengths[i];
      t->packets++;
      t->supers += super;
    }
    packet_batch b = {buf, offsets, lengths, gso, endpoints, count};
    send_sessions ss = {wg_sealer, stx, slots};
    udp_send_result tmp = {0}, r = {0};
    uint32_t wire = udp_wire_count(&b, 0, &tmp);
    CHECK(tmp.dropped == 0, "a super-packet that cannot be cut");
    CHECK(udp_send(&sock, &b, &ss, &sc, &r, &e), "udp_send: %s", strerror(e.err));
    CHECK(r.sent + r.rejected + r.busy + r.unsent + r.seal_dropped == wire, "%u wire datagrams: %u sent, %u rejected, "
          "%u busy, %u unsent, %u seal-dropped", wire, r.sent, r.rejected, r.busy, r.unsent, r.seal_dropped);
    CHECK(r.rejected == 0 && r.unsent == 0, "rejected %u (errno %d), unsent %u", r.rejected, r.last_errno, r.unsent);
    if (r.busy == 0) CHECK(r.seal_dropped == want_dropped, "seal-dropped %u, want %u", r.seal_dropped, want_dropped);
    t->wire += wire;
    t->sent += r.sent;
    t->seal_dropped += r.seal_dropped;
    t->gso_messages += r.gso_messages;
    for (uint32_t k = 0; k < r.sent; k++) {
      ssize_t len;
      while ((len = recv(rx, got, 65536, 0)) < 0) {
        CHECK(errno == EAGAIN, "recv: %s", strerror(errno));
        struct pollfd p = {rx, POLLIN, 0};
        CHECK(poll(&p, 1, 2000) == 1, "datagram %u of %u never arrived", k, r.sent);
      }
      CHECK(len > 0, "an empty datagram");
      if (len >= 4 && got[0] == 4 && !got[1] && !got[2] && !got[3]) {
        uint32_t plain;
        int32_t v = wg_open(srx, got, (uint32_t)len, &plain);
        CHECK(v >= 0, "a sealed datagram did not open: %d", v);
        CHECK(plain > 0 && got[16 + plain - 1] == SEALED_FILL, "opened, but not a sealed packet's payload");
        t->sealed_in++;
      } else {
        CHECK(got[len - 1] == PLAIN_FILL, "plaintext of a packet that should have been sealed");
        t->plain_in++;
      }
    }
    t->rounds++;
  }
  CHECK(recv(rx, got, 65536, 0) < 0 && errno == EAGAIN, "more datagrams arrived than were sent");
  free(buf);
  free(got);
  free(sc.wire);
  free(sc.headers);
  free(sc.sealed);
  close(rx);
  close(sock.fd);
  wg_destroy(stx);
  wg_destroy(srx);
}

int main(int argc, char **argv) {
  uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 0x0a4b6e7ull;
  uint32_t rounds = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 2000;
  uint32_t send_rounds = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 0) : 200;
  alarm(120);
  rng_state = seed;
  CHECK(!wg_create(0) && !wg_create(WG_MAX_CAPACITY + 1), "bad capacities");
  tx = wg_create(SLOTS);
  twin = wg_create(SLOTS);
  rx = wg_create(SLOTS);
  CHECK(tx && twin && rx, "create");
  for (uint32_t s = 0; s < SLOTS; s++) install(s);
  CHECK(wg_install(rx, 0, (uint8_t[32]){0}, (uint8_t[32]){0}, rx_index[1], 0) == WG_ERR_INDEX_TAKEN, "dup index");
  totals t = {0};
  for (uint32_t n = 0; n < rounds; n++) round_(&t);
  for (uint32_t i = 0; i < pooled; i++) free(pool[i].msg);
  wg_destroy(tx);
  wg_destroy(twin);
  wg_destroy(rx);
  CHECK(t.opened > 0 && t.keepalives > 0 && t.mutated > 0 && t.replayed > 0 && t.exhausted > 0 && t.other > 0 &&
            t.malformed_opened > 0 && t.reinstalls > 0,
        "a kind of input never came up");
  send_totals st = {0};
  sealed_sends(send_rounds, &st);
  CHECK(st.sealed_in > 0 && st.plain_in > 0 && st.seal_dropped > 0 && st.gso_messages > 0,
        "sealed sends: a kind never came up");
  printf("fuzz_wg: seed 0x%llx: %u rounds, %u datagrams: %u opened (%u keepalives), %u authentic but malformed, "
         "%u mutated, %u replayed, %u random headers (%u exhausted), %u other; verdicts %u opened, %u not "
         "transport, %u unknown index, %u auth failed, %u replayed, %u malformed, %u exhausted; %u reinstalls; "
         "%u sealed-send rounds, %u packets (%u super-packets), %u wire datagrams: %u sent (%u GSO messages), "
         "%u seal-dropped; %u arrived sealed and opened, %u in plaintext: all checks passed\n",
         (unsigned long long)seed, rounds, t.datagrams, t.opened, t.keepalives, t.malformed_opened, t.mutated,
         t.replayed, t.headers, t.exhausted, t.other, t.verdicts[0], t.verdicts[1], t.verdicts[2], t.verdicts[3],
         t.verdicts[4], t.verdicts[5], t.verdicts[6], t.reinstalls, st.rounds, st.packets, st.supers, st.wire, st.sent,
         st.gso_messages, st.seal_dropped, st.sealed_in, st.plain_in);
  return 0;
}
