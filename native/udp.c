/*
 * udp.c: the UDP socket of the tunnel between nodes. Opening (IPv6 dual-stack, IPv4 only on hosts without
 * IPv6; big buffers; UDP_SEGMENT and UDP_GRO where the kernel has them), batched receives with recvmmsg for
 * the poller (a UDP_GRO buffer split back into its datagrams), and batched sends with sendmmsg, which cut
 * super-packets into wire packets on the way (as wireguard-go's bind coalesces inside Send):
 *
 *   1. gather: packets of the batch become wire datagrams in the send scratch. An ordinary packet (gso word 0)
 *      is one, pointing into the caller's buffer. A super-packet (gso word n) becomes its n-byte-payload
 *      segments: fresh headers with full checksums in the scratch (offload.c), each followed by its payload,
 *      still in the caller's buffer (no copy here; the kernel gathers both).
 *   2. send: consecutive datagrams to one endpoint, all of one size but a shorter last, go as ONE message with
 *      UDP_SEGMENT where the socket has GSO (the kernel, or the NIC, cuts it; between namespaces it travels as
 *      one buffer), the rest as plain messages; sendmmsg takes up to SEND_CHUNK messages per call.
 *      With sessions, the datagrams of a packet whose slot is >= 0 are sealed (WireGuard transport messages,
 *      wg.c) into the scratch first and go as one-part datagrams of the sealed size (see udp_send).
 *   3. repeat while packets are left; stop when the socket is full (busy) or fails (unsent), counting the wire
 *      datagrams not tried.
 *
 * Endpoints are 18 bytes: a 16-byte IPv6 address (IPv4 as ::ffff:a.b.c.d) and a 2-byte big-endian port.
 * System calls only: failures that make the socket unusable come back in an os_error, for glue.c to throw.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <unistd.h>

#include "oaknet.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define SOCKET_BUFFER_BYTES (4 * 1024 * 1024)
#define GRO_CONTROL_BYTES 64 /* room for the UDP_GRO control message (and any other) per receive slot */
#define SEND_CHUNK 64        /* messages per sendmmsg call (stack-allocated headers) */
#define SEND_IOVS 1024       /* iovecs per sendmmsg call: a datagram takes 1 (a whole packet) or 2 (a segment) */

/* ---- endpoints --------------------------------------------------------------------------------------- */

