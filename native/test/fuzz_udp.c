/*
 * fuzz_udp.c: the send path of native/udp.c (udp_send: gathering super-packets' segment headers into the send
 * scratch, send_wire's chunks of sendmmsg messages and GSO runs) over real loopback UDP sockets, under
 * AddressSanitizer and UndefinedBehaviorSanitizer, with a fixed seed. src/dataplane/tun/sanitizers.test.ts
 * builds and runs it:
 *
 *   gcc -std=gnu11 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
 *       -D_GNU_SOURCE -I native native/checksum.c native/offload.c native/udp.c native/test/fuzz_udp.c \
 *       -Wl,--wrap=sendmmsg -o fuzz_udp
 *   ./fuzz_udp [seed [rounds]]
 *
 * Each round sends one batch with udp_send from a dual-stack socket (udp_open) or an IPv4-only one, with GSO
 * or without, to two receivers on 127.0.0.1 and ::1 (one with UDP_GRO, read with udp_recv_batch in both
 * modes), and to 255.255.255.255 (refused: EACCES). The batches mix ordinary packets (runs of equal ones,
 * some too big for UDP: EMSGSIZE), valid TCP/UDP super-packets (IPv4 with options, IPv6 with up to 16 KiB of
 * extension headers, gso words 1-8, real MSSs, 0xffff, random), truncated and mutated ones (fuzz.h), more
 * packets than the scratch holds, and batches built to meet the send scratch's two limits exactly: 1,024
 * datagrams (one super-packet of 1,023, 1,024 or 1,025 segments, the last dropped; or ordinary packets and
 * then one that fills the scratch to exactly 1,024, or one over), and 256 KiB of segment headers (31, 32 or 33
 * segments behind 8 KiB of headers; then small-header segments that fill the rest exactly, or pass it by 4
 * bytes, the least headers can). Every packet lies in a buffer of exactly its size (poisoned gaps between
 * them), and the scratch is exactly SEND_WIRE_MAX entries and SEND_HEADER_BYTES bytes, so ASan catches a
 * gather or an iovec that strays by a byte.
 *
 * sendmmsg is wrapped (ld --wrap): the wrapper checks every call as the kernel would get it (at most 64
 * messages and 1,024 iovecs, each GSO message at most 64 datagrams and 65,507 bytes, each datagram whole
 * iovecs; it reads every byte, and every segment must be a packet with valid checksums by the reference sum),
 * counts what the kernel took, and in some rounds makes calls fail as a kernel may: EINTR, EAGAIN/ENOBUFS
 * (busy), EIO/EINVAL/EMSGSIZE/EHOSTUNREACH (a run refused whole or a datagram rejected), EBADF/EFAULT/ENOTSOCK
 * (the socket fails), or a short count. After each call the result must add up: sent + rejected + busy +
 * unsent = the batch's wire datagrams (from the builder's own segment counts, or the plans for malformed
 * input), dropped = the super-packets that cannot be cut, sent / GSO messages / refused runs = what the
 * wrapper saw, a failure exactly when one was made (reported, with what went out before it as sent); and
 * the receivers must get every datagram sent, and as many bytes. A gather that made no progress would loop
 * for ever: alarm() ends the run after 120 s. Any failure aborts with a message; a clean run prints one
 * summary line and exits 0.
 */
#define FUZZ_NAME "fuzz_udp"
#include <poll.h>
#include <unistd.h>

#include "fuzz.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define CHUNK_MAX 64                    /* messages per sendmmsg call (udp.c's SEND_CHUNK) */
#define IOVS_MAX 1024                   /* iovecs per call (udp.c's SEND_IOVS; the kernel's UIO_MAXIOV) */
#define MAX_PACKETS (MAX_SEGMENTS * 20) /* what a gapped batch holds */
#define RECV_SLOTS 64                   /* per receive batch */
#define GRO_SLOT (65536 + 64)           /* a UDP GRO buffer (udp.ts's GRO_BUFFER_BYTES) */
#define BIG_RCVBUF (64 << 20)           /* each receiver's buffer: a whole round fits */

/* ---- the sendmmsg seam ------------------------------------------------------------------------------- */

int __real_sendmmsg(int fd, struct mmsghdr *msgs, unsigned int n, int flags);

