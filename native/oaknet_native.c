/*
 * oaknet_native: the few Linux system calls that Node.js cannot make, for ProxyTUN's packet I/O.
 *
 * Why this addon exists
 *   - Node cannot open a TUN device. That takes ioctl(TUNSETIFF) on /dev/net/tun, and the resulting
 *     character-device fd does not fit net.Socket (ERR_INVALID_FD_TYPE). fs.read on it ties up a threadpool
 *     thread per read and hangs process exit.
 *   - Node's dgram makes one recvmsg/sendmsg system call per datagram. A tunnel between nodes needs
 *     recvmmsg/sendmmsg to move a whole batch per system call.
 *
 * Shape
 *   - Every call is synchronous and works on a batch. Packets go straight between the kernel and buffers that
 *     the caller owns (no copy in between). Offsets and lengths travel in Uint32Arrays; UDP endpoints are
 *     18 bytes each: a 16-byte IPv6 address (IPv4 as ::ffff:a.b.c.d) and a 2-byte big-endian port.
 *   - Readiness comes from a libuv poll watcher on Node's own event loop: no threads. On a wake-up the
 *     poller reads up to maxBatch packets, makes one JS callback for the batch, and yields to the loop after
 *     MAX_ROUNDS full batches, so other I/O is not starved.
 *   - Every failure becomes a JS Error with `code` (the errno name), `errno` and `syscall`. Nothing aborts.
 *
 * The JS-side contract (types and docs) is in src/dataplane/tun/native.ts.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#define ENDPOINT_BYTES 18
#define MAX_BATCH 1024   /* the kernel's UIO_MAXIOV: the most messages one recvmmsg/sendmmsg takes */
#define MAX_ROUNDS 4     /* full batches per wake-up before yielding to the event loop */
#define SEND_CHUNK 64    /* messages per sendmmsg call (stack-allocated headers) */
#define SOCKET_BUFFER_BYTES (4 * 1024 * 1024)

/* ---------------------------------------------------------------------------------------------------------
 * Errors and argument checks
 * ------------------------------------------------------------------------------------------------------- */

/* Throws Error("<syscall> <what>: <strerror> (<CODE>)") with code, errno and syscall properties. */
static napi_value throw_errno(napi_env env, const char *syscall, const char *what, int err) {
  const char *name = strerrorname_np(err);
  char text[320];
  snprintf(text, sizeof text, "%s%s%s: %s (%s)", syscall, what ? " " : "", what ? what : "", strerror(err),
           name ? name : "?");
  napi_value code, message, error, value;
  if (napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok) {
    napi_throw_error(env, NULL, text);
    return NULL;
  }
  if (napi_create_int32(env, err, &value) == napi_ok) napi_set_named_property(env, error, "errno", value);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &value) == napi_ok)
    napi_set_named_property(env, error, "syscall", value);
  napi_throw(env, error);
  return NULL;
}

/* Throws a TypeError/RangeError with a Node-style code; returns false so callers can `return fail(...)`. */
static bool arg_error(napi_env env, bool range, const char *message) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    if (range) napi_throw_range_error(env, "ERR_OUT_OF_RANGE", message);
    else napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
  }
  return false;
}

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < want) return arg_error(env, false, "too few arguments");
  return true;
}

static bool get_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out) {
  char message[96];
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    snprintf(message, sizeof message, "%s must be a number", name);
    return arg_error(env, false, message);
  }
  if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d) { /* NaN fails the first test */
    snprintf(message, sizeof message, "%s must be an integer in [%lld, %lld]", name, (long long)min,
             (long long)max);
    return arg_error(env, true, message);
  }
  *out = (int64_t)d;
  return true;
}

/* A typed array of the given element type: its data (already offset by byteOffset) and element count. */
static bool get_typed(napi_env env, napi_value v, napi_typedarray_type want, const char *name, void **data,
                      size_t *length) {
  char message[96];
  bool is = false;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, length, data, NULL, NULL) != napi_ok || type != want) {
    snprintf(message, sizeof message, "%s must be a %s", name,
             want == napi_uint8_array ? "Buffer or Uint8Array" : "Uint32Array");
    return arg_error(env, false, message);
  }
  return true;
}

static bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined);
}

/* The optional stats out-array ([rejected, lastErrno, ...]) of the write and send calls; NULL when absent. */
static bool get_stats(napi_env env, napi_value v, uint32_t **stats, size_t *length) {
  size_t n = 0;
  *stats = NULL;
  if (length) *length = 0;
  if (is_nullish(env, v)) return true;
  if (!get_typed(env, v, napi_uint32_array, "stats", (void **)stats, &n)) return false;
  if (n < 2) return arg_error(env, true, "stats must have at least 2 elements");
  if (length) *length = n;
  return true;
}

static napi_value make_object(napi_env env, int n, const char **keys, napi_value *values) {
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok) return NULL;
  for (int i = 0; i < n; i++)
    if (napi_set_named_property(env, obj, keys[i], values[i]) != napi_ok) return NULL;
  return obj;
}

static napi_value make_int(napi_env env, int64_t v) {
  napi_value out;
  return napi_create_int64(env, v, &out) == napi_ok ? out : NULL;
}

/* Errors that say the fd itself is unusable (closed, not a socket, bad memory): callers throw on these. */
static bool is_fatal(int err) {
  return err == EBADF || err == EBADFD || err == EFAULT || err == ENOTSOCK;
}

/* Errors that mean "the kernel is full right now": stop the batch, the rest is the caller's to drop. */
static bool is_busy(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS;
}

/* ---------------------------------------------------------------------------------------------------------
 * Endpoints: 16-byte IPv6 address (IPv4 as v4-mapped) + 2-byte big-endian port
 * ------------------------------------------------------------------------------------------------------- */

typedef union {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
} sockaddr_any;

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

/* ---------------------------------------------------------------------------------------------------------
 * Offloads: virtio_net_hdr, checksums, segmentation (TSO/USO done here) and coalescing (GRO done here)
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
 * The reader normalises what the kernel gives into that (a partial checksum on an ordinary packet is
 * completed on read), so nothing else ever sees a half-done checksum on an ordinary packet.
 * ------------------------------------------------------------------------------------------------------- */

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif
#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define VNET_HDR_BYTES ((uint32_t)sizeof(struct virtio_net_hdr)) /* 10 */
#define IP_MAX_BYTES 65535u
#define MAX_SEGMENTS 64        /* datagrams per UDP GSO message (older kernels' UDP_MAX_SEGMENTS); TCP segments
                                * per coalesced write */
#define GRO_MAX_SEGMENTS 128   /* datagrams per UDP GRO buffer: newer kernels' UDP_MAX_SEGMENTS */
#define UDP_GSO_MAX_BYTES 65507u /* the most UDP payload one IPv4 datagram (and so one GSO message) holds */
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void wr16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

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
static uint64_t csum_add(const uint8_t *p, size_t len, uint64_t sum) {
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
static uint16_t csum_fold(uint64_t sum) {
  sum = (sum & 0xffffffffu) + (sum >> 32);
  sum = (sum & 0xffffffffu) + (sum >> 32);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)sum;
}

static inline void put_host16(uint8_t *at, uint16_t v) { memcpy(at, &v, 2); }

/* The TCP/UDP pseudo-header sum of the IP packet at ip: both addresses, the protocol, the transport length
 * (IPv4 RFC 9293 3.1 and IPv6 RFC 8200 8.1 hold the same words apart from zeros). Unfolded. */
static uint64_t pseudo_sum(const uint8_t *ip, int version, uint8_t proto, uint32_t l4_len) {
  uint64_t sum = version == 4 ? csum_add(ip + 12, 8, 0) : csum_add(ip + 8, 32, 0);
  return sum + htons(proto) + htons((uint16_t)(l4_len >> 16)) + htons((uint16_t)l4_len);
}

