/*
 * poller.c: readiness from a libuv poll watcher on Node's own event loop (no threads). On a wake-up the
 * poller reads up to maxBatch packets (tun_read_batch or udp_recv_batch into the caller's buffers), makes one
 * JS call onBatch(count) for the batch, and yields to the loop after MAX_ROUNDS full batches, so other I/O is
 * not starved.
 *
 * Lifetime: startPoll links a poller into the per-environment list and returns its id (a number, so a stale
 * or repeated stopPoll can never touch freed memory). stopPoll, closeFd, a fatal read error, or environment
 * teardown unlink it, stop the watcher and uv_close it; the close callback frees it. A stopped watcher no
 * longer keeps the event loop alive. Stopping from inside onBatch is safe: the poller checks `stopped` after
 * every callback and its memory lives until the close callback.
 */
#define OAKNET_NODE_API
#include <stdlib.h>
#include <uv.h>

#include "oaknet.h"

#define MAX_ROUNDS 4 /* full batches per wake-up before yielding to the event loop */

typedef struct poller {
  uv_poll_t watcher;
  napi_env env;
  addon *addon;
  struct poller *next;
  uint32_t id;
  bool stopped;
  read_ring ring;
  napi_ref buf_ref, lengths_ref, addrs_ref, extra_ref, callback_ref;
  napi_async_context async_context;
  napi_async_cleanup_hook_handle teardown_hook;
} poller;

static void free_poller(poller *p) {
  if (p->teardown_hook) napi_remove_async_cleanup_hook(p->teardown_hook);
  udp_ring_free(&p->ring);
  free(p);
}

static void on_watcher_closed(uv_handle_t *handle) { free_poller(handle->data); }

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

static void on_readable(uv_poll_t *watcher, int status, int events) {
  poller *p = watcher->data;
  if (p->stopped) return;
  if (status < 0) {
    call_js(p, status); /* libuv errors are negative errno values on Linux */
    stop_from_loop(p);
    return;
  }
  read_ring *r = &p->ring;
  for (int round = 0; round < MAX_ROUNDS; round++) {
    int err = 0;
    uint32_t slots = 0, n;
    if (r->mode == MODE_READ || r->mode == MODE_READ_VNET) n = slots = tun_read_batch(r, &err);
    else n = udp_recv_batch(r, &err, &slots);
    if (n > 0) call_js(p, (int32_t)n);
    if (p->stopped) return;
    if (err) {
      call_js(p, -err);
      stop_from_loop(p);
      return;
    }
    if (slots < r->max_batch) return; /* drained */
  }
  /* Still more to read: level-triggered polling wakes us again after the loop has served others. */
}

static poller *find_poller(addon *a, int fd) {
  for (poller *p = a->pollers; p; p = p->next)
    if (p->ring.fd == fd) return p;
  return NULL;
}

static bool parse_mode(napi_env env, napi_value v, enum read_mode *mode) {
  char text[16];
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, text, sizeof text, &len) != napi_ok) len = 0;
  if (len && strcmp(text, "read") == 0) *mode = MODE_READ;
  else if (len && strcmp(text, "read-vnet") == 0) *mode = MODE_READ_VNET;
  else if (len && strcmp(text, "recvmmsg") == 0) *mode = MODE_RECVMMSG;
  else if (len && strcmp(text, "recvmmsg-gro") == 0) *mode = MODE_RECVMMSG_GRO;
  else return arg_error(env, false, "mode must be 'read', 'read-vnet', 'recvmmsg' or 'recvmmsg-gro'");
  return true;
}

/* The JS arrays of a ring ({buffer, slotSize, headroom, maxBatch, lengths, addrs?, extra?}), checked against
 * the mode; their napi_values in js[] (buffer, lengths, addrs, extra; NULL when not used) for references. */
