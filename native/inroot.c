/*
 * inroot.c: opening a file inside another process's root (a container's /proc/<pid>/root) as that root sees
 * it. openat2 with RESOLVE_IN_ROOT resolves absolute symlinks and ".." against the given root instead of the
 * caller's, so a file in a container image can never name one of the host's; RESOLVE_NO_XDEV refuses to cross
 * a mount point (a file the runtime bind-mounted there, e.g. the host's own resolv.conf, is left alone:
 * EXDEV); RESOLVE_NO_MAGICLINKS refuses /proc/.../fd-style links. Node has no openat2.
 */
#define OAKNET_NODE_API
#include <fcntl.h>
#include <stdio.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "oaknet.h"

#define PATH_BYTES 4096

static bool get_path(napi_env env, napi_value v, const char *name, char *out) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, out, PATH_BYTES, &n) != napi_ok || n == 0 || n >= PATH_BYTES - 1) {
    char message[64];
    snprintf(message, sizeof message, "%s must be a non-empty path", name);
    return arg_error(env, false, message);
  }
  return true;
}

/* openInRoot(root, path) -> fd: `path` (relative to `root`, resolved inside it, on root's own mount) opened
 * for writing, created 0644 if missing, non-blocking, close-on-exec, never through a symlink at its end. */
napi_value js_open_in_root(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char root[PATH_BYTES], path[PATH_BYTES];
  if (!get_args(env, info, 2, argv) || !get_path(env, argv[0], "root", root) || !get_path(env, argv[1], "path", path))
    return NULL;
  int dir = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return throw_errno(env, "open", root, errno);
  struct open_how how = {
      .flags = O_WRONLY | O_CREAT | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC,
      .mode = 0644,
      .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS,
  };
  int fd = (int)syscall(SYS_openat2, dir, path, &how, sizeof how);
  int err = errno;
  close(dir);
  if (fd < 0) return throw_errno(env, "openat2", path, err);
  return make_int(env, fd);
}
