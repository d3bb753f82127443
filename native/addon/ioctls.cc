// Bindings of the /dev/kvm ioctls on the system, VM and vCPU file descriptors.
// Each function is one ioctl (or one syscall), named after it; structs cross the
// boundary as byte buffers whose size is checked against sizeof() here, and the
// TypeScript codecs (src/kvm/structs.ts) lay them out. Failures throw KvmError.
#include "common.h"
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <vector>

namespace elisa {
namespace {

// Request numbers whose struct ends in __DECLARE_FLEX_ARRAY are spelled out with
// C-layout headers. In C++ that macro's empty struct occupies a byte, so both
// sizeof() -- which the request number encodes -- and the array's offset differ
// from C, the kernel's ABI (g++: sizeof(kvm_msr_list) == 8, C: 4), and the
// kernel answers EINVAL. test/kvm/layout.test.ts compares every request number
// used here with the values gcc computes from linux/kvm.h.
struct CMsrList { uint32_t nmsrs; };                  // then uint32_t indices[] at 4
struct CMsrs { uint32_t nmsrs; uint32_t pad; };       // then kvm_msr_entry[] at 8
struct CCpuid2 { uint32_t nent; uint32_t padding; };  // then kvm_cpuid_entry2[] at 8
constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, CMsrList);
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CCpuid2);
constexpr unsigned long kGetMsrFeatureIndexList = _IOWR(KVMIO, 0x0a, CMsrList);
constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, CMsrs);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, CMsrs);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CCpuid2);
struct CXsave { uint32_t region[1024]; };              // C: struct kvm_xsave (4096 bytes; extra[] unused)
constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, CXsave);
constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, CXsave);

// ioctl() retried on EINTR: none of these requests (KVM_RUN is elsewhere) has
// meaningful partial progress, so a stray signal must not surface as an error.
int Ioctl(int fd, unsigned long req, void* arg) {
  int r;
  do { r = ioctl(fd, req, arg); } while (r < 0 && errno == EINTR);
  return r;
}
int IoctlValue(int fd, unsigned long req, unsigned long arg) {
  int r;
  do { r = ioctl(fd, req, arg); } while (r < 0 && errno == EINTR);
  return r;
}

Napi::Value OpenKvm(const Napi::CallbackInfo& info) {
  std::string path = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "/dev/kvm";
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) ThrowSyscallError(info.Env(), "open", errno, path);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  // close() is not retried on EINTR: on Linux the fd is released regardless.
  if (close(ArgFd(info, 0)) < 0 && errno != EINTR) ThrowSyscallError(info.Env(), "close", errno);
  return info.Env().Undefined();
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  int fd = fcntl(ArgFd(info, 0), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) ThrowSyscallError(info.Env(), "fcntl(F_DUPFD_CLOEXEC)", errno);
  return Napi::Number::New(info.Env(), fd);
}

// Requests whose argument is a plain integer and whose result is the return value.
Napi::Value ValueIoctl(const Napi::CallbackInfo& info, unsigned long req, const char* name, unsigned long arg) {
  int r = IoctlValue(ArgFd(info, 0), req, arg);
  if (r < 0) ThrowIoctlError(info.Env(), name, errno);
  return Napi::Number::New(info.Env(), r);
}

// Requests whose argument is a pointer to one fixed-size struct (in, out or both).
Napi::Value StructIoctl(const Napi::CallbackInfo& info, unsigned long req, const char* name, size_t size) {
  Bytes b = ArgBytes(info, 1, name);
  if (b.length != size)
    ThrowRange(info.Env(), std::string(name) + ": struct buffer must be " + std::to_string(size) + " bytes, got " + std::to_string(b.length));
  // Safe: b points into a JS buffer of exactly sizeof(struct) bytes that stays
  // alive for this synchronous call; the kernel reads/writes only that struct.
  if (Ioctl(ArgFd(info, 0), req, b.data) < 0) ThrowIoctlError(info.Env(), name, errno);
  return info.Env().Undefined();
}

