/*
 * fuzz_tun.c: the read side of native/tun.c in read-vnet mode (tun_read_batch: each read a virtio_net_hdr and
 * a packet, the header turned into the packet's gso word, the packet normalised) under AddressSanitizer and
 * UndefinedBehaviorSanitizer, with a fixed seed. src/dataplane/tun/sanitizers.test.ts builds and runs it:
 *
 *   gcc -std=gnu11 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
 *       -D_GNU_SOURCE -I native native/checksum.c native/offload.c native/tun.c native/test/fuzz_tun.c \
 *       -Wl,--wrap=readv -o fuzz_tun
 *   ./fuzz_tun [seed [rounds]]
 *
 * A SOCK_SEQPACKET socketpair stands in for the TUN fd: like a TUN it hands over one record per read, here
 * written by the harness: a virtio header and a packet, as a kernel with offloads would (TCP/UDP
 * super-packets, IPv4 with options and IPv6 with up to 16 KiB of extension headers, the right GSO type and
 * gso_size 1-8, real MSSs, 0xffff or random, a partial checksum; ordinary packets with NEEDS_CSUM and without)
 * and as it should not (GSO types that do not match the packet or are unknown, gso_size 0, checksum offsets
 * outside the packet, mutated and truncated packets from fuzz.h, records shorter than the header, packets
 * longer than the slot). The wrapper below reads a record with recvmsg(MSG_TRUNC), so one longer than the
 * slot reports its full length, as a TUN's read does, and the reader must drop it.
 * Each round reads them into a ring of its own geometry (headroom 0-64, poisoned; room from a few bytes to
 * 64 KiB, sometimes exactly a packet's size; 1-64 slots, or up to 256 small ones), its buffer and arrays
 * exactly that size.
 *
 * readv is wrapped (ld --wrap): it checks that each read goes to the next slot (the 10-byte header, then the
 * slot's room), reads as a TUN would (above), and in some rounds makes reads fail as the kernel may: EINVAL
 * (a packet the kernel could not describe and dropped), sometimes in runs longer than the 64 that end a
 * batch; EINTR; and EBADF/EIO/EFAULT, which stop the reader. After each batch: one entry per read that
 * returned (a record or an EINVAL), each within its slot; EINVAL entries and dropped packets length 0 with
 * gso word 0; a batch ends only when full, at EAGAIN, at a failure (reported), or after 64 EINVALs in a row.
 * Each entry is what the harness expects of its record: a valid super-packet with its gso word and the
 * pseudo-header sum in its checksum field; an ordinary packet with a partial checksum completed (the
 * builder's packet, byte for byte); an untouched one unchanged; a mismatched or too long one dropped; and
 * anything at all changed in at most its 2 checksum bytes. Any failure aborts with a message; a clean run
 * prints one summary line and exits 0.
 */
#define FUZZ_NAME "fuzz_tun"
#include <unistd.h>

#include "fuzz.h"

#define MAX_SLOTS 256 /* more than 64, so that 64 EINVALs in a row can end a batch before it is full */
#define MAX_RECORDS 48
#define PACKET_ROOM (IP_MAX_BYTES + 40) /* the largest IPv6 packet */
#define MAX_EINVAL_RUN 64               /* tun.c's: EINVALs in a row that end a batch */

/* ---- the readv seam ---------------------------------------------------------------------------------- */

enum { ENDED_FULL, ENDED_EMPTY, ENDED_FAILED, ENDED_EINVAL_RUN };

/* What the wrapper saw during one tun_read_batch call, and what it is to inject. */
typedef struct {
  const read_ring *ring;
  bool inject;
  uint32_t storm;           /* EINVALs still to make in a row (may span batches) */
  uint32_t entries;         /* reads that made an entry in this call: the slot the next one must go to */
  int32_t got[MAX_SLOTS];   /* per entry: the bytes read, or -1 for an EINVAL */
  uint32_t run, longest;    /* EINVALs in a row in this call, and the most */
  int fatal;                /* the errno of a failure made in this call, 0: none */
  bool empty;               /* the call saw EAGAIN */
  uint32_t einval, eintr;   /* made, in all */
} seam_state;

static seam_state seam;

