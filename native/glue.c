/*
 * glue.c: the N-API side of the addon. It turns JS arguments into the structs of oaknet.h (a batch object
 * becomes a packet_batch, checked: every packet inside its buffer, every array long enough), calls tun.c and
 * udp.c, and turns their results into JS values and their failures into JS Errors. Module init is here.
 *
 * Conventions for every exported function: all are synchronous and work on a batch; packets go straight
 * between the kernel and buffers the caller owns. Every system call failure becomes a JS Error with `code`
 * (the errno name), `errno` and `syscall`; bad arguments throw TypeError/RangeError. Nothing aborts.
 * The JS-side contract (types and docs) is in src/dataplane/tun/native.ts.
 */
#define OAKNET_NODE_API
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "oaknet.h"

/* ---- errors ------------------------------------------------------------------------------------------ */

/* Error("<syscall> <what>: <strerror> (<CODE>)") with code, errno and syscall properties, or NULL with an
 * exception pending (a plain Error with that message) when it cannot be made. */
static napi_value errno_error(napi_env env, const char *syscall, const char *what, int err) {
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
  return error;
}

/* Throws errno_error(...). */
napi_value throw_errno(napi_env env, const char *syscall, const char *what, int err) {
  napi_value error = errno_error(env, syscall, what, err);
  if (error) napi_throw(env, error);
  return NULL;
}

napi_value throw_os(napi_env env, const os_error *e) { return throw_errno(env, e->syscall, e->what, e->err); }

/* Throws a TypeError/RangeError with a Node-style code (unless an exception is pending already); returns
 * false so callers can `return arg_error(...)`. */
bool arg_error(napi_env env, bool range, const char *message) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    if (range) napi_throw_range_error(env, "ERR_OUT_OF_RANGE", message);
    else napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
  }
  return false;
}

/* ---- arguments --------------------------------------------------------------------------------------- */

/* Fills argv[0..want); arguments not passed read as undefined. At least `want` are required unless the
 * caller counts them itself (get_argc). */
static bool get_argc(napi_env env, napi_callback_info info, size_t want, napi_value *argv, size_t *argc) {
  *argc = want;
  return napi_get_cb_info(env, info, argc, argv, NULL, NULL) == napi_ok;
}

bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc;
  if (!get_argc(env, info, want, argv, &argc)) return false;
  if (argc < want) return arg_error(env, false, "too few arguments");
  return true;
}

bool get_int(napi_env env, napi_value v, const char *name, int_range range, int64_t *out) {
  char message[96];
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    snprintf(message, sizeof message, "%s must be a number", name);
    return arg_error(env, false, message);
  }
  if (!(d >= (double)range.min && d <= (double)range.max) || d != (double)(int64_t)d) { /* NaN fails the first test */
    snprintf(message, sizeof message, "%s must be an integer in [%lld, %lld]", name, (long long)range.min,
             (long long)range.max);
    return arg_error(env, true, message);
  }
  *out = (int64_t)d;
  return true;
}

/* A typed array of the wanted element type: its data (already offset by byteOffset) and element count. */
bool get_typed(napi_env env, napi_value v, typed_want want, void **data, size_t *length) {
  char message[96];
  bool is = false;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, length, data, NULL, NULL) != napi_ok || type != want.type) {
    const char *type_name = want.type == napi_uint8_array    ? "Buffer or Uint8Array"
                            : want.type == napi_int32_array  ? "Int32Array"
                            : want.type == napi_float64_array ? "Float64Array"
                                                             : "Uint32Array";
    snprintf(message, sizeof message, "%s must be a %s", want.name, type_name);
    return arg_error(env, false, message);
  }
  return true;
}

/* obj[name] (undefined when absent); a TypeError when obj is not an object. */
bool get_property(napi_env env, napi_value obj, const char *name, napi_value *out) {
  if (napi_get_named_property(env, obj, name, out) == napi_ok) return true;
  char message[96];
  snprintf(message, sizeof message, "an object with '%s' expected", name);
  return arg_error(env, false, message);
}

