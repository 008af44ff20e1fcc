/*
 * tun.c: the TUN device. Opening (TUNSETIFF on /dev/net/tun; with offloads IFF_VNET_HDR, TUNSETVNETHDRSZ and
 * TUNSETOFFLOAD), batched reads for the poller, and batched writes: plain ones, one write() per packet (TUN
 * takes exactly one packet per write), and vnet ones, each packet or coalesced super-packet behind its
 * virtio_net_hdr (offload.c plans them). System calls only: failures that make the fd unusable come back in
 * an os_error, for glue.c to throw.
 */
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "oaknet.h"

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

_Static_assert(sizeof(((tun_device *)0)->name) == IFNAMSIZ, "tun_device.name holds IFNAMSIZ bytes");

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

/* Opens /dev/net/tun (non-blocking, close-on-exec) attached to `name` ('' = the kernel picks tunN; shorter
 * than IFNAMSIZ, checked by the caller). out->name is the kernel's name for it (e->what points there). */
bool tun_open(const char *name, bool multi_queue, bool offload, tun_device *out, os_error *e) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return os_fail(e, errno, "open", "/dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  ifr.ifr_flags = tun_flags(multi_queue, offload);
  memcpy(out->name, ifr.ifr_name, IFNAMSIZ);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    return os_fail(e, err, "ioctl(TUNSETIFF)", out->name[0] ? out->name : "(kernel-chosen name)");
  }
  memcpy(out->name, ifr.ifr_name, IFNAMSIZ);
  out->name[IFNAMSIZ - 1] = 0;
  out->offloads = -1; /* no virtio header at all */
  if (offload) {
    int size = (int)VNET_HDR_BYTES;
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) {
      int err = errno;
      close(fd);
      return os_fail(e, err, "ioctl(TUNSETVNETHDRSZ)", out->name);
    }
    out->offloads = 0;
    for (size_t i = 0; i < sizeof OFFLOAD_CHOICES / sizeof OFFLOAD_CHOICES[0]; i++) {
      if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)OFFLOAD_CHOICES[i]) == 0) {
        out->offloads = (int)OFFLOAD_CHOICES[i];
        break;
      }
    }
  }
  out->fd = fd;
  return true;
}

#define MAX_EINVAL_RUN 64 /* read-vnet: consecutive EINVAL reads (dropped packets) that end a batch */

/* read() until EAGAIN or a full batch; returns the entries made and sets *err on any other failure. With a
 * virtio header (read-vnet) the header goes to the stack and the packet to its slot; the header becomes the
 * packet's gso word. There EINVAL is one packet lost, not a broken fd: the kernel could not describe it in a
 * virtio header ("unexpected GSO type") and has freed it. It becomes a length-0 entry (a counted drop), and
 * MAX_EINVAL_RUN of them in a row end the batch. */
uint32_t tun_read_batch(read_ring *r, int *err) {
  size_t room = r->slot - r->headroom;
  uint32_t n = 0, einval_run = 0;
  bool vnet = r->mode == MODE_READ_VNET;
  while (n < r->max_batch) {
    uint8_t *packet = r->buf + n * r->slot + r->headroom;
    struct virtio_net_hdr vh;
    ssize_t got;
    if (vnet) {
      struct iovec iov[2] = {{&vh, VNET_HDR_BYTES}, {packet, room}};
      got = readv(r->fd, iov, 2);
    } else {
      got = read(r->fd, packet, room);
    }
    if (got < 0) {
      if (errno == EINTR) continue;
      if (vnet && errno == EINVAL) {
        r->extra[n] = 0;
        r->lengths[n++] = 0;
        if (++einval_run >= MAX_EINVAL_RUN) break;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) *err = errno;
      break;
    }
    einval_run = 0;
    if (!vnet) {
      /* TUN reports a packet's full length even when it did not fit: mark it truncated. */
      r->lengths[n++] = (size_t)got > room ? 0 : (uint32_t)got;
      continue;
    }
    uint32_t len =
        (size_t)got < VNET_HDR_BYTES || (size_t)got - VNET_HDR_BYTES > room ? 0 : (uint32_t)got - VNET_HDR_BYTES;
    r->extra[n] = len ? gso_word_from_vnet(&vh, packet, &len) : 0;
    r->lengths[n++] = len;
  }
  return n;
}

/* Writes packets 0..count-1 of b, one write() each. A packet the kernel rejects (EINVAL: not IPv4/IPv6; EIO:
 * device down; EMSGSIZE...) is skipped and counted; EAGAIN stops. False (e set) when the fd is unusable. */
bool tun_write(int fd, const packet_batch *b, tun_write_result *r, os_error *e) {
  for (uint32_t i = 0; i < b->count; i++) {
    ssize_t got;
    do got = write(fd, b->buf + b->offsets[i], b->lengths[i]);
    while (got < 0 && errno == EINTR);
    if (got >= 0) {
      r->accepted++;
      continue;
    }
    int err = errno;
    if (is_busy(err)) break;
    if (is_fatal(err)) return os_fail(e, err, "write", NULL);
    r->rejected++;
    r->last_errno = err;
  }
  return true;
}

/* Writes packets 0..count-1 of b to a TUN opened with offloads, each behind its virtio header (a GSO one for a
 * super-packet). With coalesce, each run of consecutive TCP segments of one flow becomes ONE super-packet
 * written from the caller's buffer with writev (no copy here). A super-packet the kernel refuses (any error
 * but the busy and fatal ones) is written again packet by packet, which reports their own errors. */
bool tun_write_vnet(int fd, const packet_batch *b, bool coalesce, tun_write_result *r, os_error *e) {
  uint32_t i = 0, no_coalesce_before = 0;
  vnet_write w;
  while (i < b->count) {
    plan_vnet_write(b, i, coalesce && i >= no_coalesce_before, &w);
    if (w.bad) {
      r->rejected += w.covers;
      r->last_errno = EINVAL;
      i += w.covers;
      continue;
    }
    ssize_t got;
    do got = writev(fd, w.iov, w.niov);
    while (got < 0 && errno == EINTR);
    r->writes++;
    if (got >= 0) {
      r->accepted += w.covers;
      if (w.covers > 1) r->coalesced += w.covers;
      i += w.covers;
      continue;
    }
    int err = errno;
    if (is_busy(err)) break;
    if (is_fatal(err)) return os_fail(e, err, "writev", NULL);
    if (w.covers > 1) {
      /* the super-packet as a whole was refused: write its packets one by one */
      r->refused++;
      no_coalesce_before = i + w.covers;
      continue;
    }
    r->rejected += w.covers; /* EINVAL (not IPv4/IPv6, a bad header), EIO (device down)... */
    r->last_errno = err;
    i += w.covers;
  }
  return true;
}