// KVM_GET_SUPPORTED_CPUID: entries as raw kvm_cpuid_entry2 bytes (40 each).
Napi::Value GetSupportedCpuid(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> mem(sizeof(CCpuid2) + n * sizeof(kvm_cpuid_entry2));
    auto* c = reinterpret_cast<CCpuid2*>(mem.data());
    c->nent = n;
    if (Ioctl(fd, kGetSupportedCpuid, c) == 0) {
      auto out = Napi::ArrayBuffer::New(info.Env(), c->nent * sizeof(kvm_cpuid_entry2));
      memcpy(out.Data(), mem.data() + sizeof(CCpuid2), out.ByteLength());
      return out;
    }
    if (errno != E2BIG) ThrowIoctlError(info.Env(), "KVM_GET_SUPPORTED_CPUID", errno);
  }
  ThrowIoctlError(info.Env(), "KVM_GET_SUPPORTED_CPUID", E2BIG);
}

// KVM_GET_MSR_INDEX_LIST / KVM_GET_MSR_FEATURE_INDEX_LIST: on E2BIG the kernel
// writes the needed count into nmsrs, so the second attempt fits.
Napi::Value MsrList(const Napi::CallbackInfo& info, unsigned long req, const char* name) {
  int fd = ArgFd(info, 0);
  uint32_t n = 256;
  for (int attempt = 0; attempt < 4; attempt++) {
    std::vector<uint8_t> mem(sizeof(CMsrList) + n * sizeof(uint32_t));
    auto* l = reinterpret_cast<CMsrList*>(mem.data());
    l->nmsrs = n;
    if (Ioctl(fd, req, l) == 0) {
      auto out = Napi::Uint32Array::New(info.Env(), l->nmsrs);
      memcpy(out.Data(), mem.data() + sizeof(CMsrList), l->nmsrs * sizeof(uint32_t));
      return out;
    }
    if (errno != E2BIG) ThrowIoctlError(info.Env(), name, errno);
    n = l->nmsrs > n ? l->nmsrs : n * 2;
  }
  ThrowIoctlError(info.Env(), name, E2BIG);
}

// KVM_GET_MSRS / KVM_SET_MSRS on a vCPU fd, or KVM_GET_MSRS on the system fd
// (feature MSRs). Args: fd, Uint32Array indices, BigUint64Array values (read
// into for GET, read from for SET). Returns how many entries the kernel
// processed: it stops at the first MSR it cannot access.
Napi::Value Msrs(const Napi::CallbackInfo& info, bool set) {
  const char* name = set ? "KVM_SET_MSRS" : "KVM_GET_MSRS";
  int fd = ArgFd(info, 0);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    ThrowType(info.Env(), std::string(name) + ": indices must be a Uint32Array");
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    ThrowType(info.Env(), std::string(name) + ": values must be a BigUint64Array");
  auto idx = info[1].As<Napi::Uint32Array>();
  auto val = info[2].As<Napi::TypedArrayOf<uint64_t>>();
  size_t n = idx.ElementLength();
  if (val.ElementLength() != n) ThrowRange(info.Env(), std::string(name) + ": indices and values differ in length");
  std::vector<uint8_t> mem(sizeof(CMsrs) + n * sizeof(kvm_msr_entry));
  auto* m = reinterpret_cast<CMsrs*>(mem.data());
  // Safe: mem holds the C-layout header and n entries; idx/val have n elements
  // (checked above) and the kernel returns at most n processed entries.
  auto* entries = reinterpret_cast<kvm_msr_entry*>(mem.data() + sizeof(CMsrs));
  m->nmsrs = static_cast<uint32_t>(n);
  for (size_t i = 0; i < n; i++) {
    entries[i].index = idx[i];
    entries[i].data = set ? val[i] : 0;
  }
  int r = Ioctl(fd, set ? kSetMsrs : kGetMsrs, m);
  if (r < 0) ThrowIoctlError(info.Env(), name, errno);
  if (!set) for (int i = 0; i < r; i++) val[i] = entries[i].data;
  return Napi::Number::New(info.Env(), r);
}