/* An unfragmented IPv4/IPv6 TCP or UDP packet, as far as segmenting and coalescing need it. */
typedef struct {
  int version;     /* 4 or 6 */
  uint8_t proto;   /* IPPROTO_TCP or IPPROTO_UDP */
  uint32_t l4;     /* offset of the transport header: IP header, IPv4 options, IPv6 extension headers */
  uint32_t l4_hdr; /* transport header bytes: TCP with options, or 8 for UDP */
  uint32_t total;  /* the IP packet's length from its header (<= the bytes at hand) */
} l4_info;

/* Decodes the headers of p (len bytes); false for fragments, other protocols, an IPv6 routing header with
 * segments left (its pseudo-header would name another destination) and anything malformed. */
static bool parse_l4(const uint8_t *p, uint32_t len, l4_info *o) {
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

/* Completes a partial checksum as a NIC would: the sum of [start, len) (which includes the pseudo-header sum
 * already in the field), complemented, stored at start + offset. UDP's 0 goes out as 0xffff (0 = none). */
static bool complete_checksum(uint8_t *p, uint32_t len, uint32_t start, uint32_t offset) {
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
static uint32_t gso_word_from_vnet(const struct virtio_net_hdr *vh, uint8_t *pkt, uint32_t *len) {
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
 * super-packet GSO type and size, NEEDS_CSUM at its transport checksum. False if p cannot be one, or if its
 * gso word does not fit gso_size (0xffff is the kernel's GSO_BY_FRAGS, which it refuses from a writer). */
static bool vnet_for(const uint8_t *p, uint32_t len, uint32_t gso, struct virtio_net_hdr *vh) {
  memset(vh, 0, sizeof *vh);
  if (gso == 0) return true;
  l4_info pi;
  if (gso >= 0xffff || !parse_l4(p, len, &pi)) return false;
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

/* Cuts packet p (len bytes, gso word `gso`) into segments written back to back at out (room bytes), at
 * most max_segs of them, their lengths into seg_lens. An ordinary packet (gso 0) is copied as it is. A
 * super-packet becomes segments of gso payload bytes, each with its own IP header (length, IPv4 id + k,
 * header checksum), TCP header (seq + k * gso; CWR only on the first, FIN and PSH only on the last) or UDP
 * header (length), and a full transport checksum. Returns the number of segments, 0 when p cannot be
 * segmented (not an unfragmented TCP/UDP packet, or malformed), -1 when the segments do not fit. */
static int segment_packet(const uint8_t *p, uint32_t len, uint32_t gso, uint8_t *out, size_t room,
                          uint32_t *seg_lens, uint32_t max_segs) {
  if (max_segs == 0) return -1;
  if (gso == 0) {
    if (len > room) return -1;
    memcpy(out, p, len);
    seg_lens[0] = len;
    return 1;
  }
  l4_info pi;
  if (!parse_l4(p, len, &pi)) return 0;
  uint32_t hdr = pi.l4 + pi.l4_hdr, payload = pi.total - hdr;
  uint32_t nseg = payload <= gso ? 1 : (payload - 1) / gso + 1; /* (payload + gso - 1) / gso can wrap */
  if (nseg > max_segs || (size_t)nseg * hdr + payload > room) return -1;
  bool tcp = pi.proto == IPPROTO_TCP;
  uint32_t seq = tcp ? rd32(p + pi.l4 + 4) : 0;
  uint32_t id = pi.version == 4 ? rd16(p + 4) : 0;
  uint8_t flags = tcp ? p[pi.l4 + 13] : 0;
  uint64_t addresses = pi.version == 4 ? csum_add(p + 12, 8, 0) : csum_add(p + 8, 32, 0);
  uint8_t *o = out;
  for (uint32_t k = 0; k < nseg; k++) {
    uint32_t at = k * gso, plen = payload - at < gso ? payload - at : gso;
    memcpy(o, p, hdr);
    memcpy(o + hdr, p + hdr + at, plen);
    uint32_t l4_len = pi.l4_hdr + plen;
    if (pi.version == 4) {
      wr16(o + 2, hdr + plen);
      wr16(o + 4, id + k);
      o[10] = o[11] = 0;
      put_host16(o + 10, (uint16_t)~csum_fold(csum_add(o, pi.l4, 0)));
    } else {
      wr16(o + 4, hdr + plen - 40);
    }
    uint8_t *l4 = o + pi.l4;
    uint64_t pseudo = addresses + htons(pi.proto) + htons((uint16_t)l4_len);
    if (tcp) {
      uint8_t f = flags;
      if (k > 0) f &= (uint8_t)~TCP_CWR;
      if (k + 1 < nseg) f &= (uint8_t)~(TCP_FIN | TCP_PSH);
      wr32(l4 + 4, seq + at);
      l4[13] = f;
      l4[16] = l4[17] = 0;
      put_host16(l4 + 16, (uint16_t)~csum_fold(csum_add(l4, l4_len, pseudo)));
    } else {
      wr16(l4 + 4, l4_len);
      l4[6] = l4[7] = 0;
      uint16_t c = (uint16_t)~csum_fold(csum_add(l4, l4_len, pseudo));
      put_host16(l4 + 6, c ? c : 0xffff);
    }
    seg_lens[k] = hdr + plen;
    o += hdr + plen;
  }
  return (int)nseg;
}

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

/* One write to a vnet TUN: its virtio header, then either one packet, or a super-packet assembled from a
 * run of segments (a fresh header, then each segment's payload, straight from the caller's buffer). */
typedef struct {
  struct virtio_net_hdr vh;
  uint8_t hdr[40 + 60]; /* a super-packet's headers; or a single segment's transport header */
  struct iovec iov[MAX_SEGMENTS + 2];
  int niov;
  uint32_t covers; /* input packets it stands for */
  bool bad;        /* the one packet carries a gso word it cannot have: reject it */
} vnet_write;

/* Plans packet p with a gso word no virtio header can carry (>= 0xffff, see vnet_for) as segmentPackets would
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

/* Plans the write for packets first.. (count in all): a run of coalescible segments when `coalesce`, else
 * packet `first` alone. */
static void plan_vnet_write(uint8_t *buf, const uint32_t *offsets, const uint32_t *lengths, const uint32_t *gso,
                            uint32_t first, uint32_t count, bool coalesce, vnet_write *w) {
  uint8_t *p = buf + offsets[first];
  uint32_t len = lengths[first];
  uint32_t word = gso ? gso[first] : 0;
  w->covers = 1;
  w->bad = false;
  w->niov = 2;
  w->iov[0] = (struct iovec){&w->vh, VNET_HDR_BYTES};
  w->iov[1] = (struct iovec){p, len};
  tcp_seg head, next;
  if (word != 0 || !coalesce || first + 1 >= count || !gro_candidate(p, len, &head)) {
    w->bad = !vnet_for(p, len, word, &w->vh) && !(word >= 0xffff && plan_one_segment(p, len, word, w));
    return;
  }
  uint32_t hdr = head.pi.l4 + head.pi.l4_hdr, mss = head.payload, total = head.payload, n = 1;
  uint32_t seq = rd32(p + head.pi.l4 + 4) + head.payload, last_payload = head.payload;
  uint8_t last_flags = p[head.pi.l4 + 13];
  bool head_checked = false;
  for (uint32_t j = first + 1; j < count && n < MAX_SEGMENTS; j++) {
    if ((last_flags & TCP_PSH) || last_payload < mss) break; /* PSH or a short segment ends a run */
    if ((gso && gso[j] != 0) || !gro_candidate(buf + offsets[j], lengths[j], &next) || next.payload > mss ||
        hdr + total + next.payload > IP_MAX_BYTES || !gro_continues(&head, n, seq, &next))
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

/* ---------------------------------------------------------------------------------------------------------
 * openTun(name, multiQueue, offload?) -> { fd, name, offloads }
 * ------------------------------------------------------------------------------------------------------- */

/* TUNSETIFF flags: layer-3 packets without the 4-byte packet-information prefix; with offloads, every packet
 * (read or written) starts with a struct virtio_net_hdr. */
static short tun_flags(bool multi_queue, bool offload) {
  short flags = IFF_TUN | IFF_NO_PI;
  if (multi_queue) flags |= IFF_MULTI_QUEUE;
  if (offload) flags |= IFF_VNET_HDR;
  return flags;
}

/* The offloads asked for, most first: TSO (with ECN) and USO (kernel >= 6.2), then TSO alone, then only
 * checksums; the first set the kernel accepts is kept. */
static const unsigned OFFLOAD_CHOICES[] = {
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM,
};

static napi_value js_open_tun(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) {
    arg_error(env, false, "too few arguments");
    return NULL;
  }
  char name[IFNAMSIZ];
  size_t name_len = 0;
  bool multi_queue = false, offload = false;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &name_len) != napi_ok) {
    arg_error(env, false, "name must be a string");
    return NULL;
  }
  if (name_len >= IFNAMSIZ) {
    arg_error(env, true, "name must be shorter than 16 bytes (IFNAMSIZ)");
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_len);
  if (napi_get_value_bool(env, argv[1], &multi_queue) != napi_ok) {
    arg_error(env, false, "multiQueue must be a boolean");
    return NULL;
  }
  if (argc > 2 && !is_nullish(env, argv[2]) && napi_get_value_bool(env, argv[2], &offload) != napi_ok) {
    arg_error(env, false, "offload must be a boolean");
    return NULL;
  }

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "open", "/dev/net/tun", errno);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, name_len);
  ifr.ifr_flags = tun_flags(multi_queue, offload);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "ioctl(TUNSETIFF)", name_len ? name : "(kernel-chosen name)", err);
  }
  ifr.ifr_name[IFNAMSIZ - 1] = 0;
  int64_t offloads = -1; /* -1: no virtio header at all */
  if (offload) {
    int size = (int)VNET_HDR_BYTES;
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) {
      int err = errno;
      close(fd);
      return throw_errno(env, "ioctl(TUNSETVNETHDRSZ)", ifr.ifr_name, err);
    }
    offloads = 0;
    for (size_t i = 0; i < sizeof OFFLOAD_CHOICES / sizeof OFFLOAD_CHOICES[0]; i++) {
      if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)OFFLOAD_CHOICES[i]) == 0) {
        offloads = OFFLOAD_CHOICES[i];
        break;
      }
    }
  }

  napi_value values[3], result = NULL;
  if ((values[0] = make_int(env, fd)) &&
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &values[1]) == napi_ok &&
      (values[2] = make_int(env, offloads)))
    result = make_object(env, 3, (const char *[]){"fd", "name", "offloads"}, values);
  if (!result) close(fd);
  return result;
}

