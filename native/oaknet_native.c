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
#include <netinet/in.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
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

/* The optional stats out-array ([rejected, lastErrno]) of writePackets/sendPackets; NULL when absent. */
static bool get_stats(napi_env env, napi_value v, uint32_t **stats) {
  size_t n;
  *stats = NULL;
  if (is_nullish(env, v)) return true;
  if (!get_typed(env, v, napi_uint32_array, "stats", (void **)stats, &n)) return false;
  if (n < 2) return arg_error(env, true, "stats must have at least 2 elements");
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
 * openTun(name, multiQueue) -> { fd, name }
 * ------------------------------------------------------------------------------------------------------- */

/* TUNSETIFF flags: layer-3 packets without the 4-byte packet-information prefix. Offloads would add
 * IFF_VNET_HDR here, then TUNSETVNETHDRSZ and TUNSETOFFLOAD in js_open_tun; readers would then pass a
 * headroom that starts with the virtio_net_hdr. */
static short tun_flags(bool multi_queue) {
  short flags = IFF_TUN | IFF_NO_PI;
  if (multi_queue) flags |= IFF_MULTI_QUEUE;
  return flags;
}

static napi_value js_open_tun(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  char name[IFNAMSIZ];
  size_t name_len = 0;
  bool multi_queue = false;
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

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "open", "/dev/net/tun", errno);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, name_len);
  ifr.ifr_flags = tun_flags(multi_queue);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "ioctl(TUNSETIFF)", name_len ? name : "(kernel-chosen name)", err);
  }
  ifr.ifr_name[IFNAMSIZ - 1] = 0;

  napi_value values[2], result = NULL;
  if ((values[0] = make_int(env, fd)) &&
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &values[1]) == napi_ok)
    result = make_object(env, 2, (const char *[]){"fd", "name"}, values);
  if (!result) close(fd);
  return result;
}

/* ---------------------------------------------------------------------------------------------------------
 * udpOpen(bindPort) -> { fd, port, family }
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
  napi_value argv[1];
  int64_t port;
  if (!get_args(env, info, 1, argv) || !get_int(env, argv[0], "bindPort", 0, 65535, &port)) return NULL;

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

  sockaddr_any bound;
  socklen_t len = sizeof bound;
  if (getsockname(fd, &bound.sa, &len) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "getsockname", NULL, err);
  }
  uint16_t bound_port = ntohs(family == AF_INET6 ? bound.v6.sin6_port : bound.v4.sin_port);
  napi_value values[3], result = NULL;
  if ((values[0] = make_int(env, fd)) && (values[1] = make_int(env, bound_port)) &&
      (values[2] = make_int(env, family == AF_INET6 ? 6 : 4)))
    result = make_object(env, 3, (const char *[]){"fd", "port", "family"}, values);
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

enum poll_mode { MODE_READ, MODE_RECVMMSG };

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
  napi_ref buf_ref, lengths_ref, addrs_ref, callback_ref;
  napi_async_context async_context;
  napi_async_cleanup_hook_handle teardown_hook;
  struct mmsghdr *msgs; /* recvmmsg only: one header, iovec and source address per slot */
  struct iovec *iovs;
  sockaddr_any *names;
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

/* TUN (or any packet fd): read() until EAGAIN or a full batch. Sets *err on any other failure. */
static uint32_t read_batch(poller *p, int *err) {
  size_t room = p->slot - p->headroom;
  uint32_t n = 0;
  while (n < p->max_batch) {
    ssize_t r = read(p->fd, p->buf + n * p->slot + p->headroom, room);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) *err = errno;
      break;
    }
    /* TUN reports a packet's full length even when it did not fit: mark it truncated. */
    p->lengths[n++] = (size_t)r > room ? 0 : (uint32_t)r;
  }
  return n;
}

/* UDP: recvmmsg() until EAGAIN or a full batch, recording each datagram's source endpoint. */
static uint32_t recv_batch(poller *p, int *err) {
  uint32_t n = 0, soft_errors = 0;
  while (n < p->max_batch) {
    uint32_t want = p->max_batch - n;
    for (uint32_t i = n; i < n + want; i++) p->msgs[i].msg_hdr.msg_namelen = sizeof p->names[i];
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
      p->lengths[i] = (p->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? 0 : p->msgs[i].msg_len;
      endpoint_from_sockaddr(&p->names[i], p->addrs + (size_t)i * ENDPOINT_BYTES);
    }
    n += (uint32_t)r;
    if ((uint32_t)r < want) break;
  }
  return n;
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
    uint32_t n = p->mode == MODE_READ ? read_batch(p, &err) : recv_batch(p, &err);
    if (n > 0) call_js(p, (int32_t)n);
    if (p->stopped) return;
    if (err) {
      call_js(p, -err);
      stop_from_loop(p);
      return;
    }
    if (n < p->max_batch) return; /* drained */
  }
  /* Still more to read: level-triggered polling wakes us again after the loop has served others. */
}