/* What the wrapper saw during one udp_send call, and what it is to inject. */
typedef struct {
  bool inject;                 /* make some calls fail (else pass every call through) */
  const send_scratch *scratch; /* udp_send's: a datagram whose headers lie there is a segment */
  int family;                  /* of the sending socket: the size of msg_name */
  uint32_t calls;              /* sendmmsg calls */
  uint32_t sent, gso_taken;    /* datagrams, and GSO messages, the kernel took */
  uint64_t sent_bytes;
  uint32_t refused_runs;       /* calls failed (not busy, not fatal) on a GSO message first */
  uint32_t single_refusals;    /* ... on a single datagram first */
  int fatal;                   /* the errno of the failure made, 0: none */
} seam_state;

static seam_state seam;
static uint8_t datagram[GRO_SLOT]; /* one datagram put together from its iovecs */

/* The UDP_SEGMENT size of a message (0: none, a single datagram). */
static uint32_t segment_size(const struct msghdr *m) {
  if (m->msg_controllen == 0) return 0;
  const struct cmsghdr *c = CMSG_FIRSTHDR(m);
  CHECK(c && c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_SEGMENT && c->cmsg_len == CMSG_LEN(2) &&
            CMSG_NXTHDR((struct msghdr *)m, (struct cmsghdr *)c) == NULL,
        "a control message other than one UDP_SEGMENT");
  uint16_t size;
  memcpy(&size, CMSG_DATA(c), 2);
  CHECK(size > 0, "UDP_SEGMENT 0");
  return size;
}

/* A segment udp_send cut (its headers in the scratch): an IP packet of exactly its length with valid
 * checksums, by the reference sum (parse_l4 only finds the transport header). */
static void check_segment(const uint8_t *p, uint32_t len) {
  l4_info pi;
  CHECK(parse_l4(p, len, &pi) && pi.total == len, "a segment of %u bytes that is not a whole TCP/UDP packet", len);
  bool v6 = pi.version == 6;
  CHECK(v6 || ref_add(p, pi.l4, 0) == 0xffff, "a segment with a bad IPv4 header checksum");
  uint32_t l4_len = len - pi.l4;
  CHECK(ref_add(p + pi.l4, l4_len, ref_pseudo(p, v6, pi.proto, l4_len)) == 0xffff,
        "a %s segment of %u bytes with a bad checksum", pi.proto == IPPROTO_TCP ? "TCP" : "UDP", len);
}

/* Checks message m as the kernel would get it and returns its datagrams: the iovecs cut at the segment size
 * (the last datagram may be shorter), each datagram one or two whole iovecs (headers, then payload), every
 * byte read (ASan: inside a packet or the scratch), every segment valid. */
static uint32_t check_message(const struct msghdr *m, uint64_t *bytes) {
  const send_scratch *sc = seam.scratch;
  socklen_t want_name = seam.family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  CHECK(m->msg_name && m->msg_namelen == want_name && ((struct sockaddr *)m->msg_name)->sa_family == seam.family,
        "a destination of the socket's family");
  CHECK(m->msg_iovlen >= 1, "a message without iovecs");
  uint32_t size = segment_size(m);
  uint64_t total = 0;
  for (size_t k = 0; k < m->msg_iovlen; k++) total += m->msg_iov[k].iov_len;
  uint32_t n = size ? (uint32_t)((total + size - 1) / size) : 1;
  if (size) {
    CHECK(total > size && total <= UDP_GSO_MAX_BYTES && n <= MAX_SEGMENTS, "a GSO message of %llu bytes in %u",
          (unsigned long long)total, size);
  } else {
    /* an ordinary packet, or one segment (the largest IPv6 packet: the kernel refuses it, EMSGSIZE) */
    CHECK(total <= IP_MAX_BYTES + 40, "a datagram of %llu bytes", (unsigned long long)total);
  }
  size_t k = 0;
  for (uint32_t d = 0; d < n; d++) {
    uint64_t left = total - (uint64_t)d * (size ? size : 0);
    uint32_t want = (uint32_t)(size && left > size ? size : left), got = 0, parts = 0;
    const uint8_t *head = m->msg_iov[k].iov_base;
    while (got < want || (want == 0 && parts == 0)) {
      CHECK(k < m->msg_iovlen && parts < 2, "datagram %u of a message is not one or two whole iovecs", d);
      const struct iovec *v = &m->msg_iov[k++];
      CHECK(got + v->iov_len <= want, "an iovec across two datagrams");
      memcpy(datagram + got, v->iov_base, v->iov_len);
      got += (uint32_t)v->iov_len;
      parts++;
    }
    bool segment = (uintptr_t)head - (uintptr_t)sc->headers < SEND_HEADER_BYTES;
    if (segment) check_segment(datagram, got);
  }
  CHECK(k == m->msg_iovlen, "iovecs left over after the last datagram");
  *bytes += total;
  return n;
}

