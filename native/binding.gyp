{
  "variables": {
    "oaknet_sources": ["checksum.c", "offload.c", "tun.c", "udp.c", "wg.c", "poller.c", "inroot.c", "sched.c", "glue.c"],
    "oaknet_cflags": ["-std=gnu11", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror=implicit-function-declaration"]
  },
  "targets": [
    {
      "target_name": "oaknet_native",
      "sources": ["<@(oaknet_sources)"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["<@(oaknet_cflags)"]
    },
    {
      "target_name": "oaknet_native_test",
      "sources": ["<@(oaknet_sources)", "test_exports.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "OAKNET_TEST_EXPORTS"],
      "cflags": ["<@(oaknet_cflags)"]
    }
  ]
}
