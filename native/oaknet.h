/*
 * oaknet.h: the one header the addon's files share (types, limits, prototypes).
 *
 * The addon makes the Linux system calls Node.js cannot, for ProxyTUN's packet I/O. One concern per file:
 *   checksum.c      RFC 1071 sums and TCP/UDP pseudo-header sums                      pure C
 *   offload.c       super-packets: header parsing, virtio_net_hdr, segmenting           pure C
 *                   (software TSO/USO) and coalescing plans (software GRO)
 *   tun.c           the TUN device: open (TUNSETIFF, TUNSETOFFLOAD), batched read and write, with virtio headers
 *   udp.c           the UDP socket: open, recvmmsg (UDP GRO), sendmmsg (UDP GSO), cutting super-packets on send
 *   wg.c            WireGuard transport data messages: a sessions table, sealing (for udp.c's send) and
 *                   opening whole received batches in place (OpenSSL EVP ChaCha20-Poly1305)
 *   poller.c        the uv_poll watcher that reads batches on Node's event loop and calls onBatch
 *   inroot.c        openat2 inside another root (a container's /proc/<pid>/root), which Node cannot do
 *   sched.c         one thread's nice value (setpriority on its thread ID), for the DNS thread
 *   glue.c          N-API: JS arguments into the structs below, errors, the exported functions, module init
 *   test_exports.c  segmentPackets / coalescePackets: only in the test build (oaknet_native_test.node)
 * "Pure C" files use neither N-API nor libuv, only bytes: native/test/fuzz_offload.c compiles them alone under
 * ASan/UBSan. tun.c and udp.c make system calls but do not know N-API either: they report failures in an
 * os_error that glue.c turns into a JS Error, and native/test/fuzz_tun.c and fuzz_udp.c compile each with the
 * pure C alone (over a socketpair and loopback sockets). Only glue.c, poller.c, inroot.c, sched.c and test_exports.c see the
 * part of this header under OAKNET_NODE_API.
 *
 * The JS-side contract (types and docs) is in src/dataplane/tun/native.ts.
 */
#ifndef OAKNET_H
#define OAKNET_H

#include <errno.h>
#include <linux/virtio_net.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* ---- limits ------------------------------------------------------------------------------------------ */

#define ENDPOINT_BYTES 18        /* 16-byte IPv6 address (IPv4 as ::ffff:a.b.c.d) + 2-byte big-endian port */
#define MAX_BATCH 1024           /* the kernel's UIO_MAXIOV: the most messages one recvmmsg/sendmmsg takes */
#define MAX_SEGMENTS 64          /* datagrams per UDP GSO message (older kernels' UDP_MAX_SEGMENTS); TCP
                                  * segments per coalesced TUN write */
#define GRO_MAX_SEGMENTS 128     /* datagrams per UDP GRO buffer: newer kernels' UDP_MAX_SEGMENTS */
#define UDP_GSO_MAX_BYTES 65507u /* the most UDP payload one IPv4 datagram (and so one GSO message) holds */
#define IP_MAX_BYTES 65535u
#define VNET_HDR_BYTES ((uint32_t)sizeof(struct virtio_net_hdr)) /* 10: the legacy layout tun uses */
#define SEND_WIRE_MAX 1024       /* wire datagrams udp_send gathers before it sends them */
#define SEND_HEADER_BYTES (256u * 1024) /* their segment headers (a 64 KiB super-packet of 1 KiB segments with
                                         * 120-byte headers takes 7.7 KiB) */

/* Kernel constants older headers may lack. */
#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#endif

/* ---- bytes ------------------------------------------------------------------------------------------- */

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
/* Stores a checksum folded in host order (see csum_add) where it belongs. */
static inline void put_host16(uint8_t *at, uint16_t v) { memcpy(at, &v, 2); }

/* ---- batches and results ----------------------------------------------------------------------------- */

/* A batch of packets in one buffer: the JS PacketBatch (with endpoints, AddressedBatch). The glue checks that
 * every packet lies inside buf and that the arrays hold count entries before anything here sees it. */
typedef struct {
  uint8_t *buf;
  const uint32_t *offsets, *lengths;
  const uint32_t *gso;       /* gso word per packet (src/dataplane/packet/offload.ts); NULL: all 0 */
  const uint8_t *endpoints;  /* destination endpoint per packet, ENDPOINT_BYTES each; NULL if not addressed */
  uint32_t count;
} packet_batch;

static inline uint32_t batch_gso(const packet_batch *b, uint32_t i) { return b->gso ? b->gso[i] : 0; }

/* A system call that failed in a way the caller must hear of (the fd is unusable): glue.c throws it. */
typedef struct {
  int err; /* errno; 0: no failure */
  const char *syscall;
  const char *what; /* optional detail (a device name, a path) */
} os_error;

