/*
 * sched.c: the calling thread's scheduling priority. On Linux setpriority(PRIO_PROCESS, tid) sets one
 * thread's nice value (not the process's), which Node's os.setPriority cannot address for a worker thread.
 */
#define OAKNET_NODE_API
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "oaknet.h"

/* setThreadNice(nice) -> undefined: the calling thread's nice value (-20..19; lowering it needs CAP_SYS_NICE). */
napi_value js_set_thread_nice(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t nice;
  if (!get_args(env, info, 1, argv) || !get_int(env, argv[0], "nice", (int_range){-20, 19}, &nice)) return NULL;
  pid_t tid = (pid_t)syscall(SYS_gettid);
  if (setpriority(PRIO_PROCESS, (id_t)tid, (int)nice) < 0) return throw_errno(env, "setpriority", NULL, errno);
  napi_get_undefined(env, &result);
  return result;
}