static poller *find_poller(addon *a, int fd) {
  for (poller *p = a->pollers; p; p = p->next)
    if (p->fd == fd) return p;
  return NULL;
}

static napi_value js_start_poll(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (!get_args(env, info, 9, argv)) return NULL;
  addon *a;
  if (napi_get_instance_data(env, (void **)&a) != napi_ok || !a) return NULL;

  int64_t fd, slot, headroom, max_batch;
  char mode_text[16];
  size_t mode_len = 0, buf_len, lengths_len, addrs_len = 0;
  void *buf, *lengths, *addrs = NULL;
  napi_valuetype callback_type;
  if (!get_int(env, argv[0], "fd", 0, INT32_MAX, &fd)) return NULL;
  if (napi_get_value_string_utf8(env, argv[1], mode_text, sizeof mode_text, &mode_len) != napi_ok ||
      (strcmp(mode_text, "read") != 0 && strcmp(mode_text, "recvmmsg") != 0)) {
    arg_error(env, false, "mode must be 'read' or 'recvmmsg'");
    return NULL;
  }
  enum poll_mode mode = strcmp(mode_text, "read") == 0 ? MODE_READ : MODE_RECVMMSG;
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
  if (lengths_len < (size_t)max_batch) {
    arg_error(env, true, "lengths must have at least maxBatch elements");
    return NULL;
  }
  if (mode == MODE_RECVMMSG) {
    if (!get_typed(env, argv[7], napi_uint8_array, "addrs", &addrs, &addrs_len)) return NULL;
    if (addrs_len < (size_t)max_batch * ENDPOINT_BYTES) {
      arg_error(env, true, "addrs must hold maxBatch endpoints of 18 bytes");
      return NULL;
    }
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
  if (mode == MODE_RECVMMSG) {
    p->msgs = calloc(p->max_batch, sizeof *p->msgs);
    p->iovs = calloc(p->max_batch, sizeof *p->iovs);
    p->names = calloc(p->max_batch, sizeof *p->names);
    if (!p->msgs || !p->iovs || !p->names) {
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
            (mode == MODE_READ || napi_create_reference(env, argv[7], 1, &p->addrs_ref) == napi_ok) &&
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
  if (!get_packet_args(env, argv, argv[4], &a) || !get_stats(env, argv[5], &a.stats)) return NULL;

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

/* sendPackets(fd, buffer, offsets, lengths, addrs, count, stats?) -> sent. sendmmsg() in chunks, each
 * message to its own endpoint. A message the kernel rejects (EHOSTUNREACH, EMSGSIZE, EACCES, an IPv6
 * endpoint on an IPv4 socket...) is skipped and counted; EAGAIN stops. */
static napi_value js_send_packets(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  size_t argc = 7, addrs_len;
  packet_args a;
  uint8_t *addrs;
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
  if (!get_stats(env, argv[6], &a.stats)) return NULL;

  int family;
  socklen_t family_len = sizeof family;
  if (getsockopt(a.fd, SOL_SOCKET, SO_DOMAIN, &family, &family_len) < 0)
    return throw_errno(env, "getsockopt(SO_DOMAIN)", NULL, errno);

  struct mmsghdr msgs[SEND_CHUNK];
  struct iovec iovs[SEND_CHUNK];
  sockaddr_any names[SEND_CHUNK];
  uint32_t i = 0, sent = 0, rejected = 0;
  int last_errno = 0;
  while (i < a.count) {
    uint32_t k = 0;
    /* Fill a chunk up to the first endpoint this socket cannot reach; that one is rejected on its own. */
    while (k < SEND_CHUNK && i + k < a.count) {
      uint32_t j = i + k;
      socklen_t name_len;
      if (!endpoint_to_sockaddr(addrs + (size_t)j * ENDPOINT_BYTES, family, &names[k], &name_len)) break;
      iovs[k].iov_base = a.buf + a.offsets[j];
      iovs[k].iov_len = a.lengths[j];
      memset(&msgs[k], 0, sizeof msgs[k]);
      msgs[k].msg_hdr.msg_name = &names[k];
      msgs[k].msg_hdr.msg_namelen = name_len;
      msgs[k].msg_hdr.msg_iov = &iovs[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
      k++;
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
        /* A short count hides why message i stopped the call (the kernel drops that error): the next
         * call starts with it and reports its error directly, or EAGAIN. */
        sent += (uint32_t)r;
        i += (uint32_t)r;
        continue;
      }
    }
    if (is_busy(err)) break;
    if (is_fatal(err)) return throw_errno(env, "sendmmsg", NULL, err);
    rejected++;
    last_errno = err;
    i++;
  }
  set_stats(a.stats, rejected, last_errno);
  return make_int(env, sent);
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
      {"closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
