/*
 * wg.c: WireGuard's transport data messages (whitepaper 5.4.6) over a table of sessions, for the tunnel's
 * native send (sealing, called by udp.c through the send_sessions it is handed) and for opening whole received
 * batches in place. The handshake (TypeScript) installs keys; this file does only the per-packet crypto.
 *
 *   wire: type 4 (u8), 3 zero bytes, receiver index (u32 LE), counter (u64 LE), ChaCha20-Poly1305 of the packet
 *         zero-padded to a multiple of 16 (nonce: 4 zero bytes + counter LE, no associated data), 16-byte tag.
 *
 * Crypto is OpenSSL's EVP ChaCha20-Poly1305, from the headers Node ships (node-gyp's include dir has openssl/;
 * the symbols resolve against the node binary at load time, so no library is linked; the sanitizer harness
 * links Debian's libcrypto instead). Each session has ONE EVP_CIPHER_CTX per direction, keyed once at install;
 * per packet only the IV is set (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, enc)). Keys are cleansed on
 * remove and on destroy.
 *
 * Receiver indexes map to slots through a small open-addressing table (linear probing, backward-shift
 * deletion, at most half full): O(1), and localIndex may be any u32 the handshake picks.
 *
 * Replay protection as RFC 6479 / the kernel's and wireguard-go's filter: a ring of REPLAY_BITS bits in 64-bit
 * words; a counter is accepted once, only after its tag verified, if it is ahead of the highest seen or at
 * most REPLAY_WINDOW (REPLAY_BITS - 64 = 8128) behind it. Counters >= WG_REJECT_AFTER are refused (Exhausted),
 * and never used by the sender.
 *
 * No N-API and no libuv: native/test/fuzz_wg.c runs it alone under ASan/UBSan.
 */
#include <stdlib.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "oaknet.h"

#define REPLAY_BITS 8192u
#define REPLAY_WORDS (REPLAY_BITS / 64)
#define REPLAY_WINDOW (REPLAY_BITS - 64)
#define WG_REJECT_AFTER (UINT64_MAX - 8192u) /* 2^64 - 2^13 - 1 */

typedef struct {
  EVP_CIPHER_CTX *send_ctx, *recv_ctx; /* keyed once at install */
  uint8_t send_key[WG_KEY_BYTES], recv_key[WG_KEY_BYTES];
  uint32_t local_index, remote_index;
  uint64_t send_counter; /* the next counter to use */
  uint64_t recv_last;    /* highest counter opened (valid when recv_any) */
  bool recv_any;
  bool installed;
  uint64_t ring[REPLAY_WORDS];
  uint64_t packets_out, bytes_out, packets_in, bytes_in;
} wg_slot;

struct wg_table {
  uint32_t capacity;
  wg_slot *slots;
  int32_t *map; /* slot + 1 per bucket; 0: empty */
  uint32_t map_mask;
};