/* ---------------------------------------------------------------------------------------------------------
 * udpOpen(bindPort, offload?) -> { fd, port, family, gso, gro }
 * ------------------------------------------------------------------------------------------------------- */

/* Best effort: SO_*BUFFORCE passes net.core.[rw]mem_max when we have CAP_NET_ADMIN; otherwise clamp. */
static void raise_buffer(int fd, int force_option, int option) {
  int bytes = SOCKET_BUFFER_BYTES;
  if (setsockopt(fd, SOL_SOCKET, force_option, &bytes, sizeof bytes) == 0) return;
  setsockopt(fd, SOL_SOCKET, option, &bytes, sizeof bytes);
}

/* A bound, non-blocking IPv6 dual-stack socket, or -1 with errno set. */
static int open_udp6(uint16_t port) {
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int off = 0;
  struct sockaddr_in6 addr = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT};
  if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0 ||
      bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

static napi_value js_udp_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  int64_t port;
  bool offload = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1) {
    arg_error(env, false, "too few arguments");
    return NULL;
  }
  if (!get_int(env, argv[0], "bindPort", 0, 65535, &port)) return NULL;
  if (argc > 1 && !is_nullish(env, argv[1]) && napi_get_value_bool(env, argv[1], &offload) != napi_ok) {
    arg_error(env, false, "offload must be a boolean");
    return NULL;
  }

  int family = AF_INET6;
  int fd = open_udp6((uint16_t)port);
  if (fd < 0) {
    /* Fall back to IPv4 only when the host has no IPv6; any other failure (EADDRINUSE...) is the answer. */
    if (errno != EAFNOSUPPORT && errno != EPROTONOSUPPORT && errno != EADDRNOTAVAIL)
      return throw_errno(env, "bind", "udp [::]", errno);
    family = AF_INET;
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return throw_errno(env, "socket", "udp4", errno);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = {INADDR_ANY}};
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
      int err = errno;
      close(fd);
      return throw_errno(env, "bind", "udp 0.0.0.0", err);
    }
  }
  raise_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF);
  raise_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF);
  /* Offloads, where the kernel has them (>= 4.18 / 5.0): UDP_SEGMENT set to 0 only proves that sendmsg takes
   * a per-message segment size; UDP_GRO lets the kernel hand over runs of datagrams as one buffer. */
  bool gso = false, gro = false;
  if (offload) {
    int zero = 0, one = 1;
    gso = setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
    gro = setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) == 0;
  }

  sockaddr_any bound;
  socklen_t len = sizeof bound;
  if (getsockname(fd, &bound.sa, &len) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "getsockname", NULL, err);
  }
  uint16_t bound_port = ntohs(family == AF_INET6 ? bound.v6.sin6_port : bound.v4.sin_port);
  napi_value values[5], result = NULL;
  if ((values[0] = make_int(env, fd)) && (values[1] = make_int(env, bound_port)) &&
      (values[2] = make_int(env, family == AF_INET6 ? 6 : 4)) &&
      napi_get_boolean(env, gso, &values[3]) == napi_ok && napi_get_boolean(env, gro, &values[4]) == napi_ok)
    result = make_object(env, 5, (const char *[]){"fd", "port", "family", "gso", "gro"}, values);
  if (!result) close(fd);
  return result;
}

/* ---------------------------------------------------------------------------------------------------------
 * The poller: startPoll / stopPoll
 *
 * Lifetime: startPoll links a poller into the per-environment list and returns its id (a number, so a
 * stale or repeated stopPoll can never touch freed memory). stopPoll, closeFd, a fatal read error, or
 * environment teardown unlink it, stop the watcher and uv_close it; the close callback frees it. A stopped
 * watcher no longer keeps the event loop alive. Stopping from inside onBatch is safe: the poller checks
 * `stopped` after every callback and its memory lives until the close callback.
 * ------------------------------------------------------------------------------------------------------- */

enum poll_mode { MODE_READ, MODE_READ_VNET, MODE_RECVMMSG, MODE_RECVMMSG_GRO };

#define GRO_CONTROL_BYTES 64 /* room for the UDP_GRO control message (and any other) per slot */