// KVM_SET_CPUID2 from raw kvm_cpuid_entry2 bytes.
Napi::Value SetCpuid2(const Napi::CallbackInfo& info) {
  Bytes b = ArgBytes(info, 1, "entries");
  if (b.length % sizeof(kvm_cpuid_entry2) != 0)
    ThrowRange(info.Env(), "KVM_SET_CPUID2: entries must be a multiple of " + std::to_string(sizeof(kvm_cpuid_entry2)) + " bytes");
  size_t n = b.length / sizeof(kvm_cpuid_entry2);
  std::vector<uint8_t> mem(sizeof(CCpuid2) + b.length);
  auto* c = reinterpret_cast<CCpuid2*>(mem.data());
  c->nent = static_cast<uint32_t>(n);
  // Safe: mem was sized for the header plus exactly b.length bytes of entries.
  memcpy(mem.data() + sizeof(CCpuid2), b.data, b.length);
  if (Ioctl(ArgFd(info, 0), kSetCpuid2, c) < 0) ThrowIoctlError(info.Env(), "KVM_SET_CPUID2", errno);
  return info.Env().Undefined();
}

// KVM_SET_USER_MEMORY_REGION. Args: vmfd, slot, flags, guestPhysAddr, size,
// memory (ArrayBuffer or null when deleting), offset into memory.
Napi::Value SetUserMemoryRegion(const Napi::CallbackInfo& info) {
  kvm_userspace_memory_region r{};
  r.slot = ArgU32(info, 1, "slot");
  r.flags = ArgU32(info, 2, "flags");
  r.guest_phys_addr = ArgU64(info, 3, "guestPhysAddr");
  r.memory_size = ArgU64(info, 4, "size");
  if (r.memory_size != 0) {
    if (!info[5].IsArrayBuffer()) ThrowType(info.Env(), "KVM_SET_USER_MEMORY_REGION: memory must be an ArrayBuffer");
    auto ab = info[5].As<Napi::ArrayBuffer>();
    uint64_t offset = ArgU64(info, 6, "offset");
    // The guest gets read/write access to [data+offset, +size): never let that
    // range leave the buffer, or a guest could scribble over the Node heap.
    if (ab.Data() == nullptr || offset > ab.ByteLength() || r.memory_size > ab.ByteLength() - offset)
      ThrowRange(info.Env(), "KVM_SET_USER_MEMORY_REGION: offset+size exceed the memory buffer (or it is detached)");
    r.userspace_addr = reinterpret_cast<uint64_t>(ab.Data()) + offset;
  }
  if (Ioctl(ArgFd(info, 0), KVM_SET_USER_MEMORY_REGION, &r) < 0) ThrowIoctlError(info.Env(), "KVM_SET_USER_MEMORY_REGION", errno);
  return info.Env().Undefined();
}

// KVM_GET_DIRTY_LOG into a caller buffer (one bit per page, 64-bit aligned length).
Napi::Value GetDirtyLog(const Napi::CallbackInfo& info) {
  kvm_dirty_log d{};
  d.slot = ArgU32(info, 1, "slot");
  Bytes b = ArgBytes(info, 2, "bitmap");
  if (b.length % 8 != 0) ThrowRange(info.Env(), "KVM_GET_DIRTY_LOG: bitmap length must be a multiple of 8 bytes");
  // Safe: the TS caller sizes the bitmap to ceil(pages/64)*8 bytes for this slot,
  // which is exactly what the kernel writes.
  d.dirty_bitmap = b.data;
  if (Ioctl(ArgFd(info, 0), KVM_GET_DIRTY_LOG, &d) < 0) ThrowIoctlError(info.Env(), "KVM_GET_DIRTY_LOG", errno);
  return info.Env().Undefined();
}

Napi::Value SetIdentityMapAddr(const Napi::CallbackInfo& info) {
  uint64_t addr = ArgU64(info, 1, "address");
  if (Ioctl(ArgFd(info, 0), KVM_SET_IDENTITY_MAP_ADDR, &addr) < 0) ThrowIoctlError(info.Env(), "KVM_SET_IDENTITY_MAP_ADDR", errno);
  return info.Env().Undefined();
}