static inline bool os_fail(os_error *e, int err, const char *syscall, const char *what) {
  e->err = err;
  e->syscall = syscall;
  e->what = what;
  return false;
}

/* Errors that say the fd itself is unusable (closed, not a socket, bad memory): the batch call throws. */
static inline bool is_fatal(int err) { return err == EBADF || err == EBADFD || err == EFAULT || err == ENOTSOCK; }
/* Errors that mean "the kernel is full right now": stop the batch, the rest is the caller's to drop. */
static inline bool is_busy(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS; }

/* ---- checksum.c -------------------------------------------------------------------------------------- */

uint64_t csum_add(const uint8_t *p, size_t len, uint64_t sum);
uint16_t csum_fold(uint64_t sum);
uint64_t pseudo_sum(const uint8_t *ip, int version, uint8_t proto, uint32_t l4_len);

/* ---- offload.c --------------------------------------------------------------------------------------- */

/* An unfragmented IPv4/IPv6 TCP or UDP packet, as far as segmenting and coalescing need it. */
typedef struct {
  int version;     /* 4 or 6 */
  uint8_t proto;   /* IPPROTO_TCP or IPPROTO_UDP */
  uint32_t l4;     /* offset of the transport header: IP header, IPv4 options, IPv6 extension headers */
  uint32_t l4_hdr; /* transport header bytes: TCP with options, or 8 for UDP */
  uint32_t total;  /* the IP packet's length from its header (<= the bytes at hand) */
} l4_info;

bool parse_l4(const uint8_t *p, uint32_t len, l4_info *o);
bool complete_checksum(uint8_t *p, uint32_t len, uint32_t start, uint32_t offset);
uint32_t gso_word_from_vnet(const struct virtio_net_hdr *vh, uint8_t *pkt, uint32_t *len);
bool vnet_for(const uint8_t *p, uint32_t len, uint32_t gso, struct virtio_net_hdr *vh);

/* A super-packet about to be cut into segments (plan_segments), each of `gso` payload bytes but a shorter
 * last, each behind `hdr` bytes of headers that write_segment_header makes. */
typedef struct {
  const uint8_t *p; /* the super-packet */
  l4_info pi;
  uint32_t hdr, payload, gso, nseg;
  uint32_t seq, id; /* TCP sequence number and IPv4 id of the first segment */
  uint8_t flags;    /* TCP flags of the super-packet */
  uint64_t addresses; /* the addresses' part of every segment's pseudo-header sum */
} segment_plan;