static const uint8_t V4_MAPPED_PREFIX[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void endpoint_from_sockaddr(const sockaddr_any *sa, uint8_t *out) {
  if (sa->sa.sa_family == AF_INET6) {
    memcpy(out, &sa->v6.sin6_addr, 16);
    memcpy(out + 16, &sa->v6.sin6_port, 2);
  } else if (sa->sa.sa_family == AF_INET) {
    memcpy(out, V4_MAPPED_PREFIX, 12);
    memcpy(out + 12, &sa->v4.sin_addr, 4);
    memcpy(out + 16, &sa->v4.sin_port, 2);
  } else {
    memset(out, 0, ENDPOINT_BYTES);
  }
}

/* False when the endpoint cannot be reached through a socket of this family (IPv6 on an IPv4 socket). */
static bool endpoint_to_sockaddr(const uint8_t *in, int family, sockaddr_any *sa, socklen_t *len) {
  memset(sa, 0, sizeof *sa);
  if (family == AF_INET6) {
    sa->v6.sin6_family = AF_INET6;
    memcpy(&sa->v6.sin6_addr, in, 16);
    memcpy(&sa->v6.sin6_port, in + 16, 2);
    *len = sizeof sa->v6;
    return true;
  }
  if (memcmp(in, V4_MAPPED_PREFIX, 12) != 0) return false;
  sa->v4.sin_family = AF_INET;
  memcpy(&sa->v4.sin_addr, in + 12, 4);
  memcpy(&sa->v4.sin_port, in + 16, 2);
  *len = sizeof sa->v4;
  return true;
}

/* ---- open -------------------------------------------------------------------------------------------- */

/* Best effort: SO_*BUFFORCE passes net.core.[rw]mem_max when we have CAP_NET_ADMIN; otherwise clamp. */
static void raise_buffer(int fd, int force_option, int option) {
  int bytes = SOCKET_BUFFER_BYTES;
  if (setsockopt(fd, SOL_SOCKET, force_option, &bytes, sizeof bytes) == 0) return;
  setsockopt(fd, SOL_SOCKET, option, &bytes, sizeof bytes);
}

/* A bound, non-blocking UDP socket of `family` on `addr`, or -1 with errno set. An IPv6 socket on [::] is dual
 * stack; one on a given IPv6 address takes only IPv6. */
static int open_bound(int family, const sockaddr_any *addr, socklen_t len, bool dual_stack) {
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int v6only = dual_stack ? 0 : 1;
  if ((family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0) ||
      bind(fd, &addr->sa, len) < 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

/* Opens a non-blocking UDP socket bound to `port` (0: ephemeral) on `bind_address` (an IPv4 or IPv6 literal)
 * or, when it is NULL, on [::] (dual stack), or on 0.0.0.0 when the host has no IPv6. With offload, out->gso
 * says sendmsg takes UDP_SEGMENT and out->gro that UDP_GRO is on. */
bool udp_open(uint16_t port, bool offload, const char *bind_address, udp_socket *out, os_error *e) {
  sockaddr_any addr;
  memset(&addr, 0, sizeof addr);
  int family = AF_INET6;
  int fd;
  if (bind_address) {
    if (inet_pton(AF_INET, bind_address, &addr.v4.sin_addr) == 1) {
      family = addr.v4.sin_family = AF_INET;
      addr.v4.sin_port = htons(port);
      fd = open_bound(AF_INET, &addr, sizeof addr.v4, false);
    } else if (inet_pton(AF_INET6, bind_address, &addr.v6.sin6_addr) == 1) {
      addr.v6.sin6_family = AF_INET6;
      addr.v6.sin6_port = htons(port);
      fd = open_bound(AF_INET6, &addr, sizeof addr.v6, false);
    } else {
      return os_fail(e, EINVAL, "inet_pton", "udp bind address");
    }
    if (fd < 0) return os_fail(e, errno, "bind", "udp");
  } else {
    addr.v6.sin6_family = AF_INET6;
    addr.v6.sin6_port = htons(port);
    addr.v6.sin6_addr = in6addr_any;
    fd = open_bound(AF_INET6, &addr, sizeof addr.v6, true);
    if (fd < 0) {
      /* Fall back to IPv4 only when the host has no IPv6; any other failure (EADDRINUSE...) is the answer. */
      if (errno != EAFNOSUPPORT && errno != EPROTONOSUPPORT && errno != EADDRNOTAVAIL)
        return os_fail(e, errno, "bind", "udp [::]");
      family = AF_INET;
      memset(&addr, 0, sizeof addr);
      addr.v4.sin_family = AF_INET;
      addr.v4.sin_port = htons(port);
      addr.v4.sin_addr.s_addr = htonl(INADDR_ANY);
      fd = open_bound(AF_INET, &addr, sizeof addr.v4, false);
      if (fd < 0) return os_fail(e, errno, "bind", "udp 0.0.0.0");
    }
  }
  raise_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF);
  raise_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF);
  /* Offloads, where the kernel has them (>= 4.18 / 5.0): UDP_SEGMENT set to 0 only proves that sendmsg takes
   * a per-message segment size; UDP_GRO lets the kernel hand over runs of datagrams as one buffer. */
  out->gso = out->gro = false;
  if (offload) {
    int zero = 0, one = 1;
    out->gso = setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
    out->gro = setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) == 0;
  }
  sockaddr_any bound;
  socklen_t len = sizeof bound;
  if (getsockname(fd, &bound.sa, &len) < 0) {
    int err = errno;
    close(fd);
    return os_fail(e, err, "getsockname", NULL);
  }
  out->fd = fd;
  out->family = family;
  out->port = ntohs(family == AF_INET6 ? bound.v6.sin6_port : bound.v4.sin_port);
  return true;
}

