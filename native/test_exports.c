/*
 * test_exports.c: two functions that exist only for tests, compiled into the test build of the addon
 * (oaknet_native_test.node, OAKNET_TEST_EXPORTS; src/dataplane/tun/native.ts loadNativeTestIo) and never into
 * the production one. Each copies out what the data path hands the kernel, so tests can compare it byte for
 * byte: segmentPackets, the wire packets udp_send cuts super-packets into; coalescePackets, the writes
 * tun_write_vnet makes with coalescing.
 */
#define OAKNET_NODE_API
#include <stdio.h>

#include "oaknet.h"

/* The out object of both: {buffer, offsets, lengths} (and for segmentPackets an optional endpoints). */
typedef struct {
  uint8_t *buf;
  uint32_t *offsets, *lengths;
  uint8_t *endpoints; /* NULL: not asked for */
  size_t buf_len, max;   /* bytes, and outputs the arrays hold */
} out_batch;

static bool get_out(napi_env env, napi_value obj, bool endpoints, out_batch *o) {
  napi_value v;
  size_t offsets_len, lengths_len, endpoints_len;
  if (!get_property(env, obj, "buffer", &v) ||
      !get_typed(env, v, want_u8("out.buffer"), (void **)&o->buf, &o->buf_len) ||
      !get_property(env, obj, "offsets", &v) ||
      !get_typed(env, v, want_u32("out.offsets"), (void **)&o->offsets, &offsets_len) ||
      !get_property(env, obj, "lengths", &v) ||
      !get_typed(env, v, want_u32("out.lengths"), (void **)&o->lengths, &lengths_len))
    return false;
  o->max = offsets_len < lengths_len ? offsets_len : lengths_len;
  o->endpoints = NULL;
  if (endpoints) {
    if (!get_property(env, obj, "endpoints", &v) ||
        !get_typed(env, v, want_u8("out.endpoints"), (void **)&o->endpoints, &endpoints_len))
      return false;
    if (endpoints_len / ENDPOINT_BYTES < o->max) o->max = endpoints_len / ENDPOINT_BYTES;
  }
  return true;
}

/* Where segment_into copies the next outputs: bytes at `at` (room of them left), their lengths at `lengths`
 * (slots of them left). */
typedef struct {
  uint8_t *at;
  size_t room;
  uint32_t *lengths;
  size_t slots;
} out_cursor;

/* Copies packet i of b to the cursor as its wire packets: itself (gso word 0), or its segments, each one's
 * headers (write_segment_header) then its payload. Returns how many, 0 when it cannot be cut, -1 when they
 * do not fit in the cursor's room and slots. The cursor itself is not moved. */
static int segment_into(const packet_batch *b, uint32_t i, const out_cursor *out) {
  const uint8_t *p = b->buf + b->offsets[i];
  uint32_t len = b->lengths[i], word = batch_gso(b, i);
  uint8_t *at = out->at;
  if (out->slots == 0) return -1;
  if (word == 0) {
    if (len > out->room) return -1;
    memcpy(at, p, len);
    out->lengths[0] = len;
    return 1;
  }
  segment_plan plan;
  if (!plan_segments(p, len, word, &plan)) return 0;
  if (plan.nseg > out->slots || (size_t)plan.nseg * plan.hdr + plan.payload > out->room) return -1;
  for (uint32_t k = 0; k < plan.nseg; k++) {
    uint32_t payload = write_segment_header(&plan, k, at);
    memcpy(at + plan.hdr, segment_payload(&plan, k), payload);
    out->lengths[k] = plan.hdr + payload;
    at += out->lengths[k];
  }
  return (int)plan.nseg;
}

/* segmentPackets(batch, from, out, stats) -> next. Turns packets from..count-1 of batch into wire packets in
 * out.buffer, back to back from its start (see segment_into); each output gets its packet's endpoint when both
 * batch.endpoints and out.endpoints are given. Stops before the first packet that no longer fits in out and
 * returns its index (count when all were done); stats[0] = outputs made, stats[1] = packets dropped (a
 * super-packet that cannot be cut, or one too big for an empty out). */