bool plan_segments(const uint8_t *p, uint32_t len, uint32_t gso, segment_plan *s);
uint32_t write_segment_header(const segment_plan *s, uint32_t k, uint8_t *dst);
static inline const uint8_t *segment_payload(const segment_plan *s, uint32_t k) {
  return s->p + s->hdr + (size_t)k * s->gso;
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

void plan_vnet_write(const packet_batch *b, uint32_t first, bool coalesce, vnet_write *w);

/* ---- tun.c ------------------------------------------------------------------------------------------- */

typedef struct {
  int fd;
  char name[16]; /* IFNAMSIZ */
  int offloads;  /* TUNSETOFFLOAD bits in force; -1: opened without a virtio header */
} tun_device;

typedef struct {
  uint32_t accepted, rejected; /* packets */
  int last_errno;              /* of the last rejected one */
  uint32_t writes;             /* write() calls made (vnet) */
  uint32_t coalesced;          /* packets that went out inside coalesced super-packets (vnet) */
  uint32_t refused;            /* coalesced super-packets the kernel refused whole (vnet) */
} tun_write_result;

/* How a poller reads (read_ring.mode). */
enum read_mode { MODE_READ, MODE_READ_VNET, MODE_RECVMMSG, MODE_RECVMMSG_GRO };

typedef union {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
} sockaddr_any;

/* Where a batch read goes: slot i at buf + i * slot, its packet after headroom bytes; lengths (and addrs,
 * extra) per entry, all owned by the JS caller. The recvmmsg headers are the reader's own (udp_ring_init). */
typedef struct {
  int fd;
  enum read_mode mode;
  uint8_t *buf;
  size_t slot, headroom;
  uint32_t max_batch;
  uint32_t *lengths; /* entry i's length; 0 = lost (truncated, or dropped by the kernel) */
  uint8_t *addrs;    /* recvmmsg: source endpoint of entry i at addrs + i * ENDPOINT_BYTES */
  uint32_t *extra;   /* read-vnet: gso word of entry i; recvmmsg-gro: offset of entry i in buf */
  struct mmsghdr *msgs;
  struct iovec *iovs;
  sockaddr_any *names;
  uint8_t *control; /* recvmmsg-gro: GRO_CONTROL_BYTES per slot */
} read_ring;

bool tun_open(const char *name, bool multi_queue, bool offload, tun_device *out, os_error *e);
uint32_t tun_read_batch(read_ring *r, int *err);
bool tun_write(int fd, const packet_batch *b, tun_write_result *r, os_error *e);
bool tun_write_vnet(int fd, const packet_batch *b, bool coalesce, tun_write_result *r, os_error *e);

/* ---- udp.c ------------------------------------------------------------------------------------------- */

typedef struct {
  int fd;
  int family; /* AF_INET6 (dual-stack) or AF_INET, fixed at open: sends need not ask the socket */
  uint16_t port;
  bool gso; /* udp_open: the kernel takes UDP_SEGMENT; udp_send: use it */
  bool gro; /* udp_open: UDP_GRO is on */
} udp_socket;

/* One wire datagram as udp_send gathers it: headers (or a whole ordinary packet), then payload (maybe none). */
typedef struct {
  const uint8_t *head;
  const uint8_t *payload;
  uint32_t head_len, payload_len;
  const uint8_t *to; /* its endpoint */
} wire_datagram;

/* Memory udp_send works in (the addon instance's: calls are synchronous, so one is enough). */
typedef struct {
  wire_datagram *wire; /* SEND_WIRE_MAX */
  uint8_t *headers;    /* SEND_HEADER_BYTES */
  uint8_t *sealed;     /* SEND_SEALED_BYTES: sealed wire datagrams; only touched when a send has sessions */
} send_scratch;

/* Sealing inside udp_send: packet i of the batch goes out sealed with slots[i] when slots[i] >= 0. udp.c calls
 * seal (wg_sealer, with table) and knows nothing else of WireGuard; seal NULL: no table, so every packet with
 * a slot >= 0 is dropped (never sent in plaintext). */
typedef int64_t (*seal_fn)(void *table, uint32_t slot, const uint8_t *a, uint32_t a_len, const uint8_t *b,
                           uint32_t b_len, uint8_t *out, size_t room);
typedef struct {
  seal_fn seal;
  void *table;
  const int32_t *slots; /* count entries */
} send_sessions;

/* What udp_send did, in wire datagrams (each one of a batch is in exactly one of sent, rejected, busy and
 * unsent) and in super-packets (dropped). Filled in as far as it got when the socket fails, too. */
typedef struct {
  uint32_t sent;     /* wire datagrams the kernel took */
  uint32_t rejected; /* wire datagrams refused (unreachable, too big, wrong family...) */
  int last_errno;    /* of the last rejected one */
  uint32_t refused_runs; /* GSO runs refused whole (then sent datagram by datagram) */
  uint32_t gso_messages; /* GSO messages (runs of 2 or more) the kernel took */
  uint32_t busy;     /* wire datagrams not tried: the socket buffer was full */
  uint32_t dropped;  /* super-packets that could not be cut (malformed, or too many segments) */
  uint32_t unsent;   /* wire datagrams not tried because the socket failed (udp_send returned false) */
  uint32_t seal_dropped; /* wire datagrams of sealed packets dropped unsent: no keys, exhausted counter, or
                          * too big once sealed (more than UDP_GSO_MAX_BYTES) */
} udp_send_result;

bool udp_open(uint16_t port, bool offload, const char *bind_address, udp_socket *out, os_error *e);
bool udp_ring_init(read_ring *r);
void udp_ring_free(read_ring *r);
uint32_t udp_recv_batch(read_ring *r, int *err, uint32_t *slots);
bool udp_send(const udp_socket *s, const packet_batch *b, const send_sessions *sessions, send_scratch *scratch,
              udp_send_result *r, os_error *e);
uint32_t udp_wire_count(const packet_batch *b, uint32_t from, udp_send_result *r);

/* ---- wg.c -------------------------------------------------------------------------------------------- */

#define WG_TYPE_TRANSPORT 4
#define WG_HEADER_BYTES 16u
#define WG_TAG_BYTES 16u
#define WG_KEY_BYTES 32u
#define WG_MAX_CAPACITY (1u << 20)
#define WG_MAX_PLAINTEXT IP_MAX_BYTES /* the largest packet a message carries */
#define SEND_SEALED_BYTES (2u * 1024 * 1024) /* sealed datagrams udp_send gathers before it sends them (1,024
                                               * of 1,500 bytes; a 64 KiB super-packet of tiny segments fits) */

/* Opening verdicts (src/dataplane/wireguard/sessions.ts OpenVerdict); >= 0: the slot that opened it. */
enum {
  WG_NOT_TRANSPORT = -1,
  WG_UNKNOWN_INDEX = -2,
  WG_AUTH_FAILED = -3,
  WG_REPLAYED = -4,
  WG_MALFORMED = -5,
  WG_EXHAUSTED = -6,
};
/* wg_install's failures */
enum { WG_ERR_SLOT = 1, WG_ERR_INDEX_TAKEN = 2, WG_ERR_CRYPTO = 3 };