bool is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined);
}

static bool get_optional_bool(napi_env env, napi_value v, const char *name, bool *out) {
  char message[64];
  *out = false;
  if (is_nullish(env, v)) return true;
  if (napi_get_value_bool(env, v, out) == napi_ok) return true;
  snprintf(message, sizeof message, "%s must be a boolean", name);
  return arg_error(env, false, message);
}

addon *get_addon(napi_env env) {
  addon *a = NULL;
  return napi_get_instance_data(env, (void **)&a) == napi_ok ? a : NULL;
}

/* The optional stats out-array of the write and send calls ([rejected, lastErrno, ...], at least 2). */
typedef struct {
  uint32_t *v;
  size_t n; /* 0: none */
} stats_out;

static bool get_stats(napi_env env, napi_value v, stats_out *s) {
  s->v = NULL;
  s->n = 0;
  if (is_nullish(env, v)) return true;
  if (!get_typed(env, v, want_u32("stats"), (void **)&s->v, &s->n)) return false;
  if (s->n < 2) return arg_error(env, true, "stats must have at least 2 elements");
  return true;
}

static void put_stat(const stats_out *s, size_t i, uint32_t value) {
  if (i < s->n) s->v[i] = value;
}

/* A batch object ({buffer, offsets, lengths, count}, with BATCH_GSO also an optional gso, with
 * BATCH_ENDPOINTS also endpoints) as a packet_batch; checks that every packet lies inside the buffer. */
bool get_batch(napi_env env, napi_value obj, int needs, packet_batch *out) {
  napi_value v;
  int64_t count;
  size_t buf_len, offsets_len, lengths_len, n;
  void *data;
  if (!get_property(env, obj, "buffer", &v) || !get_typed(env, v, want_u8("buffer"), &data, &buf_len))
    return false;
  out->buf = data;
  if (!get_property(env, obj, "offsets", &v) ||
      !get_typed(env, v, want_u32("offsets"), (void **)&out->offsets, &offsets_len) ||
      !get_property(env, obj, "lengths", &v) ||
      !get_typed(env, v, want_u32("lengths"), (void **)&out->lengths, &lengths_len) ||
      !get_property(env, obj, "count", &v) || !get_int(env, v, "count", (int_range){0, UINT32_MAX}, &count))
    return false;
  if ((size_t)count > offsets_len || (size_t)count > lengths_len)
    return arg_error(env, true, "count exceeds offsets or lengths");
  out->count = (uint32_t)count;
  out->gso = NULL;
  out->endpoints = NULL;
  if (needs & BATCH_GSO) {
    if (!get_property(env, obj, "gso", &v)) return false;
    if (!is_nullish(env, v)) {
      if (!get_typed(env, v, want_u32("gso"), &data, &n)) return false;
      if (n < out->count) return arg_error(env, true, "gso must have at least count elements");
      out->gso = data;
    }
  }
  if (needs & BATCH_ENDPOINTS) {
    if (!get_property(env, obj, "endpoints", &v) || !get_typed(env, v, want_u8("endpoints"), &data, &n))
      return false;
    if (n < (size_t)out->count * ENDPOINT_BYTES)
      return arg_error(env, true, "endpoints must hold count endpoints of 18 bytes");
    out->endpoints = data;
  }
  for (uint32_t i = 0; i < out->count; i++)
    if ((uint64_t)out->offsets[i] + out->lengths[i] > buf_len)
      return arg_error(env, true, "a packet (offset + length) lies outside the buffer");
  return true;
}

/* ---- results ----------------------------------------------------------------------------------------- */

static napi_value make_object(napi_env env, int n, const char **keys, napi_value *values) {
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok) return NULL;
  for (int i = 0; i < n; i++)
    if (napi_set_named_property(env, obj, keys[i], values[i]) != napi_ok) return NULL;
  return obj;
}