/* The call the kernel would get from a real sendmmsg, with udp.c's errors made in some rounds. */
int __wrap_sendmmsg(int fd, struct mmsghdr *msgs, unsigned int n, int flags) {
  CHECK(n >= 1 && n <= CHUNK_MAX, "sendmmsg of %u messages", n);
  size_t iovs = 0;
  uint32_t datagrams[CHUNK_MAX];
  uint64_t bytes[CHUNK_MAX];
  for (unsigned m = 0; m < n; m++) {
    iovs += msgs[m].msg_hdr.msg_iovlen;
    bytes[m] = 0;
    datagrams[m] = check_message(&msgs[m].msg_hdr, &bytes[m]);
  }
  CHECK(iovs <= IOVS_MAX, "sendmmsg with %zu iovecs", iovs);
  seam.calls++;
  int err = 0;
  if (seam.inject) {
    uint32_t roll = below(100);
    if (roll < 4) {
      errno = EINTR;
      return -1;
    }
    if (roll < 8) {
      err = chance(50) ? EAGAIN : ENOBUFS;
    } else if (roll < 9) {
      static const int FATAL[] = {EBADF, EFAULT, ENOTSOCK};
      err = seam.fatal = FATAL[below(3)];
    } else if (roll < 16) {
      static const int REFUSED[] = {EIO, EINVAL, EMSGSIZE, EHOSTUNREACH};
      err = REFUSED[below(4)];
    } else if (roll < 30 && n > 1) {
      n = 1 + below(n - 1); /* a short count: the kernel stopped early */
    }
  }
  int got = -1;
  if (err == 0) {
    got = __real_sendmmsg(fd, msgs, n, flags);
    if (got < 0) err = errno;
  }
  if (got < 0) {
    if (!is_busy(err) && !is_fatal(err) && err != EINTR) {
      if (datagrams[0] > 1) seam.refused_runs++;
      else seam.single_refusals++;
    }
    errno = err;
    return -1;
  }
  for (int m = 0; m < got; m++) {
    seam.sent += datagrams[m];
    seam.sent_bytes += bytes[m];
    if (datagrams[m] > 1) seam.gso_taken++;
  }
  return got;
}

/* ---- sockets ----------------------------------------------------------------------------------------- */

typedef struct {
  udp_socket s;
  read_ring ring;
  uint8_t *buf;
} receiver;

static void receiver_open(receiver *rx, bool gro) {
  os_error e;
  CHECK(udp_open(0, gro, NULL, &rx->s, &e), "udp_open: %s: %s", e.syscall, strerror(e.err));
  CHECK(rx->s.family == AF_INET6, "a dual-stack receiver (the host needs IPv6 on loopback)");
  gro = gro && rx->s.gro;
  size_t slot = gro ? GRO_SLOT : IP_MAX_BYTES + 1, entries = RECV_SLOTS * (gro ? GRO_MAX_SEGMENTS : 1);
  rx->buf = must_malloc(RECV_SLOTS * slot);
  rx->ring = (read_ring){.fd = rx->s.fd,
                         .mode = gro ? MODE_RECVMMSG_GRO : MODE_RECVMMSG,
                         .buf = rx->buf,
                         .slot = slot,
                         .max_batch = RECV_SLOTS,
                         .lengths = must_malloc(entries * sizeof(uint32_t)),
                         .addrs = must_malloc(entries * ENDPOINT_BYTES),
                         .extra = gro ? must_malloc(entries * sizeof(uint32_t)) : NULL};
  CHECK(udp_ring_init(&rx->ring), "udp_ring_init");
}

static void receiver_close(receiver *rx) {
  udp_ring_free(&rx->ring);
  free(rx->ring.lengths);
  free(rx->ring.addrs);
  free(rx->ring.extra);
  free(rx->buf);
  close(rx->s.fd);
}