static inline uint32_t rd32le(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t rd64le(const uint8_t *p) { return (uint64_t)rd32le(p) | ((uint64_t)rd32le(p + 4) << 32); }
static inline void wr32le(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}
static inline void wr64le(uint8_t *p, uint64_t v) {
  wr32le(p, (uint32_t)v);
  wr32le(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t bucket_of(const wg_table *t, uint32_t index) { return (index * 0x9e3779b1u) & t->map_mask; }

/* ---- the table --------------------------------------------------------------------------------------- */

wg_table *wg_create(uint32_t capacity) {
  if (capacity == 0 || capacity > WG_MAX_CAPACITY) return NULL;
  wg_table *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  uint32_t buckets = 8;
  while (buckets < capacity * 2u) buckets <<= 1;
  t->capacity = capacity;
  t->map_mask = buckets - 1;
  t->slots = calloc(capacity, sizeof *t->slots);
  t->map = calloc(buckets, sizeof *t->map);
  if (!t->slots || !t->map) {
    free(t->slots);
    free(t->map);
    free(t);
    return NULL;
  }
  return t;
}

uint32_t wg_capacity(const wg_table *t) { return t->capacity; }

static int32_t find_bucket(const wg_table *t, uint32_t index) {
  for (uint32_t b = bucket_of(t, index);; b = (b + 1) & t->map_mask) {
    int32_t v = t->map[b];
    if (v == 0) return -1;
    if (t->slots[v - 1].local_index == index) return (int32_t)b;
  }
}

int32_t wg_lookup(const wg_table *t, uint32_t index) {
  int32_t b = find_bucket(t, index);
  return b < 0 ? -1 : t->map[b] - 1;
}

static void map_delete(wg_table *t, uint32_t b) {
  /* backward-shift deletion: pull later entries of the probe sequence into the hole */
  uint32_t hole = b;
  t->map[hole] = 0;
  for (uint32_t j = (hole + 1) & t->map_mask; t->map[j] != 0; j = (j + 1) & t->map_mask) {
    uint32_t home = bucket_of(t, t->slots[t->map[j] - 1].local_index);
    /* the entry at j may move to the hole if its home is not in (hole, j] (cyclically) */
    bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (stays) continue;
    t->map[hole] = t->map[j];
    t->map[j] = 0;
    hole = j;
  }
}

void wg_remove(wg_table *t, uint32_t slot) {
  if (slot >= t->capacity) return;
  wg_slot *s = &t->slots[slot];
  if (s->installed) {
    int32_t b = find_bucket(t, s->local_index);
    if (b >= 0) map_delete(t, (uint32_t)b);
  }
  EVP_CIPHER_CTX_free(s->send_ctx);
  EVP_CIPHER_CTX_free(s->recv_ctx); /* EVP_CIPHER_CTX_free cleanses the contexts' key schedules */
  OPENSSL_cleanse(s, sizeof *s);
  memset(s, 0, sizeof *s);
}

void wg_destroy(wg_table *t) {
  if (!t) return;
  for (uint32_t i = 0; i < t->capacity; i++) wg_remove(t, i);
  free(t->slots);
  free(t->map);
  free(t);
}

static EVP_CIPHER_CTX *keyed_ctx(const uint8_t *key, int enc) {
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  if (!c) return NULL;
  if (EVP_CipherInit_ex(c, EVP_chacha20_poly1305(), NULL, key, NULL, enc) != 1) {
    EVP_CIPHER_CTX_free(c);
    return NULL;
  }
  return c;
}

int wg_install(wg_table *t, uint32_t slot, const uint8_t *send_key, const uint8_t *recv_key, uint32_t local_index,
               uint32_t remote_index) {
  if (slot >= t->capacity) return WG_ERR_SLOT;
  int32_t other = wg_lookup(t, local_index);
  if (other >= 0 && (uint32_t)other != slot) return WG_ERR_INDEX_TAKEN;
  wg_remove(t, slot);
  wg_slot *s = &t->slots[slot];
  s->send_ctx = keyed_ctx(send_key, 1);
  s->recv_ctx = keyed_ctx(recv_key, 0);
  if (!s->send_ctx || !s->recv_ctx) {
    wg_remove(t, slot);
    return WG_ERR_CRYPTO;
  }
  memcpy(s->send_key, send_key, WG_KEY_BYTES);
  memcpy(s->recv_key, recv_key, WG_KEY_BYTES);
  s->local_index = local_index;
  s->remote_index = remote_index;
  s->installed = true;
  uint32_t b = bucket_of(t, local_index);
  while (t->map[b] != 0) b = (b + 1) & t->map_mask;
  t->map[b] = (int32_t)slot + 1;
  return 0;
}

bool wg_installed(const wg_table *t, uint32_t slot) { return slot < t->capacity && t->slots[slot].installed; }

void wg_stats(const wg_table *t, uint32_t slot, double *out) {
  const wg_slot *s = &t->slots[slot];
  out[0] = (double)s->send_counter;
  out[1] = s->recv_any ? (double)s->recv_last : -1;
  out[2] = (double)s->packets_out;
  out[3] = (double)s->bytes_out;
  out[4] = (double)s->packets_in;
  out[5] = (double)s->bytes_in;
}

/* ---- sealing ----------------------------------------------------------------------------------------- */

static inline void nonce_of(uint64_t counter, uint8_t iv[12]) {
  memset(iv, 0, 4);
  wr64le(iv + 4, counter);
}

/* Seals the packet a||b (either may be empty) with slot into out (room bytes): returns the message's length,
 * or -1 when the slot has no keys, its counter is exhausted, the message would not fit out, or OpenSSL fails
 * (then the counter is still used up: a nonce is never reused). a||b is first gathered (with its zero padding)
 * into the message and encrypted there in one update: OpenSSL's ChaCha20-Poly1305 runs about 1.5x faster on
 * one contiguous buffer than on a header and a payload given apart (2.15 against 1.46 GB/s for 1,408 bytes
 * here). a may be the message's own plaintext area (in place); b must not lie inside out[16, 16 + a_len). */
int64_t wg_seal(wg_table *t, uint32_t slot, const uint8_t *a, uint32_t a_len, const uint8_t *b, uint32_t b_len,
                uint8_t *out, size_t room) {
  if (slot >= t->capacity) return -1;
  wg_slot *s = &t->slots[slot];
  uint64_t len = (uint64_t)a_len + b_len;
  if (!s->installed || s->send_counter >= WG_REJECT_AFTER || len > WG_MAX_PLAINTEXT) return -1;
  uint32_t sealed = wg_sealed_len((uint32_t)len);
  if (sealed > room) return -1;
  uint64_t counter = s->send_counter++;
  uint8_t iv[12];
  nonce_of(counter, iv);
  out[0] = WG_TYPE_TRANSPORT;
  out[1] = out[2] = out[3] = 0;
  wr32le(out + 4, s->remote_index);
  wr64le(out + 8, counter);
  uint8_t *c = out + WG_HEADER_BYTES;
  int n = 0, m = 0;
  uint32_t pad = (uint32_t)(-len & 15u);
  if (a_len && a != c) memmove(c, a, a_len);
  if (b_len) memmove(c + a_len, b, b_len);
  if (pad) memset(c + len, 0, pad);
  EVP_CIPHER_CTX *ctx = s->send_ctx;
  if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, 1) != 1) return -1;
  if (len + pad && EVP_CipherUpdate(ctx, c, &n, c, (int)(len + pad)) != 1) return -1;
  c += n;
  if (EVP_CipherFinal_ex(ctx, c, &m) != 1) return -1;
  c += m;
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, WG_TAG_BYTES, c) != 1) return -1;
  if ((size_t)(c + WG_TAG_BYTES - out) != sealed) return -1;
  s->packets_out++;
  s->bytes_out += len;
  return sealed;
}