static bool get_ring(napi_env env, napi_value obj, read_ring *r, napi_value js[4]) {
  int64_t slot, headroom, max_batch;
  size_t buf_len, lengths_len, addrs_len = 0, extra_len = 0;
  void *buf, *lengths, *addrs = NULL, *extra = NULL;
  napi_value v;
  bool recv = r->mode == MODE_RECVMMSG || r->mode == MODE_RECVMMSG_GRO;
  bool gro = r->mode == MODE_RECVMMSG_GRO;
  js[2] = js[3] = NULL;
  if (!get_property(env, obj, "buffer", &js[0]) || !get_typed(env, js[0], want_u8("buffer"), &buf, &buf_len) ||
      !get_property(env, obj, "slotSize", &v) || !get_int(env, v, "slotSize", (int_range){1, 1 << 24}, &slot) ||
      !get_property(env, obj, "headroom", &v) ||
      !get_int(env, v, "headroom", (int_range){0, slot - 1}, &headroom) || !get_property(env, obj, "maxBatch", &v) ||
      !get_int(env, v, "maxBatch", (int_range){1, MAX_BATCH}, &max_batch) ||
      !get_property(env, obj, "lengths", &js[1]) ||
      !get_typed(env, js[1], want_u32("lengths"), &lengths, &lengths_len))
    return false;
  if ((uint64_t)slot * (uint64_t)max_batch > buf_len)
    return arg_error(env, true, "buffer must hold maxBatch slots of slotSize bytes");
  /* entries per batch: slots, or in GRO mode up to GRO_MAX_SEGMENTS datagrams per slot */
  size_t entries = (size_t)max_batch * (gro ? GRO_MAX_SEGMENTS : 1);
  if (lengths_len < entries)
    return arg_error(env, true, "lengths must have an element per entry (maxBatch, times 128 for recvmmsg-gro)");
  if (recv) {
    if (!get_property(env, obj, "addrs", &js[2]) || !get_typed(env, js[2], want_u8("addrs"), &addrs, &addrs_len))
      return false;
    if (addrs_len < entries * ENDPOINT_BYTES)
      return arg_error(env, true, "addrs must hold an 18-byte endpoint per entry");
  }
  if (r->mode == MODE_READ_VNET || gro) {
    if (!get_property(env, obj, "extra", &js[3]) || !get_typed(env, js[3], want_u32("extra"), &extra, &extra_len))
      return false;
    if (extra_len < entries) return arg_error(env, true, "extra must have an element per entry");
  }
  if (gro && (uint64_t)slot * (uint64_t)max_batch > UINT32_MAX)
    return arg_error(env, true, "buffer offsets must fit in 32 bits");
  r->buf = buf;
  r->slot = (size_t)slot;
  r->headroom = (size_t)headroom;
  r->max_batch = (uint32_t)max_batch;
  r->lengths = lengths;
  r->addrs = addrs;
  r->extra = extra;
  return true;
}

/* startPoll(fd, mode, ring, onBatch) -> handle */
napi_value js_start_poll(napi_env env, napi_callback_info info) {
  napi_value argv[4], js[4];
  addon *a = get_addon(env);
  int64_t fd;
  read_ring ring = {0};
  napi_valuetype callback_type;
  if (!a || !get_args(env, info, 4, argv) || !get_int(env, argv[0], "fd", FD_RANGE, &fd) ||
      !parse_mode(env, argv[1], &ring.mode) || !get_ring(env, argv[2], &ring, js))
    return NULL;
  if (napi_typeof(env, argv[3], &callback_type) != napi_ok || callback_type != napi_function) {
    arg_error(env, false, "onBatch must be a function");
    return NULL;
  }
  if (find_poller(a, (int)fd)) return throw_errno(env, "startPoll", "fd is already polled", EEXIST);
  ring.fd = (int)fd;

  poller *p = calloc(1, sizeof *p);
  if (!p) return throw_errno(env, "calloc", "poller", ENOMEM);
  p->env = env;
  p->addon = a;
  p->ring = ring;
  if ((ring.mode == MODE_RECVMMSG || ring.mode == MODE_RECVMMSG_GRO) && !udp_ring_init(&p->ring)) {
    free_poller(p);
    return throw_errno(env, "calloc", "recvmmsg headers", ENOMEM);
  }

  uv_loop_t *loop;
  int r;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) r = UV_EINVAL;
  else r = uv_poll_init(loop, &p->watcher, p->ring.fd);
  if (r < 0) {
    free_poller(p);
    return throw_errno(env, "uv_poll_init", NULL, -r);
  }
  p->watcher.data = p;
  p->id = ++a->next_id;
  p->next = a->pollers;
  a->pollers = p;

  napi_value resource, resource_name;
  bool ok = napi_create_reference(env, js[0], 1, &p->buf_ref) == napi_ok &&
            napi_create_reference(env, js[1], 1, &p->lengths_ref) == napi_ok &&
            (!js[2] || napi_create_reference(env, js[2], 1, &p->addrs_ref) == napi_ok) &&
            (!js[3] || napi_create_reference(env, js[3], 1, &p->extra_ref) == napi_ok) &&
            napi_create_reference(env, argv[3], 1, &p->callback_ref) == napi_ok &&
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

/* stopPoll(handle) -> whether it was running */
napi_value js_stop_poll(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t id;
  addon *a = get_addon(env);
  if (!a || !get_args(env, info, 1, argv) || !get_int(env, argv[0], "handle", (int_range){0, UINT32_MAX}, &id))
    return NULL;
  poller *p = a->pollers;
  while (p && p->id != (uint32_t)id) p = p->next;
  if (p) stop_poller(p, true);
  napi_get_boolean(env, p != NULL, &result);
  return result;
}

/* Stops every poller on fd (libuv must not watch a closed fd). */
void stop_pollers_on_fd(addon *a, int fd) {
  for (poller *p; (p = find_poller(a, fd));) stop_poller(p, true);
}

/* The instance data is going away: teardown hooks normally stopped every poller already; detach any left so
 * none touches freed memory. */
void detach_pollers(addon *a) {
  for (poller *p = a->pollers; p; p = p->next) p->addon = NULL;
}