typedef struct poller {
  uv_poll_t watcher;
  napi_env env;
  struct addon *addon;
  struct poller *next;
  uint32_t id;
  int fd;
  enum poll_mode mode;
  bool stopped;
  uint8_t *buf;         /* slot i starts at buf + i * slot; its packet at + headroom */
  size_t slot, headroom;
  uint32_t max_batch;
  uint32_t *lengths;    /* lengths[i] = packet i's length; 0 = truncated (slot too small) */
  uint8_t *addrs;       /* recvmmsg: source endpoint of packet i at addrs + i * ENDPOINT_BYTES */
  uint32_t *extra;      /* read-vnet: gso word of packet i; recvmmsg-gro: offset of datagram i in buf */
  napi_ref buf_ref, lengths_ref, addrs_ref, extra_ref, callback_ref;
  napi_async_context async_context;
  napi_async_cleanup_hook_handle teardown_hook;
  struct mmsghdr *msgs; /* recvmmsg only: one header, iovec and source address per slot */
  struct iovec *iovs;
  sockaddr_any *names;
  uint8_t *control;     /* recvmmsg-gro: GRO_CONTROL_BYTES of control buffer per slot */
} poller;

typedef struct addon {
  poller *pollers; /* running pollers only */
  uint32_t next_id;
} addon;

static void free_poller(poller *p) {
  if (p->teardown_hook) napi_remove_async_cleanup_hook(p->teardown_hook);
  free(p->msgs);
  free(p->iovs);
  free(p->names);
  free(p->control);
  free(p);
}

static void on_watcher_closed(uv_handle_t *handle) {
  free_poller(handle->data);
}

static void delete_ref(napi_env env, napi_ref *ref) {
  if (*ref) napi_delete_reference(env, *ref);
  *ref = NULL;
}

/* env_alive is false during environment teardown: Node then releases references and contexts itself. */
static void stop_poller(poller *p, bool env_alive) {
  if (p->stopped) return;
  p->stopped = true;
  for (poller **link = p->addon ? &p->addon->pollers : NULL; link && *link; link = &(*link)->next) {
    if (*link == p) {
      *link = p->next;
      break;
    }
  }
  uv_poll_stop(&p->watcher);
  if (env_alive) {
    delete_ref(p->env, &p->buf_ref);
    delete_ref(p->env, &p->lengths_ref);
    delete_ref(p->env, &p->addrs_ref);
    delete_ref(p->env, &p->extra_ref);
    delete_ref(p->env, &p->callback_ref);
    if (p->async_context) napi_async_destroy(p->env, p->async_context);
    p->async_context = NULL;
  }
  uv_close((uv_handle_t *)&p->watcher, on_watcher_closed);
}

/* Stops a poller from a libuv callback (outside any JS call), inside a handle scope of its own. */
static void stop_from_loop(poller *p) {
  napi_handle_scope scope;
  bool scoped = napi_open_handle_scope(p->env, &scope) == napi_ok;
  stop_poller(p, true);
  if (scoped) napi_close_handle_scope(p->env, scope);
}

static void on_env_teardown(napi_async_cleanup_hook_handle hook, void *arg) {
  /* If the poller was stopped already, its pending close callback removes this hook. */
  stop_poller(arg, false);
}

/* Calls onBatch(value) once. An exception thrown by the callback becomes an uncaught exception. */
static void call_js(poller *p, int32_t value) {
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, recv, arg;
  if (napi_get_reference_value(env, p->callback_ref, &callback) == napi_ok && callback &&
      napi_get_global(env, &recv) == napi_ok && napi_create_int32(env, value, &arg) == napi_ok) {
    napi_status status = napi_make_callback(env, p->async_context, recv, callback, 1, &arg, NULL);
    napi_value exception = NULL, message;
    if (status == napi_pending_exception) {
      napi_get_and_clear_last_exception(env, &exception);
    } else if (status != napi_ok &&
               napi_create_string_utf8(env, "oaknet_native: onBatch could not be called", NAPI_AUTO_LENGTH,
                                       &message) == napi_ok) {
      napi_create_error(env, NULL, message, &exception); /* never lose a batch silently */
    }
    if (exception) napi_fatal_exception(env, exception);
  }
  napi_close_handle_scope(env, scope);
}

#define MAX_EINVAL_RUN 64 /* read-vnet: consecutive EINVAL reads (dropped packets) that end a batch */

/* TUN (or any packet fd): read() until EAGAIN or a full batch. Sets *err on any other failure. With a
 * virtio header (read-vnet) the header goes to the stack and the packet to its slot; the header becomes the
 * packet's gso word. There EINVAL is one packet lost, not a broken fd: the kernel could not describe it in a
 * virtio header ("unexpected GSO type") and has freed it. It becomes a length-0 entry (a counted drop), and
 * MAX_EINVAL_RUN of them in a row end the batch. */