/* ---- receive ----------------------------------------------------------------------------------------- */

/* Makes the ring's recvmmsg headers: one message, iovec and source address per slot (and in GRO mode a
 * control buffer). False when out of memory. */
bool udp_ring_init(read_ring *r) {
  bool gro = r->mode == MODE_RECVMMSG_GRO;
  r->msgs = calloc(r->max_batch, sizeof *r->msgs);
  r->iovs = calloc(r->max_batch, sizeof *r->iovs);
  r->names = calloc(r->max_batch, sizeof *r->names);
  if (gro) r->control = calloc(r->max_batch, GRO_CONTROL_BYTES);
  if (!r->msgs || !r->iovs || !r->names || (gro && !r->control)) return false;
  for (uint32_t i = 0; i < r->max_batch; i++) {
    r->iovs[i].iov_base = r->buf + i * r->slot + r->headroom;
    r->iovs[i].iov_len = r->slot - r->headroom;
    r->msgs[i].msg_hdr.msg_iov = &r->iovs[i];
    r->msgs[i].msg_hdr.msg_iovlen = 1;
    r->msgs[i].msg_hdr.msg_name = &r->names[i];
  }
  return true;
}

void udp_ring_free(read_ring *r) {
  free(r->msgs);
  free(r->iovs);
  free(r->names);
  free(r->control);
  r->msgs = NULL;
  r->iovs = NULL;
  r->names = NULL;
  r->control = NULL;
}

/* The UDP_GRO segment size of a received message; 0 when it is one datagram. */
static uint32_t gro_segment_size(struct msghdr *m) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int size;
      memcpy(&size, CMSG_DATA(c), sizeof size);
      return size > 0 ? (uint32_t)size : 0;
    }
  }
  return 0;
}

/* recvmmsg() until EAGAIN or a full batch of slots, recording each datagram's source endpoint. In
 * recvmmsg-gro mode a slot may hold a run of datagrams the kernel coalesced (UDP_GRO: all of the segment size
 * but the last); each becomes an entry of its own (offset in extra, length, source), so the caller sees
 * datagrams, never runs. Returns the entries made; *slots = the slots filled; *err set on a failure that
 * stops the socket. */
uint32_t udp_recv_batch(read_ring *r, int *err, uint32_t *slots) {
  uint32_t n = 0, out = 0, soft_errors = 0;
  bool gro = r->mode == MODE_RECVMMSG_GRO;
  while (n < r->max_batch) {
    uint32_t want = r->max_batch - n;
    for (uint32_t i = n; i < n + want; i++) {
      r->msgs[i].msg_hdr.msg_namelen = sizeof r->names[i];
      if (gro) {
        r->msgs[i].msg_hdr.msg_control = r->control + (size_t)i * GRO_CONTROL_BYTES;
        r->msgs[i].msg_hdr.msg_controllen = GRO_CONTROL_BYTES;
      }
    }
    int got = recvmmsg(r->fd, r->msgs + n, want, MSG_DONTWAIT, NULL);
    if (got < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      if (is_fatal(e) || e == EINVAL) {
        *err = e;
        break;
      }
      /* An error parked on the socket (ICMP, or what cut a previous recvmmsg short): reported once each. */
      if (++soft_errors > 8) break;
      continue;
    }
    for (uint32_t i = n; i < n + (uint32_t)got; i++) {
      struct msghdr *m = &r->msgs[i].msg_hdr;
      /* with GRO a cut control message may have lost the segment size: the buffer cannot be split, drop it */
      uint32_t len = (m->msg_flags & (gro ? MSG_TRUNC | MSG_CTRUNC : MSG_TRUNC)) ? 0 : r->msgs[i].msg_len;
      if (!gro) {
        r->lengths[i] = len;
        endpoint_from_sockaddr(&r->names[i], r->addrs + (size_t)i * ENDPOINT_BYTES);
        continue;
      }
      uint32_t base = (uint32_t)(i * r->slot + r->headroom);
      uint32_t size = len ? gro_segment_size(m) : 0;
      if (size == 0 || size > len) size = len;
      uint32_t at = 0, k = 0;
      do {
        /* at most GRO_MAX_SEGMENTS entries per slot (the kernel's own limit); more would be one truncated entry */
        bool overflow = k == GRO_MAX_SEGMENTS - 1 && len - at > size;
        r->extra[out] = base + at;
        r->lengths[out] = overflow ? 0 : (len - at < size ? len - at : size);
        endpoint_from_sockaddr(&r->names[i], r->addrs + (size_t)out * ENDPOINT_BYTES);
        out++;
        if (overflow) break;
        at += size;
        k++;
      } while (at < len);
    }
    n += (uint32_t)got;
    if ((uint32_t)got < want) break;
  }
  *slots = n;
  return gro ? out : n;
}