/* Datagrams (and their bytes) received so far, in all. */
typedef struct {
  uint64_t datagrams, bytes;
} received;

static void drain(receiver *rx, received *got) {
  for (;;) {
    int err = 0;
    uint32_t slots, n = udp_recv_batch(&rx->ring, &err, &slots);
    CHECK(err == 0, "udp_recv_batch: %s", strerror(err));
    for (uint32_t i = 0; i < n; i++) got->bytes += rx->ring.lengths[i];
    got->datagrams += n;
    if (slots < rx->ring.max_batch) return;
  }
}

/* Reads both receivers until they have had `want` datagrams (loopback delivers at once, mostly); false after
 * a second without any. */
static bool receive(receiver *rx, received *got, uint64_t want) {
  for (;;) {
    drain(&rx[0], got);
    drain(&rx[1], got);
    if (got->datagrams >= want) return true;
    struct pollfd fds[2] = {{rx[0].s.fd, POLLIN, 0}, {rx[1].s.fd, POLLIN, 0}};
    if (poll(fds, 2, 1000) <= 0) return false;
  }
}

/* An IPv4-only sender (udp_open makes a dual-stack one where the host has IPv6). */
static udp_socket open_udp4(bool want_gso) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr = {htonl(INADDR_LOOPBACK)}};
  CHECK(bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "bind: %s", strerror(errno));
  int zero = 0;
  bool gso = want_gso && setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
  return (udp_socket){.fd = fd, .family = AF_INET, .gso = gso};
}

static void set_endpoint(uint8_t *e, bool v6, uint32_t v4_address, uint16_t port) {
  memset(e, 0, ENDPOINT_BYTES);
  if (v6) {
    e[15] = 1; /* ::1 */
  } else {
    e[10] = e[11] = 0xff;
    wr32(e + 12, v4_address);
  }
  wr16(e + 16, port);
}

/* ---- batches ----------------------------------------------------------------------------------------- */

enum { TO_GRO4, TO_GRO6, TO_PLAIN4, TO_PLAIN6, TO_BROADCAST, DESTINATIONS };
static uint8_t destinations[DESTINATIONS][ENDPOINT_BYTES];

typedef struct {
  uint32_t rounds, packets, super_packets, dropped, datagram_limit, header_limit;
  uint64_t wire, sent, rejected, busy, unsent, gso_messages, refused_runs, failures, calls, received, bytes;
} totals;

/* A batch being built: packets (each copied into a buffer of exactly its length), gso words, destinations,
 * and what the harness expects udp_send to make of them. */
typedef struct {
  uint8_t *packets[MAX_PACKETS];
  uint32_t lengths[MAX_PACKETS], gso[MAX_PACKETS], count;
  uint8_t to[MAX_PACKETS];
  uint32_t wire, dropped, super_packets, to_v6;
  uint32_t scratch_datagrams, scratch_headers; /* a gather in progress, as udp_send's would be */
  bool datagram_limit, header_limit;           /* the gather met a limit */
} batch_plan;

static uint8_t *packet_room; /* 65535 + 40 bytes to build in */

/* Whether a super-packet of nseg segments behind hdr bytes of headers fits an empty scratch. */
static bool fits_scratch(uint64_t nseg, uint64_t hdr) {
  return nseg <= SEND_WIRE_MAX && nseg * hdr <= SEND_HEADER_BYTES;
}

/* Appends packet p (len bytes, copied) with gso word `gso`, to destination `to`, and counts what udp_send is
 * to make of it: its wire datagrams (1, or its plan's segments: build_super checked those against the
 * builder's count), or a drop; and where its gather meets the scratch's limits. */