napi_value make_int(napi_env env, int64_t v) {
  napi_value out;
  return napi_create_int64(env, v, &out) == napi_ok ? out : NULL;
}

/* ---- the TUN device ---------------------------------------------------------------------------------- */

/* openTun(name, multiQueue, offload?) -> { fd, name, offloads } */
static napi_value js_open_tun(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc;
  char name[16];
  size_t name_len = 0;
  bool multi_queue = false, offload = false;
  if (!get_argc(env, info, 3, argv, &argc)) return NULL;
  if (argc < 2) return arg_error(env, false, "too few arguments"), NULL;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &name_len) != napi_ok)
    return arg_error(env, false, "name must be a string"), NULL;
  if (name_len >= sizeof name) return arg_error(env, true, "name must be shorter than 16 bytes (IFNAMSIZ)"), NULL;
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_len);
  if (napi_get_value_bool(env, argv[1], &multi_queue) != napi_ok)
    return arg_error(env, false, "multiQueue must be a boolean"), NULL;
  if (!get_optional_bool(env, argv[2], "offload", &offload)) return NULL;

  tun_device dev;
  os_error e;
  if (!tun_open(name, multi_queue, offload, &dev, &e)) return throw_os(env, &e);
  napi_value values[3], result = NULL;
  if ((values[0] = make_int(env, dev.fd)) &&
      napi_create_string_utf8(env, dev.name, NAPI_AUTO_LENGTH, &values[1]) == napi_ok &&
      (values[2] = make_int(env, dev.offloads)))
    result = make_object(env, 3, (const char *[]){"fd", "name", "offloads"}, values);
  if (!result) close(dev.fd);
  return result;
}

/* writePackets(fd, batch, stats?) -> accepted; stats = [rejected, lastErrno] */
static napi_value js_write_packets(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc;
  int64_t fd;
  packet_batch b;
  stats_out stats;
  if (!get_argc(env, info, 3, argv, &argc)) return NULL;
  if (argc < 2) return arg_error(env, false, "too few arguments"), NULL;
  if (!get_int(env, argv[0], "fd", FD_RANGE, &fd) || !get_batch(env, argv[1], BATCH_PLAIN, &b) ||
      !get_stats(env, argv[2], &stats))
    return NULL;
  tun_write_result r = {0};
  os_error e;
  if (!tun_write((int)fd, &b, &r, &e)) return throw_os(env, &e);
  put_stat(&stats, 0, r.rejected);
  put_stat(&stats, 1, (uint32_t)r.last_errno);
  return make_int(env, r.accepted);
}

/* writeVnetPackets(fd, batch, stats?, coalesce?) -> accepted;
 * stats = [rejected, lastErrno, writes, coalesced, refused super-packets] */
static napi_value js_write_vnet_packets(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc;
  int64_t fd;
  packet_batch b;
  stats_out stats;
  bool coalesce;
  if (!get_argc(env, info, 4, argv, &argc)) return NULL;
  if (argc < 2) return arg_error(env, false, "too few arguments"), NULL;
  if (!get_int(env, argv[0], "fd", FD_RANGE, &fd) || !get_batch(env, argv[1], BATCH_GSO, &b) ||
      !get_stats(env, argv[2], &stats) || !get_optional_bool(env, argv[3], "coalesce", &coalesce))
    return NULL;
  tun_write_result r = {0};
  os_error e;
  if (!tun_write_vnet((int)fd, &b, coalesce, &r, &e)) return throw_os(env, &e);
  put_stat(&stats, 0, r.rejected);
  put_stat(&stats, 1, (uint32_t)r.last_errno);
  put_stat(&stats, 2, r.writes);
  put_stat(&stats, 3, r.coalesced);
  put_stat(&stats, 4, r.refused);
  return make_int(env, r.accepted);
}

/* ---- the UDP socket ---------------------------------------------------------------------------------- */