/* ---- send -------------------------------------------------------------------------------------------- */

typedef struct {
  const udp_socket *s;
  bool gso; /* GSO still in use in this call: off after a run refused with EIO (no checksum offload on the
             * route: the next run would fail the same way) */
  udp_send_result *r;
  os_error *e;
} send_state;

static inline uint32_t wire_len(const wire_datagram *d) { return d->head_len + d->payload_len; }
static inline uint32_t wire_parts(const wire_datagram *d) { return d->payload_len ? 2 : 1; }

/* Sends wire[0..count) with sendmmsg, in chunks of messages, each to its own endpoint, runs as GSO messages
 * (see the top of the file). A message the kernel rejects (EHOSTUNREACH, EMSGSIZE, EACCES, an IPv6 endpoint
 * on an IPv4 socket...) is skipped and counted; a run the kernel refuses whole (no checksum offload on the
 * route: EIO; a segment larger than the path MTU: EINVAL...) is sent again datagram by datagram; EAGAIN
 * stops. *done = the first datagram not tried (count unless the socket was full). False (st->e set) when the
 * socket is unusable. */
static bool send_wire(send_state *st, const wire_datagram *wire, uint32_t count, uint32_t *done) {
  const udp_socket *s = st->s;
  udp_send_result *r = st->r;
  struct mmsghdr msgs[SEND_CHUNK];
  struct iovec iovs[SEND_IOVS];
  sockaddr_any names[SEND_CHUNK];
  union {
    char bytes[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } control[SEND_CHUNK];
  uint32_t runs[SEND_CHUNK];
  uint32_t i = 0, no_gso_before = 0;
  while (i < count) {
    uint32_t k = 0, j = i, used = 0;
    /* Fill a chunk up to the first endpoint this socket cannot reach; that one is rejected on its own. */
    while (k < SEND_CHUNK && j < count && used + 2 <= SEND_IOVS) {
      socklen_t name_len;
      const wire_datagram *d = &wire[j];
      if (!endpoint_to_sockaddr(d->to, s->family, &names[k], &name_len)) break;
      uint32_t n = 1, size = wire_len(d), total = size, parts = wire_parts(d);
      if (st->gso && j >= no_gso_before && size > 0) {
        while (n < MAX_SEGMENTS && j + n < count) {
          const wire_datagram *x = &wire[j + n];
          uint32_t next = wire_len(x);
          if (next == 0 || next > size || total + next > UDP_GSO_MAX_BYTES ||
              used + parts + wire_parts(x) > SEND_IOVS || (x->to != d->to && memcmp(d->to, x->to, ENDPOINT_BYTES) != 0))
            break;
          total += next;
          parts += wire_parts(x);
          n++;
          if (next < size) break; /* a shorter datagram ends a run */
        }
      }
      struct iovec *first = &iovs[used];
      for (uint32_t m = 0; m < n; m++) {
        const wire_datagram *x = &wire[j + m];
        iovs[used++] = (struct iovec){(void *)x->head, x->head_len};
        if (x->payload_len) iovs[used++] = (struct iovec){(void *)x->payload, x->payload_len};
      }
      memset(&msgs[k], 0, sizeof msgs[k]);
      msgs[k].msg_hdr.msg_name = &names[k];
      msgs[k].msg_hdr.msg_namelen = name_len;
      msgs[k].msg_hdr.msg_iov = first;
      msgs[k].msg_hdr.msg_iovlen = parts;
      if (n > 1) {
        memset(&control[k], 0, sizeof control[k]);
        msgs[k].msg_hdr.msg_control = control[k].bytes;
        msgs[k].msg_hdr.msg_controllen = sizeof control[k].bytes;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[k].msg_hdr);
        c->cmsg_level = IPPROTO_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t segment = (uint16_t)size;
        memcpy(CMSG_DATA(c), &segment, sizeof segment);
      }
      runs[k++] = n;
      j += n;
    }
    int err = 0;
    if (k == 0) {
      err = EAFNOSUPPORT;
    } else {
      int got = sendmmsg(s->fd, msgs, k, MSG_DONTWAIT);
      if (got < 0) {
        err = errno;
        if (err == EINTR) continue;
      } else {
        /* A short count hides why message `got` stopped the call (the kernel drops that error): the next
         * call starts with it and reports its error directly, or EAGAIN. */
        for (int m = 0; m < got; m++) {
          r->sent += runs[m];
          i += runs[m];
          if (runs[m] > 1) r->gso_messages++;
        }
        continue;
      }
    }
    if (is_busy(err)) break;
    if (is_fatal(err)) {
      *done = i;
      return os_fail(st->e, err, "sendmmsg", NULL);
    }
    if (k > 0 && runs[0] > 1) {
      /* the run as a whole was refused: send its datagrams one by one, which reports their own errors */
      r->refused_runs++;
      no_gso_before = i + runs[0];
      if (err == EIO) st->gso = false;
      continue;
    }
    r->rejected++;
    r->last_errno = err;
    i++;
  }
  *done = i;
  return true;
}