static void add_packet(batch_plan *b, const uint8_t *p, uint32_t len, uint32_t gso, uint8_t to) {
  CHECK(b->count < MAX_PACKETS, "too many packets");
  uint32_t i = b->count++;
  b->packets[i] = must_malloc(len);
  memcpy(b->packets[i], p, len);
  b->lengths[i] = len;
  b->gso[i] = gso;
  b->to[i] = to;
  uint32_t wire = 1, hdr = 0;
  if (gso) {
    b->super_packets++;
    segment_plan plan;
    if (!plan_segments(p, len, gso, &plan) || !fits_scratch(plan.nseg, plan.hdr)) {
      b->dropped++;
      return;
    }
    wire = plan.nseg;
    hdr = plan.hdr;
  }
  if (b->scratch_datagrams + wire > SEND_WIRE_MAX) b->datagram_limit = true;
  if (b->scratch_headers + (uint64_t)wire * hdr > SEND_HEADER_BYTES) b->header_limit = true;
  if (b->scratch_datagrams + wire > SEND_WIRE_MAX || b->scratch_headers + (uint64_t)wire * hdr > SEND_HEADER_BYTES)
    b->scratch_datagrams = b->scratch_headers = 0; /* udp_send sends what it holds, then starts again */
  b->scratch_datagrams += wire;
  b->scratch_headers += wire * hdr;
  b->wire += wire;
  if (to == TO_GRO6 || to == TO_PLAIN6) b->to_v6 += wire;
}

static uint8_t random_destination(void) {
  if (chance(3)) return TO_BROADCAST;
  return (uint8_t)below(TO_BROADCAST);
}

/* A valid super-packet of shape s with payload_len bytes (random), to be cut at gso; returns its length in
 * packet_room and checks the plan against the builder's own segment count. */
static uint32_t build_super(const shape *s, uint32_t payload_len, uint32_t gso) {
  uint8_t *payload = must_malloc(payload_len);
  fill_random(payload, payload_len);
  layout L = build(s, payload, payload_len, packet_room);
  free(payload);
  make_partial(packet_room, s, &L);
  segment_plan plan;
  uint32_t nseg = payload_len <= gso ? 1 : (payload_len - 1) / gso + 1;
  CHECK(plan_segments(packet_room, L.len, gso, &plan) && plan.nseg == nseg && plan.hdr == L.hdr,
        "the plan of a valid super-packet: %u segments", nseg);
  return L.len;
}

/* The most payload a packet of shape s can carry (its IP length field is 16 bits). */
static uint32_t max_payload(const shape *s) {
  uint32_t l4_hdr = s->udp ? 8 : 20 + s->tcp_options;
  uint32_t ip = s->v6 ? s->extensions * extension_bytes(s) : 20 + s->ip_options;
  return IP_MAX_BYTES - ip - l4_hdr;
}

static uint32_t random_gso_word(void) {
  static const uint32_t MSS[] = {536, 1000, 1220, 1398, 1440, 8960};
  switch (below(8)) {
    case 0: return 0;
    case 1:
    case 2: return 1 + below(8);
    case 3:
    case 4: return MSS[below(sizeof MSS / sizeof MSS[0])];
    case 5: return 0xffff;
    case 6: return 9 + below(500);
    default: return (uint32_t)next64();
  }
}

/* One packet of a mixed batch: a run of equal ordinary packets, a valid super-packet (sometimes with up to
 * 16 KiB of extension headers), a truncated one, or a mutated one with any gso word. */
static void add_mixed(batch_plan *b) {
  uint8_t to = random_destination();
  uint32_t kind = below(100);
  if (kind < 30) {
    uint32_t len = chance(90) ? below(1500) : 60000 + below(IP_MAX_BYTES - 60000 + 1); /* some: EMSGSIZE */
    uint32_t run = chance(50) ? 1 : 1 + below(80);
    fill_random(packet_room, len);
    for (uint32_t k = 0; k < run && b->count < MAX_PACKETS; k++) add_packet(b, packet_room, len, 0, to);
    return;
  }
  if (kind < 85) {
    shape s;
    random_shape(&s, false);
    if (chance(25)) { /* big extension headers: up to 8 of 2 KiB */
      s.v6 = true;
      s.extensions = 1 + below(8);
      s.ext_units = (uint8_t)below(256);
    }
    uint32_t gso = random_gso_word(), room = max_payload(&s);
    if (gso == 0) gso = 1 + below(2000);
    uint32_t payload_len = below(room + 1);
    if (gso < 64 && payload_len > gso * 1100) payload_len = below(gso * 1100 + 1); /* around the datagram limit */
    uint32_t len = build_super(&s, payload_len, gso);
    if (kind >= 75) { /* truncated, sometimes with the IP length saying so */
      len = below(len);
      if (chance(50) && len >= 40) wr16(packet_room + (s.v6 ? 4 : 2), s.v6 ? len - 40 : len);
    }
    add_packet(b, packet_room, len, gso, to);
    return;
  }
  uint32_t len = malformed_packet(packet_room, IP_MAX_BYTES + 40);
  uint32_t gso = random_gso_word();
  add_packet(b, packet_room, len, gso ? gso : 1 + below(8), to);
}