static napi_value js_segment_packets(napi_env env, napi_callback_info info) {
  napi_value argv[4], v, out_v;
  packet_batch b;
  out_batch o;
  int64_t from;
  uint32_t *stats;
  size_t stats_len, endpoints_len = 0;
  bool endpoints = false;
  if (!get_args(env, info, 4, argv) || !get_batch(env, argv[0], BATCH_GSO, &b) ||
      !get_int(env, argv[1], "from", (int_range){0, b.count}, &from) ||
      !get_typed(env, argv[3], want_u32("stats"), (void **)&stats, &stats_len))
    return NULL;
  if (stats_len < 2) return arg_error(env, true, "stats must have at least 2 elements"), NULL;
  if (!get_property(env, argv[0], "endpoints", &v) || !get_property(env, argv[2], "endpoints", &out_v)) return NULL;
  if (!is_nullish(env, v) && !is_nullish(env, out_v)) {
    if (!get_typed(env, v, want_u8("endpoints"), (void **)&b.endpoints, &endpoints_len)) return NULL;
    if (endpoints_len < (size_t)b.count * ENDPOINT_BYTES)
      return arg_error(env, true, "endpoints must hold count endpoints of 18 bytes"), NULL;
    endpoints = true;
  }
  if (!get_out(env, argv[2], endpoints, &o)) return NULL;
  if (o.max == 0) /* no packet could ever be made: a caller's bug, not a drop of every input */
    return arg_error(env, true, "out.offsets, out.lengths and out.endpoints must have room for an output"), NULL;
  uint32_t i = (uint32_t)from, made = 0, dropped = 0;
  size_t at = 0;
  while (i < b.count) {
    out_cursor cursor = {o.buf + at, o.buf_len - at, o.lengths + made, o.max - made};
    int n = segment_into(&b, i, &cursor);
    if (n < 0 && made == 0) n = 0; /* does not fit even alone: drop it */
    if (n < 0) break;
    if (n == 0) {
      dropped++;
      i++;
      continue;
    }
    for (int k = 0; k < n; k++) {
      o.offsets[made + k] = (uint32_t)at;
      at += o.lengths[made + k];
      if (endpoints)
        memcpy(o.endpoints + (size_t)(made + k) * ENDPOINT_BYTES, b.endpoints + (size_t)i * ENDPOINT_BYTES,
               ENDPOINT_BYTES);
    }
    made += (uint32_t)n;
    i++;
  }
  stats[0] = made;
  stats[1] = dropped;
  return make_int(env, i);
}

/* coalescePackets(batch, out) -> outputs. What writeVnetPackets(fd, batch, stats, true) would write, copied
 * into out instead: output i (its virtio header, then the packet or assembled super-packet) at
 * out.buffer[out.offsets[i]], out.lengths[i] bytes. Throws RangeError when out is too small. */
static napi_value js_coalesce_packets(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  packet_batch b;
  out_batch o;
  if (!get_args(env, info, 2, argv) || !get_batch(env, argv[0], BATCH_GSO, &b) || !get_out(env, argv[1], false, &o))
    return NULL;
  uint32_t i = 0, n = 0;
  size_t at = 0;
  vnet_write w;
  while (i < b.count) {
    plan_vnet_write(&b, i, true, &w);
    i += w.covers;
    if (w.bad) continue;
    size_t bytes = 0;
    for (int k = 0; k < w.niov; k++) bytes += w.iov[k].iov_len;
    if (n >= o.max || bytes > o.buf_len - at)
      return arg_error(env, true, "out.buffer, out.offsets or out.lengths is too small"), NULL;
    o.offsets[n] = (uint32_t)at;
    o.lengths[n++] = (uint32_t)bytes;
    for (int k = 0; k < w.niov; k++) {
      memcpy(o.buf + at, w.iov[k].iov_base, w.iov[k].iov_len);
      at += w.iov[k].iov_len;
    }
  }
  return make_int(env, n);
}

bool define_test_exports(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"segmentPackets", NULL, js_segment_packets, NULL, NULL, NULL, napi_enumerable, NULL},
      {"coalescePackets", NULL, js_coalesce_packets, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props) == napi_ok;
}