/* The send_sessions sealer for udp.c (table as void*, so udp.c needs neither this file nor OpenSSL). */
int64_t wg_sealer(void *table, uint32_t slot, const uint8_t *a, uint32_t a_len, const uint8_t *b, uint32_t b_len,
                  uint8_t *out, size_t room) {
  return wg_seal(table, slot, a, a_len, b, b_len, out, room);
}

/* ---- opening ----------------------------------------------------------------------------------------- */

/* The replay ring's verdict on counter, without changing it. */
static bool replay_fresh(const wg_slot *s, uint64_t counter) {
  if (!s->recv_any || counter > s->recv_last) return true;
  if (s->recv_last - counter > REPLAY_WINDOW) return false;
  return !(s->ring[(counter >> 6) % REPLAY_WORDS] & (1ull << (counter & 63)));
}

/* Records counter (replay_fresh said yes, and its tag verified). */
static void replay_accept(wg_slot *s, uint64_t counter) {
  uint64_t word = counter >> 6;
  if (!s->recv_any) {
    memset(s->ring, 0, sizeof s->ring);
    s->recv_any = true;
    s->recv_last = counter;
  } else if (counter > s->recv_last) {
    uint64_t current = s->recv_last >> 6, diff = word - current;
    if (diff > REPLAY_WORDS) diff = REPLAY_WORDS;
    for (uint64_t i = current + 1; i <= current + diff; i++) s->ring[i % REPLAY_WORDS] = 0;
    s->recv_last = counter;
  }
  s->ring[word % REPLAY_WORDS] |= 1ull << (counter & 63);
}