/* More packets than the scratch holds datagrams (1,025 to 1,200, so two gathers or more): small ordinary ones
 * in runs to one destination (GSO runs of up to 64, chunks of 64 messages), and a few super-packets cut at a
 * real MSS. */
static void add_many(batch_plan *b) {
  uint32_t n = SEND_WIRE_MAX + 1 + below(176);
  while (b->count < n) {
    uint8_t to = random_destination();
    if (chance(5)) {
      shape s;
      random_shape(&s, false);
      uint32_t gso = 536 + below(1000);
      add_packet(b, packet_room, build_super(&s, below(max_payload(&s) + 1), gso), gso, to);
      continue;
    }
    uint32_t len = below(300), run = 1 + below(100);
    fill_random(packet_room, len);
    for (uint32_t k = 0; k < run && b->count < n; k++) add_packet(b, packet_room, len, 0, to);
  }
}

/* A super-packet of exactly nseg segments with a random gso word of 1..most (its payload: (nseg - 1) * gso and
 * 1..gso bytes more), of shape s. */
static void add_segments(batch_plan *b, const shape *s, uint32_t nseg, uint32_t most, uint8_t to) {
  uint32_t room = max_payload(s) / nseg, gso = 1 + below(most < room ? most : room);
  add_packet(b, packet_room, build_super(s, gso * (nseg - 1) + 1 + below(gso), gso), gso, to);
}

/* The scratch's datagram limit (1,024): a super-packet of 1,023, 1,024 or 1,025 segments (dropped: it never
 * fits) alone; or behind k ordinary packets, one whose segments fill the scratch to exactly 1,024, or one
 * more (then the scratch is sent first, and it starts the next gather). IPv4 TCP or UDP without options, so
 * the headers stay far from their own limit. */
static void add_datagram_limit(batch_plan *b) {
  uint8_t to = (uint8_t)below(TO_BROADCAST);
  shape s;
  random_shape(&s, false);
  s.v6 = false;
  s.ip_options = 0;
  s.tcp_options = 0;
  if (chance(40)) {
    add_segments(b, &s, SEND_WIRE_MAX - 1 + below(3), 8, to);
    return;
  }
  uint32_t k = 1 + below(SEND_WIRE_MAX - 2);
  fill_random(packet_room, 100);
  for (uint32_t i = 0; i < k; i++) add_packet(b, packet_room, 100, 0, to);
  add_segments(b, &s, SEND_WIRE_MAX - k + below(2), 8, to);
}

/* Two IPv4 TCP super-packets (random IP and TCP options) whose segments' headers add up to exactly `bytes`;
 * false when the header sizes picked cannot make that sum. */
static bool add_headers_summing_to(batch_plan *b, uint32_t bytes, uint8_t to) {
  shape x, y;
  random_shape(&x, false);
  random_shape(&y, false);
  x.v6 = y.v6 = x.udp = y.udp = false;
  uint32_t hx = 40 + x.ip_options + x.tcp_options, hy = 40 + y.ip_options + y.tcp_options;
  for (uint32_t nx = 1; nx * hx < bytes; nx++) {
    if ((bytes - nx * hx) % hy != 0) continue;
    add_segments(b, &x, nx, 100, to);
    add_segments(b, &y, (bytes - nx * hx) / hy, 100, to);
    return true;
  }
  return false;
}

/* The scratch's header limit (256 KiB): IPv6 TCP behind 8 KiB of headers (40 + 8 extension headers of 1,016
 * bytes + 24 of TCP with options), 31, 32 (filling it exactly) or 33 segments (dropped) of them; then another
 * such, or after 31 two small-header ones whose headers fill the 8 KiB left exactly, or pass it by 4 bytes
 * (headers come in multiples of 4: the least overflow there can be), so the second starts a new gather. */
