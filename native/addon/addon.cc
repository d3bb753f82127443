// Entry point of the native addon: a thin layer over the /dev/kvm ioctls.
// The logic lives in TypeScript (src/kvm); this file only registers bindings.
#include <napi.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

namespace {

Napi::Value GetApiVersion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    Napi::Error::New(env, std::string("open(/dev/kvm): ") + strerror(errno)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int v = ioctl(fd, KVM_GET_API_VERSION, 0);
  close(fd);
  return Napi::Number::New(env, v);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("getApiVersion", Napi::Function::New(env, GetApiVersion));
  return exports;
}

}  // namespace

NODE_API_MODULE(elisa_kvm, Init)