ssize_t __wrap_readv(int fd, const struct iovec *iov, int iovcnt) {
  const read_ring *r = seam.ring;
  CHECK(iovcnt == 2 && iov[0].iov_len == VNET_HDR_BYTES, "a read of the virtio header, then the packet");
  CHECK(seam.entries < r->max_batch, "a read past the batch's %u slots", r->max_batch);
  CHECK(iov[1].iov_base == r->buf + (size_t)seam.entries * r->slot + r->headroom &&
            iov[1].iov_len == r->slot - r->headroom,
        "read %u into its slot, after the headroom", seam.entries);
  int err = 0;
  if (seam.inject && seam.storm == 0) {
    uint32_t roll = below(1000);
    if (roll < 15) seam.storm = 1 + below(2 * MAX_EINVAL_RUN); /* a run of drops, maybe longer than a batch */
    else if (roll < 45) seam.storm = 1;
    else if (roll < 65) err = EINTR;
    else if (roll < 70) err = seam.fatal = (int[]){EBADF, EIO, EFAULT}[below(3)];
  }
  if (seam.storm > 0) {
    seam.storm--;
    err = EINVAL;
  }
  if (err == EINTR) {
    seam.eintr++;
    errno = EINTR;
    return -1;
  }
  if (err == EINVAL) {
    seam.einval++;
    seam.got[seam.entries++] = -1;
    if (++seam.run > seam.longest) seam.longest = seam.run;
    errno = EINVAL;
    return -1;
  }
  if (err) {
    errno = err;
    return -1;
  }
  /* a TUN's read reports the packet's whole length even when the buffer holds less: MSG_TRUNC does that */
  struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
  ssize_t got = recvmsg(fd, &m, MSG_TRUNC);
  if (got < 0) {
    CHECK(errno == EAGAIN || errno == EWOULDBLOCK, "readv: %s", strerror(errno));
    seam.empty = true;
    return got;
  }
  seam.run = 0;
  seam.got[seam.entries++] = (int32_t)got;
  return got;
}

/* ---- records ----------------------------------------------------------------------------------------- */

/* What the reader must make of a record. */
enum expect {
  EXPECT_DROP,     /* length 0, gso word 0 */
  EXPECT_WORD,     /* a super-packet: its gso word, and `want` (its checksum field the pseudo-header sum) */
  EXPECT_COMPLETE, /* an ordinary packet whose partial checksum is completed: `want`, the builder's packet */
  EXPECT_SAME,     /* an ordinary packet, unchanged */
  EXPECT_ANY,      /* malformed: anything, within the rules every entry keeps */
};

typedef struct {
  uint8_t *bytes; /* the record: virtio header, then packet */
  uint32_t size;
  enum expect expect;
  uint32_t word;
  uint8_t *want; /* EXPECT_WORD, EXPECT_COMPLETE: the packet the slot must hold (size - 10 bytes) */
} record;

typedef struct {
  uint32_t rounds, records, batches, entries, words, completed, unchanged, dropped, too_long, any;
  uint32_t einval, eintr, failures, einval_runs_ended;
} totals;

static uint8_t *room_a, *room_b; /* PACKET_ROOM + VNET_HDR_BYTES bytes each */

static uint16_t random_gso_size(void) {
  static const uint16_t MSS[] = {536, 1000, 1220, 1398, 1440, 8960};
  switch (below(6)) {
    case 0: return (uint16_t)(1 + below(8));
    case 1: return MSS[below(sizeof MSS / sizeof MSS[0])];
    case 2: return 0xffff;
    case 3: return (uint16_t)(9 + below(500));
    default: return (uint16_t)next64();
  }
}

/* A random valid packet (sometimes with up to 16 KiB of IPv6 extension headers) in room_a, and its shape
 * and layout. */
static layout random_packet(shape *s) {
  random_shape(s, false);
  if (chance(25)) {
    s->v6 = true;
    s->extensions = 1 + below(8);
    s->ext_units = (uint8_t)below(256);
  }
  uint32_t ip = s->v6 ? s->extensions * extension_bytes(s) : 20 + s->ip_options;
  uint32_t most = IP_MAX_BYTES - ip - (s->udp ? 8 : 20 + s->tcp_options);
  uint32_t cap = chance(50) ? 1500 : chance(50) ? 9000 : most;
  uint32_t payload_len = below((cap < most ? cap : most) + 1);
  uint8_t *payload = must_malloc(payload_len);
  fill_random(payload, payload_len);
  layout L = build(s, payload, payload_len, room_a + VNET_HDR_BYTES);
  free(payload);
  return L;
}

