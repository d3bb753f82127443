// Shared helpers of the native addon: argument conversion and the errors every
// binding throws. The addon stays a thin, faithful layer over the KVM ioctls and
// a few memory syscalls; validation that needs context lives in TypeScript.
#pragma once
#include <napi.h>
#include <cstdint>
#include <string>

namespace elisa {

// Throws a KvmError (the TS class registered with setErrorClasses) naming the
// ioctl and errno. `ioctl` is the request's name as spelled in linux/kvm.h.
[[noreturn]] void ThrowIoctlError(Napi::Env env, const char* ioctl, int err);
// The same KvmError as a value (for rejecting a promise instead of throwing).
Napi::Value MakeIoctlError(Napi::Env env, const char* ioctl, int err);
// Throws a HostError naming a non-ioctl system call (mmap, memfd_create, ...).
[[noreturn]] void ThrowSyscallError(Napi::Env env, const std::string& syscall, int err,
                                    const std::string& detail = "");
[[noreturn]] void ThrowType(Napi::Env env, const std::string& message);
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& message);

// Argument readers: each throws a TypeError naming the argument when wrong.
int ArgFd(const Napi::CallbackInfo& info, size_t i);
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name);
int64_t ArgI64(const Napi::CallbackInfo& info, size_t i, const char* name);
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* name);  // number or bigint

// The bytes of a TypedArray/DataView/ArrayBuffer argument. The pointer is only
// valid during the current synchronous call (the JS value is on the stack).
struct Bytes { uint8_t* data; size_t length; };
Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const char* name);

// Mappings made by mmap() (memory.cc). A pinned mapping cannot be unmapped from
// JS: the vCPU runner pins its kvm_run mapping while it may still access it.
bool PinMapping(void* addr);
void UnpinMapping(void* addr);
// Detaches `ab` and unmaps it (the munmap binding, callable from C++).
bool UnmapArrayBuffer(Napi::Env env, Napi::ArrayBuffer ab, bool ignorePin);

void InitErrors(Napi::Env env, Napi::Object exports);
void InitIoctls(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitRunner(Napi::Env env, Napi::Object exports);
void InitSwitchLoop(Napi::Env env, Napi::Object exports);  // elisa_switch.cc (emulated backend)

}  // namespace elisa
