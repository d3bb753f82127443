{
  "targets": [
    {
      "target_name": "elisa_kvm",
      "sources": [
        "native/addon/addon.cc",
        "native/addon/errors.cc",
        "native/addon/ioctls.cc",
        "native/addon/memory.cc",
        "native/addon/runner.cc",
        "native/addon/elisa_switch.cc"
      ],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")"],
      "defines": ["NAPI_VERSION=9", "NODE_ADDON_API_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++20", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
    }
  ]
}