static void add_header_limit(batch_plan *b) {
  shape s;
  random_shape(&s, false);
  s.v6 = true;
  s.udp = false;
  s.extensions = 8;
  s.ext_units = 126;
  s.tcp_options = 4;
  uint32_t hdr = 40 + s.extensions * extension_bytes(&s) + 24, fit = SEND_HEADER_BYTES / hdr;
  CHECK(hdr == 8192 && fit * hdr == SEND_HEADER_BYTES, "8 KiB of headers, %u of them in the scratch", fit);
  uint8_t to = (uint8_t)below(TO_BROADCAST);
  if (chance(50)) {
    add_segments(b, &s, fit - 1 + below(3), 2000, to);
    add_segments(b, &s, fit - 1 + below(3), 2000, to);
    return;
  }
  add_segments(b, &s, fit - 1, 2000, to);
  uint32_t bytes = hdr + (chance(50) ? 4 : 0);
  for (int tries = 0; tries < 20 && !add_headers_summing_to(b, bytes, to); tries++) {
  }
}

/* ---- rounds ------------------------------------------------------------------------------------------ */

typedef struct {
  udp_socket tx6, tx4;
  receiver rx[2]; /* with UDP_GRO, and without */
  send_scratch scratch;
} harness;

static void send_round(harness *h, totals *t) {
  batch_plan *b = must_malloc(sizeof *b);
  memset(b, 0, sizeof *b);
  uint32_t kind = below(100);
  if (kind < 8) {
    add_datagram_limit(b);
  } else if (kind < 16) {
    add_header_limit(b);
  } else if (kind < 22) {
    add_many(b);
  } else {
    uint32_t n = 1 + below(16);
    while (b->count < n) add_mixed(b);
  }
  bool v4_only = chance(20);
  udp_socket s = v4_only ? h->tx4 : h->tx6;
  s.gso = s.gso && chance(60);
  gapped g;
  gapped_init(&g, b->packets, b->lengths, b->count);
  memcpy(g.gso, b->gso, b->count * sizeof b->gso[0]);
  uint8_t *endpoints = must_malloc((size_t)b->count * ENDPOINT_BYTES); /* exactly count of them */
  for (uint32_t i = 0; i < b->count; i++)
    memcpy(endpoints + (size_t)i * ENDPOINT_BYTES, destinations[b->to[i]], ENDPOINT_BYTES);
  packet_batch pb = gapped_batch(&g, true);
  pb.endpoints = endpoints;

  seam = (seam_state){.inject = chance(25), .scratch = &h->scratch, .family = s.family};
  udp_send_result r = {0};
  os_error e = {0};
  bool ok = udp_send(&s, &pb, NULL, &h->scratch, &r, &e);

  CHECK(ok == (seam.fatal == 0), "udp_send %s, a failure %s", ok ? "succeeded" : "failed",
        seam.fatal ? "made" : "not made");
  if (!ok)
    CHECK(e.err == seam.fatal && strcmp(e.syscall, "sendmmsg") == 0 && r.unsent > 0, "the failure reported");
  else CHECK(r.unsent == 0, "unsent %u without a failure", r.unsent);
  CHECK(r.dropped == b->dropped, "dropped %u, %u super-packets cannot be cut", r.dropped, b->dropped);
  CHECK((uint64_t)r.sent + r.rejected + r.busy + r.unsent == b->wire,
        "sent %u + rejected %u + busy %u + unsent %u != %u wire datagrams", r.sent, r.rejected, r.busy, r.unsent,
        b->wire);
  CHECK(r.sent == seam.sent && r.gso_messages == seam.gso_taken && r.refused_runs == seam.refused_runs,
        "sent %u / %u, GSO messages %u / %u, refused runs %u / %u (udp_send / the kernel)", r.sent, seam.sent,
        r.gso_messages, seam.gso_taken, r.refused_runs, seam.refused_runs);
  /* on the IPv4 socket every datagram to an IPv6 endpoint is rejected without a call, when it is tried */
  uint32_t unreachable = v4_only ? b->to_v6 : 0;
  CHECK(r.rejected >= seam.single_refusals && r.rejected <= seam.single_refusals + unreachable,
        "rejected %u: %u refused by the kernel, %u unreachable", r.rejected, seam.single_refusals, unreachable);
  if (ok && r.busy == 0) CHECK(r.rejected == seam.single_refusals + unreachable, "every datagram tried");
  CHECK(r.rejected == 0 || r.last_errno != 0, "a rejection without its errno");

  t->rounds++;
  t->packets += b->count;
  t->super_packets += b->super_packets;
  t->dropped += r.dropped;
  t->datagram_limit += b->datagram_limit;
  t->header_limit += b->header_limit;
  t->wire += b->wire;
  t->sent += r.sent;
  t->rejected += r.rejected;
  t->busy += r.busy;
  t->unsent += r.unsent;
  t->gso_messages += r.gso_messages;
  t->refused_runs += r.refused_runs;
  t->failures += !ok;
  t->calls += seam.calls;
  t->bytes += seam.sent_bytes;

  received got = {0, 0};
  CHECK(receive(h->rx, &got, r.sent), "received %llu of %u datagrams sent", (unsigned long long)got.datagrams,
        r.sent);
  CHECK(got.datagrams == r.sent && got.bytes == seam.sent_bytes, "received %llu datagrams (%llu bytes) for %u (%llu)",
        (unsigned long long)got.datagrams, (unsigned long long)got.bytes, r.sent, (unsigned long long)seam.sent_bytes);
  t->received += got.datagrams;

  free(endpoints);
  gapped_free(&g);
  for (uint32_t i = 0; i < b->count; i++) free(b->packets[i]);
  free(b);
}