static void set_vnet(uint8_t *at, const struct virtio_net_hdr *vh) { memcpy(at, vh, sizeof *vh); }

/* Makes a record in room_a (and its expectation): see the top of the file for the kinds. */
static void make_record(record *rec) {
  struct virtio_net_hdr vh = {0};
  uint8_t *pkt = room_a + VNET_HDR_BYTES;
  uint32_t len;
  rec->expect = EXPECT_ANY;
  rec->word = 0;
  rec->want = NULL;
  uint32_t kind = below(100);
  if (kind < 45) { /* a super-packet as the kernel hands it over; sometimes with a GSO type it cannot have */
    shape s;
    layout L = random_packet(&s);
    len = L.len;
    memcpy(room_b, pkt, len);
    make_partial(room_b, &s, &L); /* what the reader must leave */
    wr16(pkt + L.l4 + (s.udp ? 6 : 16), (uint32_t)next64()); /* the field the reader must not trust */
    vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vh.gso_size = chance(5) ? 0 : random_gso_size();
    vh.gso_type = s.udp ? VIRTIO_NET_HDR_GSO_UDP_L4 : s.v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
    if (!s.udp && chance(20)) vh.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
    vh.hdr_len = (uint16_t)L.hdr;
    vh.csum_start = (uint16_t)L.l4;
    vh.csum_offset = s.udp ? 6 : 16;
    bool mismatch = chance(10);
    if (mismatch) { /* the other TCP type, TCP on UDP, UDP on TCP, or a type tun never makes */
      static const uint8_t WRONG[] = {VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_GSO_UDP, 6, 7, 0x7f};
      if (s.udp) vh.gso_type = chance(50) ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
      else if (chance(50)) vh.gso_type = s.v6 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
      else vh.gso_type = WRONG[below(sizeof WRONG)];
    }
    if (mismatch || vh.gso_size == 0) {
      rec->expect = EXPECT_DROP;
    } else {
      rec->expect = EXPECT_WORD;
      rec->word = vh.gso_size;
      rec->want = must_malloc(len);
      memcpy(rec->want, room_b, len);
    }
  } else if (kind < 65) { /* an ordinary packet with a partial checksum (NEEDS_CSUM), or complete */
    shape s;
    layout L = random_packet(&s);
    len = L.len;
    if (chance(70)) {
      rec->expect = EXPECT_COMPLETE;
      rec->want = must_malloc(len);
      memcpy(rec->want, pkt, len);
      make_partial(pkt, &s, &L);
      vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      vh.csum_start = (uint16_t)L.l4;
      vh.csum_offset = s.udp ? 6 : 16;
    } else {
      rec->expect = EXPECT_SAME;
    }
  } else if (kind < 72) { /* NEEDS_CSUM pointing past the packet's end */
    shape s;
    len = random_packet(&s).len;
    vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vh.csum_start = (uint16_t)(len - 2 + below(8));
    vh.csum_offset = (uint16_t)below(8);
    if ((uint32_t)vh.csum_start + vh.csum_offset + 2 > len) rec->expect = EXPECT_DROP;
  } else if (kind < 94) { /* malformed: mutated, truncated, random bytes; with any header */
    len = malformed_packet(pkt, PACKET_ROOM);
    fill_random((uint8_t *)&vh, sizeof vh);
    if (chance(50)) vh.gso_type = (uint8_t)(below(6) | (chance(20) ? VIRTIO_NET_HDR_GSO_ECN : 0));
    if (chance(50)) vh.flags = chance(50) ? VIRTIO_NET_HDR_F_NEEDS_CSUM : 0;
    if (chance(50)) vh.gso_size = random_gso_size();
    if (chance(50)) {
      vh.csum_start = (uint16_t)below(len + 8);
      vh.csum_offset = (uint16_t)(chance(50) ? 16 : 6);
    }
  } else { /* shorter than the virtio header itself */
    rec->size = below(VNET_HDR_BYTES);
    fill_random(room_a, rec->size);
    rec->expect = EXPECT_DROP;
    rec->bytes = must_malloc(rec->size);
    memcpy(rec->bytes, room_a, rec->size);
    return;
  }
  set_vnet(room_a, &vh);
  rec->size = VNET_HDR_BYTES + len;
  rec->bytes = must_malloc(rec->size);
  memcpy(rec->bytes, room_a, rec->size);
}