/* udpOpen(bindPort, offload?) -> { fd, port, family, gso, gro } */
static napi_value js_udp_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc;
  int64_t port;
  bool offload;
  char address[INET6_ADDRSTRLEN + 1];
  const char *bind_address = NULL;
  if (!get_argc(env, info, 3, argv, &argc)) return NULL;
  if (argc < 1) return arg_error(env, false, "too few arguments"), NULL;
  if (!get_int(env, argv[0], "bindPort", (int_range){0, 65535}, &port) ||
      !get_optional_bool(env, argv[1], "offload", &offload))
    return NULL;
  if (!is_nullish(env, argv[2])) {
    size_t n;
    if (napi_get_value_string_utf8(env, argv[2], address, sizeof address, &n) != napi_ok || n >= sizeof address - 1)
      return arg_error(env, false, "bindAddress must be an IPv4 or IPv6 address"), NULL;
    bind_address = address;
  }
  udp_socket s;
  os_error e;
  if (!udp_open((uint16_t)port, offload, bind_address, &s, &e)) return throw_os(env, &e);
  napi_value values[5], result = NULL;
  if ((values[0] = make_int(env, s.fd)) && (values[1] = make_int(env, s.port)) &&
      (values[2] = make_int(env, s.family == AF_INET6 ? 6 : 4)) &&
      napi_get_boolean(env, s.gso, &values[3]) == napi_ok && napi_get_boolean(env, s.gro, &values[4]) == napi_ok)
    result = make_object(env, 5, (const char *[]){"fd", "port", "family", "gso", "gro"}, values);
  if (!result) close(s.fd);
  return result;
}

static bool ensure_send_scratch(addon *a) {
  if (a->scratch.wire) return true;
  a->scratch.wire = malloc(SEND_WIRE_MAX * sizeof *a->scratch.wire);
  a->scratch.headers = malloc(SEND_HEADER_BYTES);
  a->scratch.sealed = malloc(SEND_SEALED_BYTES);
  if (a->scratch.wire && a->scratch.headers && a->scratch.sealed) return true;
  free(a->scratch.wire);
  free(a->scratch.headers);
  free(a->scratch.sealed);
  a->scratch.wire = NULL;
  a->scratch.headers = NULL;
  a->scratch.sealed = NULL;
  return false;
}

/* ---- WireGuard sessions (wg.c) ----------------------------------------------------------------------- */

/* A sessions table as JS holds it: a napi_external tagged as ours; table NULL once closed (wgClose). */
typedef struct {
  wg_table *table;
} wg_handle;

static const napi_type_tag WG_HANDLE_TAG = {0x6f616b6e65747767ull, 0x73657373696f6e73ull}; /* "oaknetwg" "sessions" */

static void free_wg_handle(napi_env env, void *data, void *hint) {
  wg_handle *h = data;
  wg_destroy(h->table);
  free(h);
}

/* The open table behind a handle argument (TypeError for anything else, Error once closed). */
static bool get_wg_table(napi_env env, napi_value v, wg_table **out) {
  napi_valuetype t;
  bool tagged = false;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_check_object_type_tag(env, v, &WG_HANDLE_TAG, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, v, &data) != napi_ok || !data)
    return arg_error(env, false, "table must be a handle from wgSessionsCreate");
  wg_handle *h = data;
  if (!h->table) {
    napi_throw_error(env, "ERR_WG_CLOSED", "the sessions table is closed");
    return false;
  }
  *out = h->table;
  return true;
}

static bool get_slot(napi_env env, napi_value v, const wg_table *t, uint32_t *slot) {
  int64_t n;
  if (!get_int(env, v, "slot", (int_range){0, (int64_t)wg_capacity(t) - 1}, &n)) return false;
  *slot = (uint32_t)n;
  return true;
}