/* Whether a planned super-packet can be gathered at all (into an empty scratch). */
static bool fits_alone(const segment_plan *plan) {
  return plan->nseg <= SEND_WIRE_MAX && (uint64_t)plan->nseg * plan->hdr <= SEND_HEADER_BYTES;
}

/* Wire datagrams that packets from.. of b would make (those not sent after the socket was found full, or
 * failed), from their segment plans (headers are parsed, none is written); super-packets that cannot be cut
 * are counted in r->dropped instead, as the gather would have. */
uint32_t udp_wire_count(const packet_batch *b, uint32_t from, udp_send_result *r) {
  uint32_t n = 0;
  for (uint32_t i = from; i < b->count; i++) {
    uint32_t word = batch_gso(b, i);
    segment_plan plan;
    if (word == 0) n++;
    else if (plan_segments(b->buf + b->offsets[i], b->lengths[i], word, &plan) && fits_alone(&plan)) n += plan.nseg;
    else r->dropped++;
  }
  return n;
}

/* Seals the wire datagram head||payload of packet i into the sealed scratch as one part (see udp_send); false
 * (counted in seal_dropped) when it cannot be sealed or would be too big sealed. */
static bool seal_datagram(const send_sessions *ss, uint32_t i, send_scratch *scratch, size_t *sealed_bytes,
                          wire_datagram *d, udp_send_result *r) {
  uint64_t len = (uint64_t)d->head_len + d->payload_len;
  int64_t n = -1;
  if (ss->seal && len <= UDP_GSO_MAX_BYTES && wg_sealed_len((uint32_t)len) <= UDP_GSO_MAX_BYTES)
    n = ss->seal(ss->table, (uint32_t)ss->slots[i], d->head, d->head_len, d->payload, d->payload_len,
                 scratch->sealed + *sealed_bytes, SEND_SEALED_BYTES - *sealed_bytes);
  if (n < 0) {
    r->seal_dropped++;
    return false;
  }
  *d = (wire_datagram){scratch->sealed + *sealed_bytes, NULL, (uint32_t)n, 0, d->to};
  *sealed_bytes += (size_t)n;
  return true;
}