static uint32_t read_batch(poller *p, int *err) {
  size_t room = p->slot - p->headroom;
  uint32_t n = 0, einval_run = 0;
  bool vnet = p->mode == MODE_READ_VNET;
  while (n < p->max_batch) {
    uint8_t *packet = p->buf + n * p->slot + p->headroom;
    struct virtio_net_hdr vh;
    ssize_t r;
    if (vnet) {
      struct iovec iov[2] = {{&vh, VNET_HDR_BYTES}, {packet, room}};
      r = readv(p->fd, iov, 2);
    } else {
      r = read(p->fd, packet, room);
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (vnet && errno == EINVAL) {
        p->extra[n] = 0;
        p->lengths[n++] = 0;
        if (++einval_run >= MAX_EINVAL_RUN) break;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) *err = errno;
      break;
    }
    einval_run = 0;
    if (!vnet) {
      /* TUN reports a packet's full length even when it did not fit: mark it truncated. */
      p->lengths[n++] = (size_t)r > room ? 0 : (uint32_t)r;
      continue;
    }
    uint32_t len = (size_t)r < VNET_HDR_BYTES || (size_t)r - VNET_HDR_BYTES > room ? 0 : (uint32_t)r - VNET_HDR_BYTES;
    p->extra[n] = len ? gso_word_from_vnet(&vh, packet, &len) : 0;
    p->lengths[n++] = len;
  }
  return n;
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

/* UDP: recvmmsg() until EAGAIN or a full batch of slots, recording each datagram's source endpoint. In
 * recvmmsg-gro mode a slot may hold a run of datagrams the kernel coalesced (UDP_GRO: all of the segment size
 * but the last); each becomes an entry of its own (offset in extra, length, source), so the caller sees
 * datagrams, never runs. Returns the entries made. */
static uint32_t recv_batch(poller *p, int *err, uint32_t *slots) {
  uint32_t n = 0, out = 0, soft_errors = 0;
  bool gro = p->mode == MODE_RECVMMSG_GRO;
  while (n < p->max_batch) {
    uint32_t want = p->max_batch - n;
    for (uint32_t i = n; i < n + want; i++) {
      p->msgs[i].msg_hdr.msg_namelen = sizeof p->names[i];
      if (gro) {
        p->msgs[i].msg_hdr.msg_control = p->control + (size_t)i * GRO_CONTROL_BYTES;
        p->msgs[i].msg_hdr.msg_controllen = GRO_CONTROL_BYTES;
      }
    }
    int r = recvmmsg(p->fd, p->msgs + n, want, MSG_DONTWAIT, NULL);
    if (r < 0) {
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
    for (uint32_t i = n; i < n + (uint32_t)r; i++) {
      struct msghdr *m = &p->msgs[i].msg_hdr;
      /* with GRO a cut control message may have lost the segment size: the buffer cannot be split, drop it */
      uint32_t len = (m->msg_flags & (gro ? MSG_TRUNC | MSG_CTRUNC : MSG_TRUNC)) ? 0 : p->msgs[i].msg_len;
      if (!gro) {
        p->lengths[i] = len;
        endpoint_from_sockaddr(&p->names[i], p->addrs + (size_t)i * ENDPOINT_BYTES);
        continue;
      }
      uint32_t base = (uint32_t)(i * p->slot + p->headroom);
      uint32_t size = len ? gro_segment_size(m) : 0;
      if (size == 0 || size > len) size = len;
      uint32_t at = 0, k = 0;
      do {
        /* at most GRO_MAX_SEGMENTS entries per slot (the kernel's own limit); more would be one truncated entry */
        bool overflow = k == GRO_MAX_SEGMENTS - 1 && len - at > size;
        p->extra[out] = base + at;
        p->lengths[out] = overflow ? 0 : (len - at < size ? len - at : size);
        endpoint_from_sockaddr(&p->names[i], p->addrs + (size_t)out * ENDPOINT_BYTES);
        out++;
        if (overflow) break;
        at += size;
        k++;
      } while (at < len);
    }
    n += (uint32_t)r;
    if ((uint32_t)r < want) break;
  }
  *slots = n;
  return gro ? out : n;
}

static void on_readable(uv_poll_t *watcher, int status, int events) {
  poller *p = watcher->data;
  if (p->stopped) return;
  if (status < 0) {
    call_js(p, status); /* libuv errors are negative errno values on Linux */
    stop_from_loop(p);
    return;
  }
  for (int round = 0; round < MAX_ROUNDS; round++) {
    int err = 0;
    uint32_t slots = 0;
    uint32_t n = p->mode == MODE_READ || p->mode == MODE_READ_VNET ? (slots = read_batch(p, &err))
                                                                    : recv_batch(p, &err, &slots);
    if (n > 0) call_js(p, (int32_t)n);
    if (p->stopped) return;
    if (err) {
      call_js(p, -err);
      stop_from_loop(p);
      return;
    }
    if (slots < p->max_batch) return; /* drained */
  }
  /* Still more to read: level-triggered polling wakes us again after the loop has served others. */
}

static poller *find_poller(addon *a, int fd) {
  for (poller *p = a->pollers; p; p = p->next)
    if (p->fd == fd) return p;
  return NULL;
}

static napi_value js_start_poll(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  size_t argc = 10;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 9) {
    arg_error(env, false, "too few arguments");
    return NULL;
  }
  if (argc < 10) napi_get_null(env, &argv[9]);
  addon *a;
  if (napi_get_instance_data(env, (void **)&a) != napi_ok || !a) return NULL;

  int64_t fd, slot, headroom, max_batch;
  char mode_text[16];
  size_t mode_len = 0, buf_len, lengths_len, addrs_len = 0, extra_len = 0;
  void *buf, *lengths, *addrs = NULL, *extra = NULL;
  napi_valuetype callback_type;
  if (!get_int(env, argv[0], "fd", 0, INT32_MAX, &fd)) return NULL;
  enum poll_mode mode;
  if (napi_get_value_string_utf8(env, argv[1], mode_text, sizeof mode_text, &mode_len) != napi_ok) mode_len = 0;
  if (mode_len && strcmp(mode_text, "read") == 0) mode = MODE_READ;
  else if (mode_len && strcmp(mode_text, "read-vnet") == 0) mode = MODE_READ_VNET;
  else if (mode_len && strcmp(mode_text, "recvmmsg") == 0) mode = MODE_RECVMMSG;
  else if (mode_len && strcmp(mode_text, "recvmmsg-gro") == 0) mode = MODE_RECVMMSG_GRO;
  else {
    arg_error(env, false, "mode must be 'read', 'read-vnet', 'recvmmsg' or 'recvmmsg-gro'");
    return NULL;
  }
  bool recv = mode == MODE_RECVMMSG || mode == MODE_RECVMMSG_GRO;
  if (!get_typed(env, argv[2], napi_uint8_array, "buffer", &buf, &buf_len) ||
      !get_int(env, argv[3], "slotSize", 1, 1 << 24, &slot) ||
      !get_int(env, argv[4], "headroom", 0, slot - 1, &headroom) ||
      !get_int(env, argv[5], "maxBatch", 1, MAX_BATCH, &max_batch) ||
      !get_typed(env, argv[6], napi_uint32_array, "lengths", &lengths, &lengths_len))
    return NULL;
  if ((uint64_t)slot * (uint64_t)max_batch > buf_len) {
    arg_error(env, true, "buffer must hold maxBatch slots of slotSize bytes");
    return NULL;
  }
  /* entries per batch: slots, or in GRO mode up to GRO_MAX_SEGMENTS datagrams per slot */
  size_t entries = (size_t)max_batch * (mode == MODE_RECVMMSG_GRO ? GRO_MAX_SEGMENTS : 1);
  if (lengths_len < entries) {
    arg_error(env, true, "lengths must have an element per entry (maxBatch, times 128 for recvmmsg-gro)");
    return NULL;
  }
  if (recv) {
    if (!get_typed(env, argv[7], napi_uint8_array, "addrs", &addrs, &addrs_len)) return NULL;
    if (addrs_len < entries * ENDPOINT_BYTES) {
      arg_error(env, true, "addrs must hold an 18-byte endpoint per entry");
      return NULL;
    }
  }
  if (mode == MODE_READ_VNET || mode == MODE_RECVMMSG_GRO) {
    if (!get_typed(env, argv[9], napi_uint32_array, "extra", &extra, &extra_len)) return NULL;
    if (extra_len < entries) {
      arg_error(env, true, "extra must have an element per entry");
      return NULL;
    }
  }
  if (mode == MODE_RECVMMSG_GRO && (uint64_t)slot * (uint64_t)max_batch > UINT32_MAX) {
    arg_error(env, true, "buffer offsets must fit in 32 bits");
    return NULL;
  }
  if (napi_typeof(env, argv[8], &callback_type) != napi_ok || callback_type != napi_function) {
    arg_error(env, false, "onBatch must be a function");
    return NULL;
  }
  if (find_poller(a, (int)fd)) return throw_errno(env, "startPoll", "fd is already polled", EEXIST);

  poller *p = calloc(1, sizeof *p);
  if (!p) return throw_errno(env, "calloc", "poller", ENOMEM);
  p->env = env;
  p->addon = a;
  p->fd = (int)fd;
  p->mode = mode;
  p->buf = buf;
  p->slot = (size_t)slot;
  p->headroom = (size_t)headroom;
  p->max_batch = (uint32_t)max_batch;
  p->lengths = lengths;
  p->addrs = addrs;
  p->extra = extra;
  if (recv) {
    p->msgs = calloc(p->max_batch, sizeof *p->msgs);
    p->iovs = calloc(p->max_batch, sizeof *p->iovs);
    p->names = calloc(p->max_batch, sizeof *p->names);
    if (mode == MODE_RECVMMSG_GRO) p->control = calloc(p->max_batch, GRO_CONTROL_BYTES);
    if (!p->msgs || !p->iovs || !p->names || (mode == MODE_RECVMMSG_GRO && !p->control)) {
      free_poller(p);
      return throw_errno(env, "calloc", "recvmmsg headers", ENOMEM);
    }
    for (uint32_t i = 0; i < p->max_batch; i++) {
      p->iovs[i].iov_base = p->buf + i * p->slot + p->headroom;
      p->iovs[i].iov_len = p->slot - p->headroom;
      p->msgs[i].msg_hdr.msg_iov = &p->iovs[i];
      p->msgs[i].msg_hdr.msg_iovlen = 1;
      p->msgs[i].msg_hdr.msg_name = &p->names[i];
    }
  }

  uv_loop_t *loop;
  int r;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) r = UV_EINVAL;
  else r = uv_poll_init(loop, &p->watcher, p->fd);
  if (r < 0) {
    free_poller(p);
    return throw_errno(env, "uv_poll_init", NULL, -r);
  }
  p->watcher.data = p;
  p->id = ++a->next_id;
  p->next = a->pollers;
  a->pollers = p;

  napi_value resource, resource_name;
  bool ok = napi_create_reference(env, argv[2], 1, &p->buf_ref) == napi_ok &&
            napi_create_reference(env, argv[6], 1, &p->lengths_ref) == napi_ok &&
            (!recv || napi_create_reference(env, argv[7], 1, &p->addrs_ref) == napi_ok) &&
            (!extra || napi_create_reference(env, argv[9], 1, &p->extra_ref) == napi_ok) &&
            napi_create_reference(env, argv[8], 1, &p->callback_ref) == napi_ok &&
            napi_create_object(env, &resource) == napi_ok &&
            napi_create_string_utf8(env, "oaknet:poll", NAPI_AUTO_LENGTH, &resource_name) == napi_ok &&
            napi_async_init(env, resource, resource_name, &p->async_context) == napi_ok &&
            napi_add_async_cleanup_hook(env, on_env_teardown, p, &p->teardown_hook) == napi_ok;
  if (!ok) {
    stop_poller(p, true);
    return throw_errno(env, "startPoll", "node-api setup", ENOMEM);
  }
  r = uv_poll_start(&p->watcher, UV_READABLE, on_readable);
  if (r < 0) {
    stop_poller(p, true);
    return throw_errno(env, "uv_poll_start", NULL, -r);
  }
  return make_int(env, p->id);
}