// KVM_ENABLE_CAP on a VM or vCPU fd. Args: fd, cap, flags, BigUint64Array(4) args.
Napi::Value EnableCap(const Napi::CallbackInfo& info) {
  kvm_enable_cap c{};
  c.cap = ArgU32(info, 1, "cap");
  c.flags = ArgU32(info, 2, "flags");
  if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
      info[3].As<Napi::TypedArray>().ElementLength() != 4)
    ThrowType(info.Env(), "KVM_ENABLE_CAP: args must be a BigUint64Array of length 4");
  auto a = info[3].As<Napi::TypedArrayOf<uint64_t>>();
  for (int i = 0; i < 4; i++) c.args[i] = a[i];
  if (Ioctl(ArgFd(info, 0), KVM_ENABLE_CAP, &c) < 0) ThrowIoctlError(info.Env(), "KVM_ENABLE_CAP", errno);
  return info.Env().Undefined();
}

Napi::Value Interrupt(const Napi::CallbackInfo& info) {
  kvm_interrupt irq{ArgU32(info, 1, "irq")};
  if (Ioctl(ArgFd(info, 0), KVM_INTERRUPT, &irq) < 0) ThrowIoctlError(info.Env(), "KVM_INTERRUPT", errno);
  return info.Env().Undefined();
}

// copyExtendedState(srcFd, dstFd): moves the state KVM_CAP_SYNC_REGS does not
// cover from one vCPU to another in one call: XCRs first (XCR0 decides which
// XSAVE components are valid), then the XSAVE area (x87/SSE/AVX), then the
// debug registers. Six ioctls; the structs live on this stack frame only.
Napi::Value CopyExtendedState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int src = ArgFd(info, 0), dst = ArgFd(info, 1);
  kvm_xcrs xcrs{};
  CXsave xsave{};
  kvm_debugregs dbg{};
  if (Ioctl(src, KVM_GET_XCRS, &xcrs) < 0) ThrowIoctlError(env, "KVM_GET_XCRS", errno);
  if (Ioctl(src, kGetXsave, &xsave) < 0) ThrowIoctlError(env, "KVM_GET_XSAVE", errno);
  if (Ioctl(src, KVM_GET_DEBUGREGS, &dbg) < 0) ThrowIoctlError(env, "KVM_GET_DEBUGREGS", errno);
  if (Ioctl(dst, KVM_SET_XCRS, &xcrs) < 0) ThrowIoctlError(env, "KVM_SET_XCRS", errno);
  if (Ioctl(dst, kSetXsave, &xsave) < 0) ThrowIoctlError(env, "KVM_SET_XSAVE", errno);
  if (Ioctl(dst, KVM_SET_DEBUGREGS, &dbg) < 0) ThrowIoctlError(env, "KVM_SET_DEBUGREGS", errno);
  return env.Undefined();
}

