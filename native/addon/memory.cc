// Host memory for guests: anonymous or memfd-backed mappings exposed to JS as
// external ArrayBuffers. The JS ArrayBuffer is the only handle: unmap() detaches
// it before munmap so no JS code can reach unmapped memory, and a GC finalizer
// unmaps a mapping whose ArrayBuffer was never explicitly released.
#include "common.h"
#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <unordered_map>

namespace elisa {
namespace {

// Flags of mmap(), chosen in TypeScript (src/kvm/memory.ts keeps the same values).
enum MapFlags : uint32_t {
  kPopulate = 1,      // MAP_POPULATE: fault every page in now
  kHugetlb = 2,       // MAP_HUGETLB: back by hugetlbfs pages (anonymous only)
  kLock = 4,          // mlock() the whole range
  kHugepageAdvise = 8 // madvise(MADV_HUGEPAGE): transparent huge pages
};

// One live mapping. Owned jointly by the registry (until unmapped) and by the
// ArrayBuffer finalizer (which deletes it), so the finalizer never touches a
// range that unmap() already released.
struct Mapping {
  void* addr;
  size_t length;
  bool unmapped;
  int pins;  // > 0 while a vCPU runner uses the range (kvm_run)
};

// Keyed by start address; only touched on the JS thread (bindings and finalizers).
std::unordered_map<void*, Mapping*>& Registry() {
  static auto* r = new std::unordered_map<void*, Mapping*>();
  return *r;
}

void Finalize(Napi::Env, void*, Mapping* m) {
  if (!m->unmapped) {
    munmap(m->addr, m->length);
    Registry().erase(m->addr);
  }
  delete m;
}

Napi::Value PageSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(sysconf(_SC_PAGESIZE)));
}

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  std::string name = info[0].As<Napi::String>().Utf8Value();
  unsigned flags = MFD_CLOEXEC | (info[1].ToBoolean() ? MFD_HUGETLB : 0);
  int fd = memfd_create(name.c_str(), flags);
  if (fd < 0) ThrowSyscallError(info.Env(), "memfd_create", errno, name);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t size = ArgU64(info, 1, "size");
  if (ftruncate(fd, static_cast<off_t>(size)) < 0) ThrowSyscallError(info.Env(), "ftruncate", errno);
  return info.Env().Undefined();
}

// mmap(fd or -1, size, offset, flags) -> ArrayBuffer over the new mapping.
Napi::Value Mmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd = ArgI64(info, 0, "fd");
  uint64_t size = ArgU64(info, 1, "size");
  uint64_t offset = ArgU64(info, 2, "offset");
  uint32_t flags = ArgU32(info, 3, "flags");
  if (size == 0) ThrowRange(env, "mmap: size must not be zero");
  int mflags = fd < 0 ? (MAP_PRIVATE | MAP_ANONYMOUS) : MAP_SHARED;
  if (flags & kPopulate) mflags |= MAP_POPULATE;
  // Hugetlb pages are reserved at mmap time (ENOMEM now, instead of SIGBUS at
  // the first touch), so MAP_NORESERVE only for ordinary anonymous memory.
  if ((flags & kHugetlb) && fd < 0) mflags |= MAP_HUGETLB;
  else if (fd < 0) mflags |= MAP_NORESERVE;
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, mflags, fd < 0 ? -1 : static_cast<int>(fd), static_cast<off_t>(offset));
  if (p == MAP_FAILED) {
    int e = errno;
    ThrowSyscallError(env, "mmap", e);
  }
  if ((flags & kHugepageAdvise) && madvise(p, size, MADV_HUGEPAGE) < 0) {
    int e = errno;
    munmap(p, size);
    ThrowSyscallError(env, "madvise", e, "MADV_HUGEPAGE: transparent huge pages unavailable in this kernel");
  }
  if ((flags & kLock) && mlock(p, size) < 0) {
    int e = errno;
    munmap(p, size);
    ThrowSyscallError(env, "mlock", e, "check RLIMIT_MEMLOCK (ulimit -l)");
  }
  auto* m = new Mapping{p, size, false, 0};
  Registry()[p] = m;
  return Napi::ArrayBuffer::New(env, p, size, Finalize, m);
}

}  // namespace

bool PinMapping(void* addr) {
  auto it = Registry().find(addr);
  if (it == Registry().end()) return false;
  it->second->pins++;
  return true;
}

void UnpinMapping(void* addr) {
  auto it = Registry().find(addr);
  if (it != Registry().end() && it->second->pins > 0) it->second->pins--;
}

bool UnmapArrayBuffer(Napi::Env env, Napi::ArrayBuffer ab, bool ignorePin) {
  void* p = ab.Data();
  auto it = Registry().find(p);
  if (p == nullptr || it == Registry().end()) return false;
  Mapping* m = it->second;
  if (m->pins > 0 && !ignorePin) ThrowType(env, "munmap: this mapping is in use by a vCPU (kvm_run); dispose the vCPU instead");
  // Order matters: detach first so no JS view can observe the range afterwards.
  ab.Detach();
  if (munmap(m->addr, m->length) < 0) ThrowSyscallError(env, "munmap", errno);
  m->unmapped = true;
  Registry().erase(it);
  return true;
}

namespace {

// munmap(ArrayBuffer): detaches the buffer (every view of it becomes length 0)
// and then releases the range. Returns false if it was not a live mapping.
Napi::Value Munmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArrayBuffer()) ThrowType(env, "munmap: an ArrayBuffer returned by mmap is expected");
  return Napi::Boolean::New(env, UnmapArrayBuffer(env, info[0].As<Napi::ArrayBuffer>(), false));
}

// Host virtual address of a mapping's first byte (for diagnostics and tests
// that compare against /proc/self/maps; never needed to drive KVM).
Napi::Value AddressOf(const Napi::CallbackInfo& info) {
  if (!info[0].IsArrayBuffer()) ThrowType(info.Env(), "addressOf: ArrayBuffer expected");
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(reinterpret_cast<uintptr_t>(info[0].As<Napi::ArrayBuffer>().Data())));
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("pageSize", Napi::Function::New(env, PageSize));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate));
  exports.Set("mmap", Napi::Function::New(env, Mmap));
  exports.Set("munmap", Napi::Function::New(env, Munmap));
  exports.Set("addressOf", Napi::Function::New(env, AddressOf));
}

}  // namespace elisa