static napi_value js_stop_poll(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t id;
  addon *a;
  if (!get_args(env, info, 1, argv) || !get_int(env, argv[0], "handle", 0, UINT32_MAX, &id)) return NULL;
  if (napi_get_instance_data(env, (void **)&a) != napi_ok || !a) return NULL;
  poller *p = a->pollers;
  while (p && p->id != (uint32_t)id) p = p->next;
  if (p) stop_poller(p, true);
  napi_get_boolean(env, p != NULL, &result);
  return result;
}

/* ---------------------------------------------------------------------------------------------------------
 * writePackets / sendPackets
 * ------------------------------------------------------------------------------------------------------- */

typedef struct {
  int fd;
  uint8_t *buf;
  uint32_t *offsets, *lengths, *stats;
  uint32_t count;
} packet_args;

/* fd, buffer, offsets, lengths, count: checks that every packet lies inside the buffer. */
static bool get_packet_args(napi_env env, napi_value *argv, napi_value count_arg, packet_args *out) {
  int64_t fd, count;
  size_t buf_len, offsets_len, lengths_len;
  if (!get_int(env, argv[0], "fd", 0, INT32_MAX, &fd) ||
      !get_typed(env, argv[1], napi_uint8_array, "buffer", (void **)&out->buf, &buf_len) ||
      !get_typed(env, argv[2], napi_uint32_array, "offsets", (void **)&out->offsets, &offsets_len) ||
      !get_typed(env, argv[3], napi_uint32_array, "lengths", (void **)&out->lengths, &lengths_len) ||
      !get_int(env, count_arg, "count", 0, UINT32_MAX, &count))
    return false;
  if ((size_t)count > offsets_len || (size_t)count > lengths_len)
    return arg_error(env, true, "count exceeds offsets or lengths");
  for (uint32_t i = 0; i < (uint32_t)count; i++)
    if ((uint64_t)out->offsets[i] + out->lengths[i] > buf_len)
      return arg_error(env, true, "a packet (offset + length) lies outside the buffer");
  out->fd = (int)fd;
  out->count = (uint32_t)count;
  return true;
}

static void set_stats(uint32_t *stats, uint32_t rejected, int last_errno) {
  if (!stats) return;
  stats[0] = rejected;
  stats[1] = (uint32_t)last_errno;
}

/* writePackets(fd, buffer, offsets, lengths, count, stats?) -> accepted. One write() per packet (TUN takes
 * exactly one packet per write). A packet the kernel rejects is skipped and counted; EAGAIN stops. */
static napi_value js_write_packets(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  size_t argc = 6;
  packet_args a;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 5) {
    arg_error(env, false, "too few arguments");
    return NULL;
  }
  /* Missing trailing arguments read as undefined. */
  if (!get_packet_args(env, argv, argv[4], &a) || !get_stats(env, argv[5], &a.stats, NULL)) return NULL;

  uint32_t accepted = 0, rejected = 0;
  int last_errno = 0;
  for (uint32_t i = 0; i < a.count; i++) {
    ssize_t r;
    do r = write(a.fd, a.buf + a.offsets[i], a.lengths[i]);
    while (r < 0 && errno == EINTR);
    if (r >= 0) {
      accepted++;
      continue;
    }
    int err = errno;
    if (is_busy(err)) break;
    if (is_fatal(err)) return throw_errno(env, "write", NULL, err);
    rejected++; /* EINVAL (not IPv4/IPv6), EIO (device down), EMSGSIZE... */
    last_errno = err;
  }
  set_stats(a.stats, rejected, last_errno);
  return make_int(env, accepted);
}

/* sendPackets(fd, buffer, offsets, lengths, addrs, count, stats?, gso?) -> sent. sendmmsg() in chunks, each
 * message to its own endpoint. A message the kernel rejects (EHOSTUNREACH, EMSGSIZE, EACCES, an IPv6
 * endpoint on an IPv4 socket...) is skipped and counted; EAGAIN stops.
 *
 * With gso (a socket where udpOpen found UDP_SEGMENT), consecutive datagrams to the same endpoint, all of
 * one size but the last (which may be shorter), up to MAX_SEGMENTS and UDP_GSO_MAX_BYTES, go as ONE message
 * with a UDP_SEGMENT control message: the kernel cuts it into those datagrams (or the NIC does), and they
 * travel as one buffer through the stack. A run the kernel refuses as a whole (no checksum offload on the
 * route: EIO; a segment larger than the path MTU: EINVAL...) is sent again datagram by datagram; stats[2]
 * counts such runs, stats[3] the GSO messages (runs of 2 or more) the kernel took, each as far as stats is
 * long. After an EIO refusal the rest of the call goes without GSO (the next run would most likely fail
 * the same way). */
#define SEND_IOVS 1024

