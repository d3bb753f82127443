// Error construction for the addon. TypeScript registers its KvmError and
// HostError classes once (setErrorClasses); every failing ioctl then throws an
// instance of KvmError that carries the ioctl name and errno, so callers can
// `instanceof` and switch on `.code` without parsing messages.
#include "common.h"
#include <cerrno>
#include <cstring>

namespace elisa {
namespace {

struct ErrorClasses {
  Napi::FunctionReference kvmError;
  Napi::FunctionReference hostError;
};

ErrorClasses* Classes(Napi::Env env) { return env.GetInstanceData<ErrorClasses>(); }

Napi::Value SetErrorClasses(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction() || !info[1].IsFunction()) ThrowType(env, "setErrorClasses(KvmError, HostError): two constructors expected");
  auto* c = Classes(env);
  c->kvmError = Napi::Persistent(info[0].As<Napi::Function>());
  c->hostError = Napi::Persistent(info[1].As<Napi::Function>());
  return env.Undefined();
}

}  // namespace

Napi::Value MakeIoctlError(Napi::Env env, const char* ioctl, int err) {
  auto* c = Classes(env);
  if (c && !c->kvmError.IsEmpty())
    return c->kvmError.New({Napi::String::New(env, ioctl), Napi::Number::New(env, err)});
  return Napi::Error::New(env, std::string(ioctl) + " failed: " + strerror(err)).Value();
}

void ThrowIoctlError(Napi::Env env, const char* ioctl, int err) {
  throw Napi::Error(env, MakeIoctlError(env, ioctl, err));
}

void ThrowSyscallError(Napi::Env env, const std::string& syscall, int err, const std::string& detail) {
  auto* c = Classes(env);
  if (c && !c->hostError.IsEmpty()) {
    Napi::Object e = c->hostError.New({Napi::String::New(env, syscall), Napi::Number::New(env, err),
                                       Napi::String::New(env, detail)});
    throw Napi::Error(env, e);
  }
  throw Napi::Error::New(env, syscall + " failed: " + strerror(err) + (detail.empty() ? "" : " (" + detail + ")"));
}

void ThrowType(Napi::Env env, const std::string& message) { throw Napi::TypeError::New(env, message); }
void ThrowRange(Napi::Env env, const std::string& message) { throw Napi::RangeError::New(env, message); }

int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) ThrowType(info.Env(), "argument " + std::to_string(i) + " must be a file descriptor (number)");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 0x7fffffff || d != static_cast<int>(d)) ThrowType(info.Env(), "invalid file descriptor " + std::to_string(d));
  return static_cast<int>(d);
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) ThrowType(info.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 4294967295.0 || d != static_cast<double>(static_cast<uint32_t>(d)))
    ThrowRange(info.Env(), std::string(name) + " must be an integer in [0, 2^32), got " + std::to_string(d));
  return static_cast<uint32_t>(d);
}

int64_t ArgI64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) ThrowType(info.Env(), std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d))) ThrowRange(info.Env(), std::string(name) + " must be an integer");
  return static_cast<int64_t>(d);
}

uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t u = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowRange(info.Env(), std::string(name) + " does not fit in 64 unsigned bits");
    return u;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d < 0 || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
      ThrowRange(info.Env(), std::string(name) + " must be a non-negative safe integer");
    return static_cast<uint64_t>(d);
  }
  ThrowType(info.Env(), std::string(name) + " must be a number or bigint");
}

Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Value v = info[i];
  if (v.IsTypedArray()) {
    auto t = v.As<Napi::TypedArray>();
    return {static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset(), t.ByteLength()};
  }
  if (v.IsDataView()) {
    auto d = v.As<Napi::DataView>();
    return {static_cast<uint8_t*>(d.ArrayBuffer().Data()) + d.ByteOffset(), d.ByteLength()};
  }
  if (v.IsArrayBuffer()) {
    auto a = v.As<Napi::ArrayBuffer>();
    return {static_cast<uint8_t*>(a.Data()), a.ByteLength()};
  }
  ThrowType(info.Env(), std::string(name) + " must be a TypedArray, DataView or ArrayBuffer");
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData<ErrorClasses>(new ErrorClasses());
  exports.Set("setErrorClasses", Napi::Function::New(env, SetErrorClasses));
}

}  // namespace elisa