/* The plaintext's length as its IP header says (IPv4 total length; IPv6 40 + payload length), len for
 * anything else; -1 when the header's length is larger than the plaintext (or shorter than an IP header). */
static int64_t trimmed_len(const uint8_t *p, uint32_t len) {
  if (len == 0) return 0;
  switch (p[0] >> 4) {
  case 4: {
    if (len < 20) return -1;
    uint32_t total = rd16(p + 2);
    return total < 20 || total > len ? -1 : (int64_t)total;
  }
  case 6: {
    if (len < 40) return -1;
    uint32_t total = 40u + rd16(p + 4);
    return total > len ? -1 : (int64_t)total;
  }
  default:
    return len;
  }
}

int32_t wg_open(wg_table *t, uint8_t *p, uint32_t len, uint32_t *plain_len) {
  if (len == 0) return WG_MALFORMED;
  if (len < 4 || p[0] != WG_TYPE_TRANSPORT || p[1] || p[2] || p[3]) return WG_NOT_TRANSPORT;
  if (len < WG_HEADER_BYTES + WG_TAG_BYTES || len - WG_HEADER_BYTES - WG_TAG_BYTES > WG_MAX_PLAINTEXT + 15)
    return WG_MALFORMED;
  int32_t slot = wg_lookup(t, rd32le(p + 4));
  if (slot < 0) return WG_UNKNOWN_INDEX;
  wg_slot *s = &t->slots[slot];
  uint64_t counter = rd64le(p + 8);
  if (counter >= WG_REJECT_AFTER) return WG_EXHAUSTED;
  if (!replay_fresh(s, counter)) return WG_REPLAYED;
  uint32_t clen = len - WG_HEADER_BYTES - WG_TAG_BYTES;
  uint8_t *c = p + WG_HEADER_BYTES, iv[12];
  nonce_of(counter, iv);
  EVP_CIPHER_CTX *ctx = s->recv_ctx;
  int n = 0, m = 0;
  /* the tag is copied out first: decrypting in place may not overwrite it, but the API wants it separately */
  uint8_t tag[WG_TAG_BYTES];
  memcpy(tag, c + clen, WG_TAG_BYTES);
  if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, 0) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, WG_TAG_BYTES, tag) != 1 ||
      (clen && EVP_CipherUpdate(ctx, c, &n, c, (int)clen) != 1) || EVP_CipherFinal_ex(ctx, c + n, &m) != 1)
    return WG_AUTH_FAILED;
  replay_accept(s, counter);
  int64_t plain = trimmed_len(c, clen);
  if (plain < 0) return WG_MALFORMED; /* authentic (its counter is used up), but no packet to deliver */
  s->packets_in++;
  s->bytes_in += (uint64_t)plain;
  *plain_len = (uint32_t)plain;
  return slot;
}

void wg_open_batch(wg_table *t, uint8_t *buf, uint32_t *offsets, uint32_t *lengths, uint32_t count,
                   int32_t *verdicts) {
  for (uint32_t i = 0; i < count; i++) {
    uint32_t plain = 0;
    int32_t v = wg_open(t, buf + offsets[i], lengths[i], &plain);
    verdicts[i] = v;
    if (v >= 0) {
      offsets[i] += WG_HEADER_BYTES;
      lengths[i] = plain;
    }
  }
}
