/*
 * fuzz_wg.c: native/wg.c (WireGuard transport messages) under AddressSanitizer and UndefinedBehaviorSanitizer,
 * with a fixed seed, linked with Debian's libcrypto (libssl-dev) where the addon uses Node's. src/dataplane/
 * tun/sanitizers.test.ts builds and runs it:
 *
 *   gcc -std=gnu11 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
 *       -D_GNU_SOURCE -I native native/wg.c native/test/fuzz_wg.c -lcrypto -o fuzz_wg
 *   ./fuzz_wg [seed [rounds]]
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
 * A datagram that did not open keeps its offset and length. Any failure aborts with a message; a clean run
 * prints one summary line and exits 0.
 */
#define FUZZ_NAME "fuzz_wg"
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

int main(int argc, char **argv) {
  uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 0x0a4b6e7ull;
  uint32_t rounds = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 2000;
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
  printf("fuzz_wg: seed 0x%llx: %u rounds, %u datagrams: %u opened (%u keepalives), %u authentic but malformed, "
         "%u mutated, %u replayed, %u random headers (%u exhausted), %u other; verdicts %u opened, %u not "
         "transport, %u unknown index, %u auth failed, %u replayed, %u malformed, %u exhausted; %u reinstalls: "
         "all checks passed\n",
         (unsigned long long)seed, rounds, t.datagrams, t.opened, t.keepalives, t.malformed_opened, t.mutated,
         t.replayed, t.headers, t.exhausted, t.other, t.verdicts[0], t.verdicts[1], t.verdicts[2], t.verdicts[3],
         t.verdicts[4], t.verdicts[5], t.verdicts[6], t.reinstalls);
  return 0;
}