/* ---- checking entries -------------------------------------------------------------------------------- */

/* Entry i of the ring (its length and gso word, and the bytes in its slot) against record rec, which the read
 * got `got` bytes of (header included). */
static void check_entry(const read_ring *r, uint32_t i, const record *rec, uint32_t got, totals *t) {
  size_t room = r->slot - r->headroom;
  const uint8_t *slot = r->buf + (size_t)i * r->slot + r->headroom;
  uint32_t len = r->lengths[i], word = r->extra[i];
  uint32_t packet = rec->size < VNET_HDR_BYTES ? 0 : rec->size - VNET_HDR_BYTES; /* bytes sent */
  bool too_long = packet > room;
  CHECK(got == rec->size, "read %u bytes of a record of %u", got, rec->size);
  CHECK(len <= packet && len <= room, "entry %u: length %u, %u bytes read, %zu of room", i, len, packet, room);
  CHECK(word == 0 || len == packet, "entry %u: gso word %u with a length %u of %u", i, word, len, packet);
  if (len == 0) CHECK(word == 0, "a dropped entry with gso word %u", word);
  /* whatever it was, the reader changes at most one 16-bit checksum field */
  const uint8_t *sent = rec->bytes + VNET_HDR_BYTES;
  uint32_t first = UINT32_MAX, last = 0;
  for (uint32_t k = 0; k < len; k++) {
    if (slot[k] == sent[k]) continue;
    if (first == UINT32_MAX) first = k;
    last = k;
  }
  CHECK(first == UINT32_MAX || last - first < 2, "entry %u changed bytes %u..%u", i, first, last);
  enum expect e = too_long ? EXPECT_DROP : rec->expect;
  if (too_long) t->too_long++;
  switch (e) {
    case EXPECT_DROP:
      CHECK(len == 0, "entry %u: length %u, a drop expected", i, len);
      t->dropped++;
      break;
    case EXPECT_WORD:
      CHECK(len == packet && word == rec->word && memcmp(slot, rec->want, len) == 0,
            "entry %u: length %u (%u), gso word %u (%u), the pseudo-header sum in its checksum field", i, len,
            packet, word, rec->word);
      t->words++;
      break;
    case EXPECT_COMPLETE:
      CHECK(len == packet && word == 0 && memcmp(slot, rec->want, len) == 0,
            "entry %u: length %u (%u), gso word %u, its checksum completed", i, len, packet, word);
      t->completed++;
      break;
    case EXPECT_SAME:
      CHECK(len == packet && word == 0 && memcmp(slot, sent, len) == 0, "entry %u unchanged", i);
      t->unchanged++;
      break;
    case EXPECT_ANY: t->any++; break;
  }
}

/* ---- rounds ------------------------------------------------------------------------------------------ */

typedef struct {
  int writer, reader; /* the socketpair */
} harness;

/* The ring of a round: its geometry random, its buffer and arrays exactly that size, the headrooms poisoned. */
static read_ring make_ring(const harness *h, const record *records, uint32_t count) {
  size_t headroom = chance(50) ? 0 : 1 + below(64), room;
  uint32_t kind = below(100);
  if (kind < 35) {
    room = PACKET_ROOM;
  } else if (kind < 60) {
    room = 2048;
  } else if (kind < 70) {
    room = 1 + below(200);
  } else { /* exactly one record's packet: the largest (so all fit), or any */
    uint32_t size = 0;
    if (chance(50))
      for (uint32_t j = 0; j < count; j++) size = records[j].size > size ? records[j].size : size;
    else size = records[below(count)].size;
    room = size > VNET_HDR_BYTES ? size - VNET_HDR_BYTES : 1;
  }
  /* mostly up to 64 slots; sometimes more, with small ones */
  uint32_t slots = chance(80) || room > 2048 ? 1 + below(64) : 65 + below(MAX_SLOTS - 64);
  read_ring r = {.fd = h->reader,
                 .mode = MODE_READ_VNET,
                 .buf = must_malloc(slots * (headroom + room)),
                 .slot = headroom + room,
                 .headroom = headroom,
                 .max_batch = slots,
                 .lengths = must_malloc(slots * sizeof(uint32_t)),
                 .extra = must_malloc(slots * sizeof(uint32_t))};
  for (uint32_t i = 0; i < slots; i++) POISON(r.buf + i * r.slot, headroom);
  return r;
}