/* wgSessionsCreate(capacity) -> handle */
static napi_value js_wg_create(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t capacity;
  if (!get_args(env, info, 1, argv) || !get_int(env, argv[0], "capacity", (int_range){1, WG_MAX_CAPACITY}, &capacity))
    return NULL;
  wg_handle *h = calloc(1, sizeof *h);
  if (h) h->table = wg_create((uint32_t)capacity);
  if (!h || !h->table) {
    free(h);
    return throw_errno(env, "malloc", "sessions table", ENOMEM);
  }
  if (napi_create_external(env, h, free_wg_handle, NULL, &result) != napi_ok) {
    free_wg_handle(env, h, NULL);
    return NULL;
  }
  if (napi_type_tag_object(env, result, &WG_HANDLE_TAG) != napi_ok) return NULL;
  return result;
}

/* wgClose(handle): removes (zeroes) every session and frees the table now; later calls on it throw. Idempotent. */
static napi_value js_wg_close(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  wg_table *t;
  void *data = NULL;
  if (!get_args(env, info, 1, argv)) return NULL;
  bool pending = false;
  if (!get_wg_table(env, argv[0], &t)) {
    /* closing a closed table is fine: clear the "closed" error, keep a TypeError */
    napi_value err;
    napi_is_exception_pending(env, &pending);
    if (pending && napi_get_value_external(env, argv[0], &data) == napi_ok && data && !((wg_handle *)data)->table)
      napi_get_and_clear_last_exception(env, &err);
    else
      return NULL;
  } else {
    napi_get_value_external(env, argv[0], &data);
    wg_destroy(t);
    ((wg_handle *)data)->table = NULL;
  }
  napi_get_undefined(env, &result);
  return result;
}

/* wgInstall(handle, slot, send, recv, localIndex, remoteIndex) */
static napi_value js_wg_install(napi_env env, napi_callback_info info) {
  napi_value argv[6], result;
  wg_table *t;
  uint32_t slot;
  uint8_t *send_key, *recv_key;
  size_t send_len, recv_len;
  int64_t local, remote;
  if (!get_args(env, info, 6, argv) || !get_wg_table(env, argv[0], &t) || !get_slot(env, argv[1], t, &slot) ||
      !get_typed(env, argv[2], want_u8("send"), (void **)&send_key, &send_len) ||
      !get_typed(env, argv[3], want_u8("recv"), (void **)&recv_key, &recv_len) ||
      !get_int(env, argv[4], "localIndex", (int_range){0, UINT32_MAX}, &local) ||
      !get_int(env, argv[5], "remoteIndex", (int_range){0, UINT32_MAX}, &remote))
    return NULL;
  if (send_len != WG_KEY_BYTES || recv_len != WG_KEY_BYTES)
    return arg_error(env, true, "send and recv must be 32-byte keys"), NULL;
  int err = wg_install(t, slot, send_key, recv_key, (uint32_t)local, (uint32_t)remote);
  if (err == WG_ERR_INDEX_TAKEN) return arg_error(env, true, "localIndex is installed in another slot"), NULL;
  if (err) return throw_errno(env, "EVP_CipherInit_ex", "chacha20-poly1305", EINVAL);
  napi_get_undefined(env, &result);
  return result;
}

/* wgRemove(handle, slot) */
static napi_value js_wg_remove(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  wg_table *t;
  uint32_t slot;
  if (!get_args(env, info, 2, argv) || !get_wg_table(env, argv[0], &t) || !get_slot(env, argv[1], t, &slot))
    return NULL;
  wg_remove(t, slot);
  napi_get_undefined(env, &result);
  return result;
}

/* wgStats(handle, slot, out Float64Array(>= 6)) */
static napi_value js_wg_stats(napi_env env, napi_callback_info info) {
  napi_value argv[3], result;
  wg_table *t;
  uint32_t slot;
  double *out;
  size_t n;
  if (!get_args(env, info, 3, argv) || !get_wg_table(env, argv[0], &t) || !get_slot(env, argv[1], t, &slot) ||
      !get_typed(env, argv[2], (typed_want){napi_float64_array, "out"}, (void **)&out, &n))
    return NULL;
  if (n < 6) return arg_error(env, true, "out must have at least 6 elements"), NULL;
  wg_stats(t, slot, out);
  napi_get_undefined(env, &result);
  return result;
}