// Sizes and offsets of the kernel structs as this compiler sees linux/kvm.h;
// the TypeScript codecs are checked against them in the tests.
Napi::Value Layout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#define L(name, value) o.Set(name, Napi::Number::New(env, static_cast<double>(value)))
  L("sizeof_kvm_regs", sizeof(kvm_regs));
  L("sizeof_kvm_sregs", sizeof(kvm_sregs));
  L("sizeof_kvm_segment", sizeof(kvm_segment));
  L("sizeof_kvm_fpu", sizeof(kvm_fpu));
  L("sizeof_kvm_vcpu_events", sizeof(kvm_vcpu_events));
  L("sizeof_kvm_translation", sizeof(kvm_translation));
  L("sizeof_kvm_guest_debug", sizeof(kvm_guest_debug));
  L("sizeof_kvm_cpuid_entry2", sizeof(kvm_cpuid_entry2));
  L("sizeof_kvm_xsave", sizeof(CXsave));
  L("sizeof_kvm_xcrs", sizeof(kvm_xcrs));
  L("sizeof_kvm_debugregs", sizeof(kvm_debugregs));
  L("sizeof_kvm_run", sizeof(kvm_run));
  L("run_immediate_exit", offsetof(kvm_run, immediate_exit));
  L("run_exit_reason", offsetof(kvm_run, exit_reason));
  L("run_if_flag", offsetof(kvm_run, if_flag));
  L("run_cr8", offsetof(kvm_run, cr8));
  L("run_apic_base", offsetof(kvm_run, apic_base));
  L("run_io_direction", offsetof(kvm_run, io.direction));
  L("run_io_size", offsetof(kvm_run, io.size));
  L("run_io_port", offsetof(kvm_run, io.port));
  L("run_io_count", offsetof(kvm_run, io.count));
  L("run_io_data_offset", offsetof(kvm_run, io.data_offset));
  L("run_mmio_phys_addr", offsetof(kvm_run, mmio.phys_addr));
  L("run_mmio_data", offsetof(kvm_run, mmio.data));
  L("run_mmio_len", offsetof(kvm_run, mmio.len));
  L("run_mmio_is_write", offsetof(kvm_run, mmio.is_write));
  L("run_fail_entry_reason", offsetof(kvm_run, fail_entry.hardware_entry_failure_reason));
  L("run_fail_entry_cpu", offsetof(kvm_run, fail_entry.cpu));
  L("run_internal_suberror", offsetof(kvm_run, internal.suberror));
  L("run_internal_ndata", offsetof(kvm_run, internal.ndata));
  L("run_internal_data", offsetof(kvm_run, internal.data));
  L("run_emulation_failure_flags", offsetof(kvm_run, emulation_failure.flags));
  L("run_emulation_failure_insn_size", offsetof(kvm_run, emulation_failure.insn_size));
  L("run_emulation_failure_insn_bytes", offsetof(kvm_run, emulation_failure.insn_bytes));
  L("run_debug_exception", offsetof(kvm_run, debug.arch.exception));
  L("run_debug_pc", offsetof(kvm_run, debug.arch.pc));
  L("run_debug_dr6", offsetof(kvm_run, debug.arch.dr6));
  L("run_debug_dr7", offsetof(kvm_run, debug.arch.dr7));
  L("run_system_event_type", offsetof(kvm_run, system_event.type));
  L("run_system_event_ndata", offsetof(kvm_run, system_event.ndata));
  L("run_system_event_data", offsetof(kvm_run, system_event.data));
  L("run_hypercall_nr", offsetof(kvm_run, hypercall.nr));
  L("run_hypercall_args", offsetof(kvm_run, hypercall.args));
  L("run_hypercall_ret", offsetof(kvm_run, hypercall.ret));
  L("run_hw_exit_reason", offsetof(kvm_run, hw.hardware_exit_reason));
  L("run_kvm_valid_regs", offsetof(kvm_run, kvm_valid_regs));
  L("run_kvm_dirty_regs", offsetof(kvm_run, kvm_dirty_regs));
  L("run_sync_regs", offsetof(kvm_run, s.regs.regs));
  L("run_sync_sregs", offsetof(kvm_run, s.regs.sregs));
  L("run_sync_events", offsetof(kvm_run, s.regs.events));
  L("sregs_gdt", offsetof(kvm_sregs, gdt));
  L("sregs_idt", offsetof(kvm_sregs, idt));
  L("sregs_cr0", offsetof(kvm_sregs, cr0));
  L("sregs_efer", offsetof(kvm_sregs, efer));
  L("sregs_apic_base", offsetof(kvm_sregs, apic_base));
  L("sregs_interrupt_bitmap", offsetof(kvm_sregs, interrupt_bitmap));
  L("segment_selector", offsetof(kvm_segment, selector));
  L("segment_type", offsetof(kvm_segment, type));
  L("segment_unusable", offsetof(kvm_segment, unusable));
  L("fpu_fcw", offsetof(kvm_fpu, fcw));
  L("fpu_last_ip", offsetof(kvm_fpu, last_ip));
  L("fpu_xmm", offsetof(kvm_fpu, xmm));
  L("fpu_mxcsr", offsetof(kvm_fpu, mxcsr));
  L("events_interrupt", offsetof(kvm_vcpu_events, interrupt));
  L("events_nmi", offsetof(kvm_vcpu_events, nmi));
  L("events_sipi_vector", offsetof(kvm_vcpu_events, sipi_vector));
  L("events_flags", offsetof(kvm_vcpu_events, flags));
  L("events_smi", offsetof(kvm_vcpu_events, smi));
  L("events_triple_fault", offsetof(kvm_vcpu_events, triple_fault));
  L("events_exception_has_payload", offsetof(kvm_vcpu_events, exception_has_payload));
  L("events_exception_payload", offsetof(kvm_vcpu_events, exception_payload));
  L("translation_valid", offsetof(kvm_translation, valid));
  L("guest_debug_arch", offsetof(kvm_guest_debug, arch));
