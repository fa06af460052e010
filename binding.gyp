{
  "targets": [
    {
      "target_name": "phoenix_native",
      "sources": ["native/inotify.cc", "native/scandir.cc", "native/cdc.cc", "native/fadvise.cc", "native/crypto.cc", "native/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-O2"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
