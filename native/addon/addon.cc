// Entry point of the native addon: a thin layer over the /dev/kvm ioctls.
// The logic lives in TypeScript (src/kvm); this file only registers bindings.
#include "common.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  elisa::InitErrors(env, exports);
  elisa::InitIoctls(env, exports);
  elisa::InitMemory(env, exports);
  elisa::InitRunner(env, exports);
  elisa::InitSwitchLoop(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(elisa_kvm, Init)