static void free_ring(read_ring *r) {
  UNPOISON(r->buf, r->slot * r->max_batch);
  free(r->buf);
  free(r->lengths);
  free(r->extra);
}

static void read_round(const harness *h, totals *t) {
  uint32_t count = 1 + below(MAX_RECORDS);
  record records[MAX_RECORDS];
  for (uint32_t j = 0; j < count; j++) {
    make_record(&records[j]);
    ssize_t sent = send(h->writer, records[j].bytes, records[j].size, MSG_DONTWAIT);
    CHECK(sent == (ssize_t)records[j].size, "send of a %u-byte record: %s", records[j].size, strerror(errno));
  }
  read_ring r = make_ring(h, records, count);
  seam.ring = &r;
  seam.inject = chance(30);
  uint32_t next = 0; /* the next record to come out */
  for (uint32_t calls = 0;; calls++) {
    CHECK(calls < 10000, "the records never all came out");
    seam.entries = seam.run = seam.longest = 0;
    seam.fatal = 0;
    seam.empty = false;
    int err = 0;
    uint32_t n = tun_read_batch(&r, &err);
    t->batches++;
    CHECK(n == seam.entries && n <= r.max_batch, "%u entries for %u reads", n, seam.entries);
    CHECK(err == seam.fatal, "error %d, %d made", err, seam.fatal);
    CHECK(seam.longest <= MAX_EINVAL_RUN, "%u EINVALs in a row in one batch", seam.longest);
    int ended = n == r.max_batch ? ENDED_FULL : seam.empty ? ENDED_EMPTY : seam.fatal ? ENDED_FAILED : ENDED_EINVAL_RUN;
    if (ended == ENDED_EINVAL_RUN) {
      CHECK(seam.run == MAX_EINVAL_RUN, "a batch of %u ended after %u EINVALs in a row", n, seam.run);
      t->einval_runs_ended++;
    }
    t->failures += seam.fatal != 0;
    for (uint32_t i = 0; i < n; i++) {
      t->entries++;
      if (seam.got[i] < 0) {
        CHECK(r.lengths[i] == 0 && r.extra[i] == 0, "an EINVAL entry of length %u", r.lengths[i]);
        continue;
      }
      CHECK(next < count, "more entries than records");
      check_entry(&r, i, &records[next++], (uint32_t)seam.got[i], t);
    }
    if (ended == ENDED_EMPTY && seam.storm == 0) break;
  }
  CHECK(next == count, "%u of %u records came out", next, count);
  t->rounds++;
  t->records += count;
  free_ring(&r);
  for (uint32_t j = 0; j < count; j++) {
    free(records[j].bytes);
    free(records[j].want);
  }
}

int main(int argc, char **argv) {
  uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 0x7e57ab1e;
  uint32_t rounds = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 2000;
  rng_state = seed;
  alarm(120);
  room_a = must_malloc(PACKET_ROOM + VNET_HDR_BYTES);
  room_b = must_malloc(PACKET_ROOM + VNET_HDR_BYTES);
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
        strerror(errno));
  int bytes = 16 << 20; /* a round's records, all in flight at once */
  CHECK(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) == 0 ||
            setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes) == 0,
        "SO_SNDBUF: %s", strerror(errno));
  harness h = {sv[0], sv[1]};
  totals t = {0};
  for (uint32_t n = 0; n < rounds; n++) read_round(&h, &t);
  t.einval = seam.einval;
  t.eintr = seam.eintr;
  close(sv[0]);
  close(sv[1]);
  free(room_a);
  free(room_b);
  printf("fuzz_tun: seed 0x%llx: %u rounds, %u records read in %u batches into %u entries: %u super-packets with "
         "their gso words, %u checksums completed, %u unchanged, %u dropped (%u too long for the slot), %u other; %u "
         "EINVAL (%u batches ended by %u in a row), %u EINTR, %u read failures: all checks passed\n",
         (unsigned long long)seed, t.rounds, t.records, t.batches, t.entries, t.words, t.completed, t.unchanged,
         t.dropped, t.too_long, t.any, t.einval, t.einval_runs_ended, MAX_EINVAL_RUN, t.eintr, t.failures);
  return 0;
}