/* wgOpen(handle, batch, verdicts Int32Array(>= count)) */
static napi_value js_wg_open(napi_env env, napi_callback_info info) {
  napi_value argv[3], result;
  wg_table *t;
  packet_batch b;
  int32_t *verdicts;
  size_t n;
  if (!get_args(env, info, 3, argv) || !get_wg_table(env, argv[0], &t) || !get_batch(env, argv[1], BATCH_PLAIN, &b) ||
      !get_typed(env, argv[2], (typed_want){napi_int32_array, "verdicts"}, (void **)&verdicts, &n))
    return NULL;
  if (n < b.count) return arg_error(env, true, "verdicts must have at least count elements"), NULL;
  /* the batch's arrays are the caller's to change (get_batch only reads them) */
  wg_open_batch(t, b.buf, (uint32_t *)b.offsets, (uint32_t *)b.lengths, b.count, verdicts);
  napi_get_undefined(env, &result);
  return result;
}

/* wgSeal(handle, slot, packet, out, outOffset) -> length | -1 */
static napi_value js_wg_seal(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  wg_table *t;
  uint32_t slot;
  uint8_t *packet, *out;
  size_t packet_len, out_len;
  int64_t at;
  if (!get_args(env, info, 5, argv) || !get_wg_table(env, argv[0], &t) || !get_slot(env, argv[1], t, &slot) ||
      !get_typed(env, argv[2], want_u8("packet"), (void **)&packet, &packet_len) ||
      !get_typed(env, argv[3], want_u8("out"), (void **)&out, &out_len) ||
      !get_int(env, argv[4], "outOffset", (int_range){0, (int64_t)out_len}, &at))
    return NULL;
  if (packet_len > WG_MAX_PLAINTEXT) return arg_error(env, true, "packet must be at most 65535 bytes"), NULL;
  if (wg_sealed_len((uint32_t)packet_len) > out_len - (size_t)at)
    return arg_error(env, true, "out has no room for the sealed message after outOffset"), NULL;
  return make_int(env, wg_seal(t, slot, packet, (uint32_t)packet_len, NULL, 0, out + at, out_len - (size_t)at));
}

/* sendPackets' optional sessions argument {table, slots: Int32Array(>= count)}: *out stays NULL when absent. */
static bool get_send_sessions(napi_env env, napi_value v, uint32_t count, send_sessions *ss,
                              const send_sessions **out) {
  napi_value table, slots;
  size_t n;
  *out = NULL;
  if (is_nullish(env, v)) return true;
  if (!get_property(env, v, "table", &table) || !get_property(env, v, "slots", &slots) ||
      !get_typed(env, slots, (typed_want){napi_int32_array, "sessions.slots"}, (void **)&ss->slots, &n))
    return false;
  if (n < count) return arg_error(env, true, "sessions.slots must have at least count elements");
  ss->seal = NULL;
  ss->table = NULL;
  int64_t capacity = 0;
  if (!is_nullish(env, table)) {
    wg_table *t;
    if (!get_wg_table(env, table, &t)) return false;
    ss->seal = wg_sealer;
    ss->table = t;
    capacity = wg_capacity(t);
  }
  for (uint32_t i = 0; i < count; i++)
    if (ss->slots[i] < -1 || (ss->table && ss->slots[i] >= capacity))
      return arg_error(env, true, "sessions.slots[i] must be -1 or a slot of the table");
  *out = ss;
  return true;
}

/* sendPackets(fd, family, batch, stats?, gso?, sessions?) -> wire datagrams sent;
 * stats = [rejected, lastErrno, refusedRuns, gsoMessages, busy, dropped, sealDropped]; sessions = {table,
 * slots}: packet i is sealed with slots[i] when that is >= 0 (table null: such packets are dropped). When the
 * socket fails (or the send scratch cannot be made) it throws the errno Error with two more properties, sent (wire datagrams sent
 * before) and unsent (those not sent because of it), and fills stats in as far as the call got. */