static napi_value js_send_packets(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  size_t argc = 8, addrs_len;
  packet_args a;
  uint8_t *addrs;
  bool gso = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 6) {
    arg_error(env, false, "too few arguments");
    return NULL;
  }
  if (!get_packet_args(env, argv, argv[5], &a) ||
      !get_typed(env, argv[4], napi_uint8_array, "addrs", (void **)&addrs, &addrs_len))
    return NULL;
  if (addrs_len < (size_t)a.count * ENDPOINT_BYTES) {
    arg_error(env, true, "addrs must hold count endpoints of 18 bytes");
    return NULL;
  }
  size_t stats_len = 0;
  if (!get_stats(env, argv[6], &a.stats, &stats_len)) return NULL;
  if (argc > 7 && !is_nullish(env, argv[7]) && napi_get_value_bool(env, argv[7], &gso) != napi_ok) {
    arg_error(env, false, "gso must be a boolean");
    return NULL;
  }

  int family;
  socklen_t family_len = sizeof family;
  if (getsockopt(a.fd, SOL_SOCKET, SO_DOMAIN, &family, &family_len) < 0)
    return throw_errno(env, "getsockopt(SO_DOMAIN)", NULL, errno);

  struct mmsghdr msgs[SEND_CHUNK];
  struct iovec iovs[SEND_IOVS];
  sockaddr_any names[SEND_CHUNK];
  union {
    char bytes[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } control[SEND_CHUNK];
  uint32_t runs[SEND_CHUNK];
  uint32_t i = 0, sent = 0, rejected = 0, refused_runs = 0, gso_sent = 0, no_gso_before = 0;
  int last_errno = 0;
  while (i < a.count) {
    uint32_t k = 0, j = i, used = 0;
    /* Fill a chunk up to the first endpoint this socket cannot reach; that one is rejected on its own. */
    while (k < SEND_CHUNK && j < a.count && used < SEND_IOVS) {
      socklen_t name_len;
      const uint8_t *to = addrs + (size_t)j * ENDPOINT_BYTES;
      if (!endpoint_to_sockaddr(to, family, &names[k], &name_len)) break;
      uint32_t n = 1, size = a.lengths[j], total = size;
      if (gso && j >= no_gso_before && size > 0) {
        while (n < MAX_SEGMENTS && j + n < a.count && used + n < SEND_IOVS) {
          uint32_t next = a.lengths[j + n];
          if (next == 0 || next > size || total + next > UDP_GSO_MAX_BYTES ||
              memcmp(to, addrs + (size_t)(j + n) * ENDPOINT_BYTES, ENDPOINT_BYTES) != 0)
            break;
          total += next;
          n++;
          if (next < size) break; /* a shorter datagram ends a run */
        }
      }
      for (uint32_t m = 0; m < n; m++) {
        iovs[used + m].iov_base = a.buf + a.offsets[j + m];
        iovs[used + m].iov_len = a.lengths[j + m];
      }
      memset(&msgs[k], 0, sizeof msgs[k]);
      msgs[k].msg_hdr.msg_name = &names[k];
      msgs[k].msg_hdr.msg_namelen = name_len;
      msgs[k].msg_hdr.msg_iov = &iovs[used];
      msgs[k].msg_hdr.msg_iovlen = n;
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
      used += n;
      j += n;
    }
    int err = 0;
    if (k == 0) {
      err = EAFNOSUPPORT;
    } else {
      int r = sendmmsg(a.fd, msgs, k, MSG_DONTWAIT);
      if (r < 0) {
        err = errno;
        if (err == EINTR) continue;
      } else {
        /* A short count hides why message r stopped the call (the kernel drops that error): the next
         * call starts with it and reports its error directly, or EAGAIN. */
        for (int m = 0; m < r; m++) {
          sent += runs[m];
          i += runs[m];
          if (runs[m] > 1) gso_sent++;
        }
        continue;
      }
    }
    if (is_busy(err)) break;
    if (is_fatal(err)) return throw_errno(env, "sendmmsg", NULL, err);
    if (k > 0 && runs[0] > 1) {
      /* the run as a whole was refused: send its datagrams one by one, which reports their own errors */
      refused_runs++;
      no_gso_before = i + runs[0];
      if (err == EIO) gso = false;
      continue;
    }
    rejected++;
    last_errno = err;
    i++;
  }
  set_stats(a.stats, rejected, last_errno);
  if (a.stats && stats_len > 2) a.stats[2] = refused_runs;
  if (a.stats && stats_len > 3) a.stats[3] = gso_sent;
  return make_int(env, sent);
}

/* ---------------------------------------------------------------------------------------------------------
 * writeVnetPackets / segmentPackets / coalescePackets: the offload paths (see "Offloads" above)
 * ------------------------------------------------------------------------------------------------------- */

/* An optional Uint32Array of at least min_len elements (the per-packet gso words); NULL when absent. */
static bool get_words(napi_env env, napi_value v, const char *name, size_t min_len, uint32_t **out) {
  size_t n;
  char message[96];
  *out = NULL;
  if (is_nullish(env, v)) return true;
  if (!get_typed(env, v, napi_uint32_array, name, (void **)out, &n)) return false;
  if (n < min_len) {
    snprintf(message, sizeof message, "%s must have at least count elements", name);
    return arg_error(env, true, message);
  }
  return true;
}

static bool get_bool_arg(napi_env env, napi_value v, const char *name, bool *out) {
  char message[64];
  *out = false;
  if (is_nullish(env, v)) return true;
  if (napi_get_value_bool(env, v, out) == napi_ok) return true;
  snprintf(message, sizeof message, "%s must be a boolean", name);
  return arg_error(env, false, message);
}

/* writeVnetPackets(fd, buffer, offsets, lengths, gso, count, stats?, coalesce?) -> accepted. Writes packets
 * 0..count-1 to a TUN opened with offloads, each behind its virtio header: zeros for an ordinary packet, a
 * GSO header for a super-packet (gso[i] > 0). With coalesce, each run of consecutive TCP segments of one
 * flow (contiguous sequence numbers, plain ACK/PSH, equal sizes but a shorter last, no IP options or
 * fragments, valid checksums) becomes ONE super-packet written from the caller's buffer with writev (no
 * copy here). A super-packet the kernel refuses (any error but EAGAIN/ENOBUFS and the fatal ones) is written
 * again packet by packet, which reports their own errors. Returns the packets accepted; stats (as
 * writePackets) gets [rejected, lastErrno, writes, coalesced, refused], the last three as far as it is long:
 * the write() calls made, the packets that went out inside super-packets, and the refused super-packets. */
static napi_value js_write_vnet_packets(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  size_t argc = 8, stats_len = 0;
  packet_args a;
  uint32_t *gso;
  bool coalesce;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 6) {
    arg_error(env, false, "too few arguments");
    return NULL;
  }
  if (!get_packet_args(env, argv, argv[5], &a) || !get_words(env, argv[4], "gso", a.count, &gso) ||
      !get_stats(env, argv[6], &a.stats, &stats_len) || !get_bool_arg(env, argv[7], "coalesce", &coalesce))
    return NULL;

  uint32_t accepted = 0, rejected = 0, writes = 0, coalesced = 0, refused = 0, i = 0, no_coalesce_before = 0;
  int last_errno = 0;
  vnet_write w;
  while (i < a.count) {
    plan_vnet_write(a.buf, a.offsets, a.lengths, gso, i, a.count, coalesce && i >= no_coalesce_before, &w);
    if (w.bad) {
      rejected += w.covers;
      last_errno = EINVAL;
      i += w.covers;
      continue;
    }
    ssize_t r;
    do r = writev(a.fd, w.iov, w.niov);
    while (r < 0 && errno == EINTR);
    writes++;
    if (r >= 0) {
      accepted += w.covers;
      if (w.covers > 1) coalesced += w.covers;
      i += w.covers;
      continue;
    }
    int err = errno;
    if (is_busy(err)) break;
    if (is_fatal(err)) return throw_errno(env, "writev", NULL, err);
    if (w.covers > 1) {
      /* the super-packet as a whole was refused: write its packets one by one */
      refused++;
      no_coalesce_before = i + w.covers;
      continue;
    }
    rejected += w.covers; /* EINVAL (not IPv4/IPv6, a bad header), EIO (device down)... */
    last_errno = err;
    i += w.covers;
  }
  set_stats(a.stats, rejected, last_errno);
  if (a.stats && stats_len >= 4) {
    a.stats[2] = writes;
    a.stats[3] = coalesced;
  }
  if (a.stats && stats_len >= 5) a.stats[4] = refused;
  return make_int(env, accepted);
}

/* coalescePackets(buffer, offsets, lengths, gso, count, out, outOffsets, outLengths) -> outputs. What
 * writeVnetPackets(..., coalesce = true) would write, copied into `out` instead: output i (its virtio header,
 * then the packet or assembled super-packet) at out[outOffsets[i]], outLengths[i] bytes. For tests and
 * tools; throws RangeError when out or the arrays are too small. */