int main(int argc, char **argv) {
  uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 0x5eed0dd;
  uint32_t rounds = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 600;
  rng_state = seed;
  alarm(120); /* a gather that makes no progress would loop for ever: SIGALRM ends the run instead */
  packet_room = must_malloc(IP_MAX_BYTES + 40);
  harness h;
  os_error e;
  CHECK(udp_open(0, true, NULL, &h.tx6, &e), "udp_open: %s: %s", e.syscall, strerror(e.err));
  h.tx4 = open_udp4(h.tx6.gso);
  receiver_open(&h.rx[0], true);
  receiver_open(&h.rx[1], false);
  for (int k = 0; k < 2; k++) { /* room for a whole round, so nothing is lost on loopback */
    int bytes = BIG_RCVBUF;
    CHECK(setsockopt(h.rx[k].s.fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) == 0,
          "SO_RCVBUFFORCE (needs CAP_NET_ADMIN): %s", strerror(errno));
  }
  set_endpoint(destinations[TO_GRO4], false, INADDR_LOOPBACK, h.rx[0].s.port);
  set_endpoint(destinations[TO_GRO6], true, 0, h.rx[0].s.port);
  set_endpoint(destinations[TO_PLAIN4], false, INADDR_LOOPBACK, h.rx[1].s.port);
  set_endpoint(destinations[TO_PLAIN6], true, 0, h.rx[1].s.port);
  set_endpoint(destinations[TO_BROADCAST], false, INADDR_BROADCAST, 9);
  /* exactly the sizes udp_send may use */
  h.scratch.wire = must_malloc(SEND_WIRE_MAX * sizeof(wire_datagram));
  h.scratch.headers = must_malloc(SEND_HEADER_BYTES);

  totals t = {0};
  for (uint32_t n = 0; n < rounds; n++) send_round(&h, &t);

  free(h.scratch.wire);
  free(h.scratch.headers);
  receiver_close(&h.rx[0]);
  receiver_close(&h.rx[1]);
  close(h.tx6.fd);
  close(h.tx4.fd);
  free(packet_room);
  printf("fuzz_udp: seed 0x%llx: %u rounds (GSO %s, GRO %s), %u packets (%u super-packets, %u dropped), %u "
         "batches at the datagram limit, %u at the header limit; %llu wire datagrams = %llu sent + %llu rejected + "
         "%llu busy + %llu unsent; %llu GSO messages, %llu refused runs, %llu socket failures, %llu sendmmsg "
         "calls; %llu datagrams received: all checks passed\n",
         (unsigned long long)seed, t.rounds, h.tx6.gso ? "on" : "off", h.rx[0].s.gro ? "on" : "off", t.packets,
         t.super_packets, t.dropped, t.datagram_limit, t.header_limit, (unsigned long long)t.wire,
         (unsigned long long)t.sent, (unsigned long long)t.rejected, (unsigned long long)t.busy,
         (unsigned long long)t.unsent, (unsigned long long)t.gso_messages, (unsigned long long)t.refused_runs,
         (unsigned long long)t.failures, (unsigned long long)t.calls, (unsigned long long)t.received);
  return 0;
}