static napi_value js_send_packets(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  size_t argc;
  int64_t fd, family;
  packet_batch b;
  stats_out stats;
  send_sessions ss;
  const send_sessions *sessions;
  addon *a = get_addon(env);
  udp_socket s = {0};
  if (!a || !get_argc(env, info, 6, argv, &argc)) return NULL;
  if (argc < 3) return arg_error(env, false, "too few arguments"), NULL;
  if (!get_int(env, argv[0], "fd", FD_RANGE, &fd) ||
      !get_int(env, argv[1], "family", (int_range){4, 6}, &family) ||
      !get_batch(env, argv[2], BATCH_GSO | BATCH_ENDPOINTS, &b) || !get_stats(env, argv[3], &stats) ||
      !get_optional_bool(env, argv[4], "gso", &s.gso) || !get_send_sessions(env, argv[5], b.count, &ss, &sessions))
    return NULL;
  if (family == 5) return arg_error(env, true, "family must be 4 or 6"), NULL;
  s.fd = (int)fd;
  s.family = family == 6 ? AF_INET6 : AF_INET;
  udp_send_result r = {0};
  os_error e;
  bool ok;
  if (ensure_send_scratch(a)) {
    ok = udp_send(&s, &b, sessions, &a->scratch, &r, &e);
  } else {
    r.unsent = udp_wire_count(&b, 0, &r); /* nothing went out */
    ok = os_fail(&e, ENOMEM, "malloc", "send scratch");
  }
  put_stat(&stats, 0, r.rejected);
  put_stat(&stats, 1, (uint32_t)r.last_errno);
  put_stat(&stats, 2, r.refused_runs);
  put_stat(&stats, 3, r.gso_messages);
  put_stat(&stats, 4, r.busy);
  put_stat(&stats, 5, r.dropped);
  put_stat(&stats, 6, r.seal_dropped);
  if (ok) return make_int(env, r.sent);
  napi_value value, error = errno_error(env, e.syscall, e.what, e.err);
  if (!error) return NULL;
  if ((value = make_int(env, r.sent))) napi_set_named_property(env, error, "sent", value);
  if ((value = make_int(env, r.unsent))) napi_set_named_property(env, error, "unsent", value);
  napi_throw(env, error);
  return NULL;
}

/* ---- fds and the module ------------------------------------------------------------------------------ */

/* closeFd(fd): stops any poller on the fd first (libuv must not watch a closed fd), then close(). */
static napi_value js_close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t fd;
  addon *a = get_addon(env);
  if (!a || !get_args(env, info, 1, argv) || !get_int(env, argv[0], "fd", FD_RANGE, &fd)) return NULL;
  stop_pollers_on_fd(a, (int)fd);
  if (close((int)fd) < 0 && errno != EINTR) return throw_errno(env, "close", NULL, errno);
  napi_get_undefined(env, &result);
  return result;
}

static void free_addon(napi_env env, void *data, void *hint) {
  addon *a = data;
  detach_pollers(a);
  free(a->scratch.wire);
  free(a->scratch.headers);
  free(a->scratch.sealed);
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
      {"writeVnetPackets", NULL, js_write_vnet_packets, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendPackets", NULL, js_send_packets, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openInRoot", NULL, js_open_in_root, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setThreadNice", NULL, js_set_thread_nice, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgSessionsCreate", NULL, js_wg_create, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgClose", NULL, js_wg_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgInstall", NULL, js_wg_install, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgRemove", NULL, js_wg_remove, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgStats", NULL, js_wg_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgOpen", NULL, js_wg_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wgSeal", NULL, js_wg_seal, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
#ifdef OAKNET_TEST_EXPORTS
  if (!define_test_exports(env, exports)) return NULL;
#endif
  return exports;
}