static napi_value js_coalesce_packets(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  packet_args a;
  uint32_t *gso, *out_offsets, *out_lengths;
  uint8_t *out;
  size_t out_len, out_offsets_len, out_lengths_len;
  napi_value fd_zero;
  if (!get_args(env, info, 8, argv) || napi_create_int32(env, 0, &fd_zero) != napi_ok) return NULL;
  napi_value shifted[4] = {fd_zero, argv[0], argv[1], argv[2]};
  if (!get_packet_args(env, shifted, argv[4], &a) || !get_words(env, argv[3], "gso", a.count, &gso) ||
      !get_typed(env, argv[5], napi_uint8_array, "out", (void **)&out, &out_len) ||
      !get_typed(env, argv[6], napi_uint32_array, "outOffsets", (void **)&out_offsets, &out_offsets_len) ||
      !get_typed(env, argv[7], napi_uint32_array, "outLengths", (void **)&out_lengths, &out_lengths_len))
    return NULL;
  uint32_t i = 0, n = 0;
  size_t at = 0;
  vnet_write w;
  while (i < a.count) {
    plan_vnet_write(a.buf, a.offsets, a.lengths, gso, i, a.count, true, &w);
    i += w.covers;
    if (w.bad) continue;
    size_t bytes = 0;
    for (int k = 0; k < w.niov; k++) bytes += w.iov[k].iov_len;
    if (n >= out_offsets_len || n >= out_lengths_len || bytes > out_len - at) {
      arg_error(env, true, "out, outOffsets or outLengths is too small");
      return NULL;
    }
    out_offsets[n] = (uint32_t)at;
    out_lengths[n++] = (uint32_t)bytes;
    for (int k = 0; k < w.niov; k++) {
      memcpy(out + at, w.iov[k].iov_base, w.iov[k].iov_len);
      at += w.iov[k].iov_len;
    }
  }
  return make_int(env, n);
}

/* segmentPackets(buffer, offsets, lengths, gso, endpoints, from, count, out, outOffsets, outLengths,
 * outEndpoints, stats) -> next. Turns packets from..count-1 into wire packets in `out`, back to back from
 * its start: an ordinary packet (gso 0 or no gso array) is copied, a super-packet is cut into segments with
 * their own headers and full checksums (see segment_packet). Each output's endpoint (18 bytes) is copied
 * from endpoints[i * 18] when both endpoint buffers are given. Stops before the first packet that no longer
 * fits in out or the arrays and returns its index (count when all were done); stats[0] = outputs made,
 * stats[1] = packets dropped (a super-packet that cannot be segmented, or one too big for an empty out). */
static napi_value js_segment_packets(napi_env env, napi_callback_info info) {
  napi_value argv[12];
  packet_args a;
  uint32_t *gso, *out_offsets, *out_lengths, *stats;
  uint8_t *endpoints = NULL, *out_endpoints = NULL, *out;
  size_t endpoints_len = 0, out_endpoints_len = 0, out_len, out_offsets_len, out_lengths_len, stats_len;
  int64_t from;
  napi_value fd_zero;
  if (!get_args(env, info, 12, argv) || napi_create_int32(env, 0, &fd_zero) != napi_ok) return NULL;
  napi_value shifted[4] = {fd_zero, argv[0], argv[1], argv[2]};
  if (!get_packet_args(env, shifted, argv[6], &a) || !get_words(env, argv[3], "gso", a.count, &gso) ||
      !get_int(env, argv[5], "from", 0, a.count, &from) ||
      !get_typed(env, argv[7], napi_uint8_array, "out", (void **)&out, &out_len) ||
      !get_typed(env, argv[8], napi_uint32_array, "outOffsets", (void **)&out_offsets, &out_offsets_len) ||
      !get_typed(env, argv[9], napi_uint32_array, "outLengths", (void **)&out_lengths, &out_lengths_len) ||
      !get_typed(env, argv[11], napi_uint32_array, "stats", (void **)&stats, &stats_len))
    return NULL;
  if (stats_len < 2) return arg_error(env, true, "stats must have at least 2 elements"), NULL;
  if (!is_nullish(env, argv[4]) && !is_nullish(env, argv[10])) {
    if (!get_typed(env, argv[4], napi_uint8_array, "endpoints", (void **)&endpoints, &endpoints_len) ||
        !get_typed(env, argv[10], napi_uint8_array, "outEndpoints", (void **)&out_endpoints, &out_endpoints_len))
      return NULL;
    if (endpoints_len < (size_t)a.count * ENDPOINT_BYTES)
      return arg_error(env, true, "endpoints must hold count endpoints of 18 bytes"), NULL;
  }
  size_t max_out = out_offsets_len < out_lengths_len ? out_offsets_len : out_lengths_len;
  if (out_endpoints && out_endpoints_len / ENDPOINT_BYTES < max_out) max_out = out_endpoints_len / ENDPOINT_BYTES;
  if (max_out == 0) /* no packet could ever be made: a caller's bug, not a drop of every input */
    return arg_error(env, true, "outOffsets, outLengths and outEndpoints must have room for an output"), NULL;
  uint32_t i = (uint32_t)from, made = 0, dropped = 0;
  size_t at = 0;
  while (i < a.count) {
    size_t slots = max_out - made;
    int n = segment_packet(a.buf + a.offsets[i], a.lengths[i], gso ? gso[i] : 0, out + at, out_len - at,
                           out_lengths + made, slots > UINT32_MAX ? UINT32_MAX : (uint32_t)slots);
    if (n < 0 && made == 0) n = 0; /* does not fit even alone: drop it */
    if (n < 0) break;
    if (n == 0) {
      dropped++;
      i++;
      continue;
    }
    for (int k = 0; k < n; k++) {
      out_offsets[made + k] = (uint32_t)at;
      at += out_lengths[made + k];
      if (endpoints)
        memcpy(out_endpoints + (size_t)(made + k) * ENDPOINT_BYTES, endpoints + (size_t)i * ENDPOINT_BYTES,
               ENDPOINT_BYTES);
    }
    made += (uint32_t)n;
    i++;
  }
  stats[0] = made;
  stats[1] = dropped;
  return make_int(env, i);
}

/* ---------------------------------------------------------------------------------------------------------
 * closeFd(fd): stops a poller on the fd first (libuv must not watch a closed fd), then close().
 * ------------------------------------------------------------------------------------------------------- */

static napi_value js_close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t fd;
  addon *a;
  if (!get_args(env, info, 1, argv) || !get_int(env, argv[0], "fd", 0, INT32_MAX, &fd)) return NULL;
  if (napi_get_instance_data(env, (void **)&a) != napi_ok || !a) return NULL;
  for (poller *p; (p = find_poller(a, (int)fd));) stop_poller(p, true);
  if (close((int)fd) < 0 && errno != EINTR) return throw_errno(env, "close", NULL, errno);
  napi_get_undefined(env, &result);
  return result;
}

/* ---------------------------------------------------------------------------------------------------------
 * Module
 * ------------------------------------------------------------------------------------------------------- */

static void free_addon(napi_env env, void *data, void *hint) {
  addon *a = data;
  /* Teardown hooks normally stopped every poller already; detach any left so none touches freed memory. */
  for (poller *p = a->pollers; p; p = p->next) p->addon = NULL;
  free(a);
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  addon *a = calloc(1, sizeof *a);
  if (!a || napi_set_instance_data(env, a, free_addon, NULL) != napi_ok) {
    free(a);
    napi_throw_error(env, NULL, "oaknet_native: cannot allocate instance data");
    return NULL;
  }
  napi_property_descriptor props[] = {
      {"openTun", NULL, js_open_tun, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpOpen", NULL, js_udp_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"startPoll", NULL, js_start_poll, NULL, NULL, NULL, napi_enumerable, NULL},
      {"stopPoll", NULL, js_stop_poll, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writePackets", NULL, js_write_packets, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendPackets", NULL, js_send_packets, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeVnetPackets", NULL, js_write_vnet_packets, NULL, NULL, NULL, napi_enumerable, NULL},
      {"segmentPackets", NULL, js_segment_packets, NULL, NULL, NULL, napi_enumerable, NULL},
      {"coalescePackets", NULL, js_coalesce_packets, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