typedef struct wg_table wg_table;

/* A message's length for a plaintext of len bytes: header, len padded to 16, tag. */
static inline uint32_t wg_sealed_len(uint32_t len) { return WG_HEADER_BYTES + ((len + 15u) & ~15u) + WG_TAG_BYTES; }

wg_table *wg_create(uint32_t capacity); /* NULL: out of memory or capacity outside 1..WG_MAX_CAPACITY */
void wg_destroy(wg_table *t);           /* removes (cleanses) every slot and frees the table */
uint32_t wg_capacity(const wg_table *t);
int wg_install(wg_table *t, uint32_t slot, const uint8_t *send_key, const uint8_t *recv_key, uint32_t local_index,
               uint32_t remote_index); /* 0 or WG_ERR_* */
void wg_remove(wg_table *t, uint32_t slot);
bool wg_installed(const wg_table *t, uint32_t slot);
int32_t wg_lookup(const wg_table *t, uint32_t local_index); /* slot, or -1 */
void wg_stats(const wg_table *t, uint32_t slot, double *out); /* SESSION_STAT_FIELDS (6) numbers */
int64_t wg_seal(wg_table *t, uint32_t slot, const uint8_t *a, uint32_t a_len, const uint8_t *b, uint32_t b_len,
                uint8_t *out, size_t room);
int64_t wg_sealer(void *table, uint32_t slot, const uint8_t *a, uint32_t a_len, const uint8_t *b, uint32_t b_len,
                  uint8_t *out, size_t room); /* a seal_fn */
/* Opens one datagram in place: a slot (*plain_len = the trimmed plaintext's length, at p + 16) or a WG_* verdict. */
int32_t wg_open(wg_table *t, uint8_t *p, uint32_t len, uint32_t *plain_len);
/* Opens datagrams 0..count-1 (buf + offsets[i], lengths[i]); an opened one's offset and length move to its
 * plaintext. */
void wg_open_batch(wg_table *t, uint8_t *buf, uint32_t *offsets, uint32_t *lengths, uint32_t count,
                   int32_t *verdicts);

/* ---- the N-API side: glue.c, poller.c, test_exports.c ------------------------------------------------ */
#ifdef OAKNET_NODE_API
#include <node_api.h>

struct poller;

/* Per-environment state (napi instance data): running pollers, and the send scratch, made on first use. */
typedef struct addon {
  struct poller *pollers;
  uint32_t next_id;
  send_scratch scratch;
} addon;

/* glue.c: errors and arguments. Each get_* throws (TypeError/RangeError) and returns false on bad input. */
napi_value throw_errno(napi_env env, const char *syscall, const char *what, int err);
napi_value throw_os(napi_env env, const os_error *e);
bool arg_error(napi_env env, bool range, const char *message);
bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
/* The bounds (both inclusive) get_int accepts; FD_RANGE for file descriptors. */
typedef struct {
  int64_t min, max;
} int_range;
#define FD_RANGE ((int_range){0, INT32_MAX})
bool get_int(napi_env env, napi_value v, const char *name, int_range range, int64_t *out);
/* What get_typed accepts: the element type, and the argument's name for its error message. */
typedef struct {
  napi_typedarray_type type;
  const char *name;
} typed_want;
static inline typed_want want_u8(const char *name) { return (typed_want){napi_uint8_array, name}; }
static inline typed_want want_u32(const char *name) { return (typed_want){napi_uint32_array, name}; }
bool get_typed(napi_env env, napi_value v, typed_want want, void **data, size_t *length);
bool get_property(napi_env env, napi_value obj, const char *name, napi_value *out);
bool is_nullish(napi_env env, napi_value v);
addon *get_addon(napi_env env);
napi_value make_int(napi_env env, int64_t v);

enum batch_needs { BATCH_PLAIN = 0, BATCH_GSO = 1, BATCH_ENDPOINTS = 2 };
bool get_batch(napi_env env, napi_value obj, int needs, packet_batch *out);

/* inroot.c */
napi_value js_open_in_root(napi_env env, napi_callback_info info);

/* sched.c */
napi_value js_set_thread_nice(napi_env env, napi_callback_info info);

/* poller.c */
napi_value js_start_poll(napi_env env, napi_callback_info info);
napi_value js_stop_poll(napi_env env, napi_callback_info info);
void stop_pollers_on_fd(addon *a, int fd);
void detach_pollers(addon *a);

#ifdef OAKNET_TEST_EXPORTS
/* test_exports.c: defines segmentPackets and coalescePackets on exports. */
bool define_test_exports(napi_env env, napi_value exports);
#endif
#endif /* OAKNET_NODE_API */

#endif /* OAKNET_H */