/* Sends packets 0..count-1 of b (addressed), each to its endpoint, super-packets cut into their segments (see
 * the top of the file); r counts wire datagrams (and dropped super-packets). False (e set) when the socket is
 * unusable: r then still counts what went out before (sent, in earlier chunks) and, in unsent, every wire
 * datagram of the batch that did not (the rest of the scratch, and what the packets not gathered yet would
 * have made).
 *
 * With sessions, a packet whose slot is >= 0 is sealed: each of its wire datagrams (the packet, or a segment's
 * header and payload) is sealed by sessions->seal into scratch->sealed as [header][ciphertext][tag] and goes
 * out as a one-part datagram; equal-sized segments seal to equal sizes, so they stay one GSO run. A datagram
 * that cannot be sealed is dropped (seal_dropped), never sent in plaintext. */
bool udp_send(const udp_socket *s, const packet_batch *b, const send_sessions *sessions, send_scratch *scratch,
              udp_send_result *r, os_error *e) {
  send_state st = {s, s->gso, r, e};
  wire_datagram *wire = scratch->wire;
  uint32_t i = 0;
  while (i < b->count) {
    uint32_t n = 0;
    size_t header_bytes = 0, sealed_bytes = 0;
    for (; i < b->count; i++) {
      uint8_t *p = b->buf + b->offsets[i];
      uint32_t len = b->lengths[i], word = batch_gso(b, i);
      const uint8_t *to = b->endpoints + (size_t)i * ENDPOINT_BYTES;
      bool seal = sessions && sessions->slots[i] >= 0;
      if (word == 0) {
        if (n == SEND_WIRE_MAX) break;
        wire[n] = (wire_datagram){p, NULL, len, 0, to};
        if (seal) {
          if (len <= UDP_GSO_MAX_BYTES && wg_sealed_len(len) > SEND_SEALED_BYTES - sealed_bytes) break;
          if (!seal_datagram(sessions, i, scratch, &sealed_bytes, &wire[n], r)) continue;
        }
        n++;
        continue;
      }
      segment_plan plan;
      if (!plan_segments(p, len, word, &plan) || !fits_alone(&plan)) {
        r->dropped++;
        continue;
      }
      if (plan.nseg > SEND_WIRE_MAX - n || (size_t)plan.nseg * plan.hdr > SEND_HEADER_BYTES - header_bytes)
        break; /* the scratch is full: send what it holds first */
      /* sealed, every segment takes at most the first's size (fits_alone bounds this to well under the room) */
      if (seal && (uint64_t)plan.nseg * wg_sealed_len(plan.hdr + (plan.gso < IP_MAX_BYTES ? plan.gso : IP_MAX_BYTES)) >
                      SEND_SEALED_BYTES - sealed_bytes && sealed_bytes > 0)
        break;
      for (uint32_t k = 0; k < plan.nseg; k++) {
        uint8_t *head = scratch->headers + header_bytes;
        uint32_t payload = write_segment_header(&plan, k, head);
        wire[n] = (wire_datagram){head, segment_payload(&plan, k), plan.hdr, payload, to};
        header_bytes += plan.hdr;
        if (seal && !seal_datagram(sessions, i, scratch, &sealed_bytes, &wire[n], r)) continue;
        n++;
      }
    }
    uint32_t done;
    if (!send_wire(&st, wire, n, &done)) {
      r->unsent += n - done + udp_wire_count(b, i, r);
      return false;
    }
    if (done < n) {
      r->busy += n - done + udp_wire_count(b, i, r);
      break;
    }
  }
  return true;
}