#undef L
  return o;
}

// Every request number this addon issues, by its linux/kvm.h name.
Napi::Value Requests(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#define R(name, value) o.Set(name, Napi::Number::New(env, static_cast<double>(value)))
  R("KVM_GET_API_VERSION", KVM_GET_API_VERSION);
  R("KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION);
  R("KVM_GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE);
  R("KVM_CREATE_VM", KVM_CREATE_VM);
  R("KVM_GET_SUPPORTED_CPUID", kGetSupportedCpuid);
  R("KVM_GET_MSR_INDEX_LIST", kGetMsrIndexList);
  R("KVM_GET_MSR_FEATURE_INDEX_LIST", kGetMsrFeatureIndexList);
  R("KVM_GET_MSRS", kGetMsrs);
  R("KVM_SET_MSRS", kSetMsrs);
  R("KVM_SET_USER_MEMORY_REGION", KVM_SET_USER_MEMORY_REGION);
  R("KVM_GET_DIRTY_LOG", KVM_GET_DIRTY_LOG);
  R("KVM_SET_TSS_ADDR", KVM_SET_TSS_ADDR);
  R("KVM_SET_IDENTITY_MAP_ADDR", KVM_SET_IDENTITY_MAP_ADDR);
  R("KVM_CREATE_VCPU", KVM_CREATE_VCPU);
  R("KVM_ENABLE_CAP", KVM_ENABLE_CAP);
  R("KVM_RUN", KVM_RUN);
  R("KVM_GET_REGS", KVM_GET_REGS);
  R("KVM_SET_REGS", KVM_SET_REGS);
  R("KVM_GET_SREGS", KVM_GET_SREGS);
  R("KVM_SET_SREGS", KVM_SET_SREGS);
  R("KVM_GET_FPU", KVM_GET_FPU);
  R("KVM_SET_FPU", KVM_SET_FPU);
  R("KVM_GET_VCPU_EVENTS", KVM_GET_VCPU_EVENTS);
  R("KVM_SET_VCPU_EVENTS", KVM_SET_VCPU_EVENTS);
  R("KVM_TRANSLATE", KVM_TRANSLATE);
  R("KVM_SET_GUEST_DEBUG", KVM_SET_GUEST_DEBUG);
  R("KVM_SET_CPUID2", kSetCpuid2);
  R("KVM_INTERRUPT", KVM_INTERRUPT);
  R("KVM_NMI", KVM_NMI);
  R("KVM_GET_XSAVE", kGetXsave);
  R("KVM_SET_XSAVE", kSetXsave);
  R("KVM_GET_XCRS", KVM_GET_XCRS);
  R("KVM_SET_XCRS", KVM_SET_XCRS);
  R("KVM_GET_DEBUGREGS", KVM_GET_DEBUGREGS);
  R("KVM_SET_DEBUGREGS", KVM_SET_DEBUGREGS);
#undef R
  return o;
}

#define VALUE_IOCTL(js, REQ) \
  exports.Set(js, Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value { \
    return ValueIoctl(info, REQ, #REQ, 0); }))
#define VALUE_IOCTL_ARG(js, REQ, argname) \
  exports.Set(js, Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value { \
    return ValueIoctl(info, REQ, #REQ, static_cast<unsigned long>(ArgU64(info, 1, argname))); }))
#define STRUCT_IOCTL(js, REQ, T) \
  exports.Set(js, Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value { \
    return StructIoctl(info, REQ, #REQ, sizeof(T)); }))

}  // namespace

void InitIoctls(Napi::Env env, Napi::Object exports) {
  exports.Set("openKvm", Napi::Function::New(env, OpenKvm));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("dup", Napi::Function::New(env, Dup));
  exports.Set("layout", Napi::Function::New(env, Layout));
  exports.Set("requests", Napi::Function::New(env, Requests));
  // system fd
  VALUE_IOCTL("getApiVersion", KVM_GET_API_VERSION);
  VALUE_IOCTL_ARG("checkExtension", KVM_CHECK_EXTENSION, "cap");  // also on a VM fd
  VALUE_IOCTL("getVcpuMmapSize", KVM_GET_VCPU_MMAP_SIZE);
  VALUE_IOCTL_ARG("createVm", KVM_CREATE_VM, "type");
  exports.Set("getSupportedCpuid", Napi::Function::New(env, GetSupportedCpuid));
  exports.Set("getMsrIndexList", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return MsrList(info, kGetMsrIndexList, "KVM_GET_MSR_INDEX_LIST"); }));
  exports.Set("getMsrFeatureIndexList", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return MsrList(info, kGetMsrFeatureIndexList, "KVM_GET_MSR_FEATURE_INDEX_LIST"); }));
  exports.Set("getMsrs", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return Msrs(info, false); }));
  exports.Set("setMsrs", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return Msrs(info, true); }));
  // VM fd
  exports.Set("setUserMemoryRegion", Napi::Function::New(env, SetUserMemoryRegion));
  exports.Set("getDirtyLog", Napi::Function::New(env, GetDirtyLog));
  VALUE_IOCTL_ARG("setTssAddr", KVM_SET_TSS_ADDR, "address");
  exports.Set("setIdentityMapAddr", Napi::Function::New(env, SetIdentityMapAddr));
  VALUE_IOCTL_ARG("createVcpu", KVM_CREATE_VCPU, "id");
  exports.Set("enableCap", Napi::Function::New(env, EnableCap));  // also on a vCPU fd
  // vCPU fd
  STRUCT_IOCTL("getRegs", KVM_GET_REGS, kvm_regs);
  STRUCT_IOCTL("setRegs", KVM_SET_REGS, kvm_regs);
  STRUCT_IOCTL("getSregs", KVM_GET_SREGS, kvm_sregs);
  STRUCT_IOCTL("setSregs", KVM_SET_SREGS, kvm_sregs);
  STRUCT_IOCTL("getFpu", KVM_GET_FPU, kvm_fpu);
  STRUCT_IOCTL("setFpu", KVM_SET_FPU, kvm_fpu);
  STRUCT_IOCTL("getVcpuEvents", KVM_GET_VCPU_EVENTS, kvm_vcpu_events);
  STRUCT_IOCTL("setVcpuEvents", KVM_SET_VCPU_EVENTS, kvm_vcpu_events);
  STRUCT_IOCTL("translate", KVM_TRANSLATE, kvm_translation);
  STRUCT_IOCTL("setGuestDebug", KVM_SET_GUEST_DEBUG, kvm_guest_debug);
  exports.Set("setCpuid2", Napi::Function::New(env, SetCpuid2));
  exports.Set("interrupt", Napi::Function::New(env, Interrupt));
  VALUE_IOCTL("nmi", KVM_NMI);
  STRUCT_IOCTL("getXsave", kGetXsave, CXsave);
  STRUCT_IOCTL("setXsave", kSetXsave, CXsave);
  STRUCT_IOCTL("getXcrs", KVM_GET_XCRS, kvm_xcrs);
  STRUCT_IOCTL("setXcrs", KVM_SET_XCRS, kvm_xcrs);
  STRUCT_IOCTL("getDebugRegs", KVM_GET_DEBUGREGS, kvm_debugregs);
  STRUCT_IOCTL("setDebugRegs", KVM_SET_DEBUGREGS, kvm_debugregs);
  exports.Set("copyExtendedState", Napi::Function::New(env, CopyExtendedState));
}

}  // namespace elisa
