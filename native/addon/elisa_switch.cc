// The emulated backend's hot path in C++ (src/elisa/backends/emulated): runs one guest
// vCPU through its contexts (one KVM VM each) on the calling thread, carrying out the
// VMFUNCs of the rewritten sites (`nop; out 0xd4, al`) that SUCCEED, and returns to
// JavaScript for everything else: any other exit of any context, a site VMFUNC that
// must fail or that needs JS work (the APT slot must move), and the deadline. Failure
// semantics (#UD injection), foreign VMFUNCs and reports stay in TypeScript, which
// re-evaluates the returned trap with the same rules; this loop only saves the
// JS round trip (and a timer arm/disarm) per switch.
//
// Interrupting KVM_RUN at the deadline: a one-shot POSIX timer delivers kSwitchSignal
// to this thread; the handler sets immediate_exit of the run in progress (so a signal
// just before the ioctl is not lost: KVM checks immediate_exit on entry).
#include "common.h"
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <linux/kvm.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

namespace elisa {
namespace {

constexpr int kMaxContexts = 4;
constexpr uint16_t kTrapPort = 0xd4;

int kSwitchSignal = 0;
thread_local kvm_run* volatile tlsRun = nullptr;
thread_local volatile sig_atomic_t tlsFired = 0;
thread_local pid_t tlsTid = 0;  // cached gettid(): one syscall less per run() call

pid_t ThisTid() {
  if (tlsTid == 0) tlsTid = static_cast<pid_t>(syscall(SYS_gettid));
  return tlsTid;
}

void OnSwitchSignal(int, siginfo_t*, void*) {
  // Async-signal-safe: plain stores to this thread's state and its run in progress.
  tlsFired = 1;
  if (tlsRun) tlsRun->immediate_exit = 1;
}

double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Return codes (low byte: the context index whose kvm_run holds the exit).
enum Status : int { kExit = 0, kTrap = 1, kTimeout = 2 };

class SwitchLoop : public Napi::ObjectWrap<SwitchLoop> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SwitchLoop", {
      InstanceMethod<&SwitchLoop::Run>("run"),
      InstanceMethod<&SwitchLoop::Close>("close"),
    });
  }

  // new SwitchLoop(fds: Int32Array, runs: ArrayBuffer[], list: Uint8Array(4096),
  //                eptps: BigUint64Array, sites: BigUint64Array[] (per context),
  //                aptCr3: BigUint64Array(1), counters: Uint32Array(2 + contexts))
  explicit SwitchLoop(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SwitchLoop>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 7 || !info[0].IsTypedArray() || !info[1].IsArray() || !info[4].IsArray()) {
      ThrowType(env, "SwitchLoop(fds, runs, list, eptps, sites, aptCr3, counters): bad arguments");
    }
    auto fds = info[0].As<Napi::Int32Array>();
    auto runs = info[1].As<Napi::Array>();
    auto sites = info[4].As<Napi::Array>();
    n_ = static_cast<int>(fds.ElementLength());
    if (n_ < 1 || n_ > kMaxContexts || runs.Length() != static_cast<uint32_t>(n_) || sites.Length() != static_cast<uint32_t>(n_)) {
      ThrowRange(env, "SwitchLoop: 1..4 contexts, with one kvm_run and one site list each");
    }
    for (int i = 0; i < n_; i++) {
      fd_[i] = fds[i];
      Napi::Value r = runs.Get(i);
      if (!r.IsArrayBuffer() || r.As<Napi::ArrayBuffer>().ByteLength() < sizeof(kvm_run)) ThrowType(env, "SwitchLoop: runs[i] must be a kvm_run ArrayBuffer");
      run_[i] = static_cast<kvm_run*>(r.As<Napi::ArrayBuffer>().Data());
      keep_.push_back(Napi::Persistent(r.As<Napi::Object>()));
      Napi::Value s = sites.Get(i);
      if (!s.IsTypedArray()) ThrowType(env, "SwitchLoop: sites[i] must be a BigUint64Array");
      auto sa = s.As<Napi::BigUint64Array>();
      for (size_t k = 0; k < sa.ElementLength(); k++) sites_[i].push_back(sa[k]);
    }
    Bytes list = ArgBytes(info, 2, "list");
    if (list.length < 4096) ThrowRange(env, "SwitchLoop: the EPTP list view must cover one page");
    list_ = reinterpret_cast<volatile uint64_t*>(list.data);
    Bytes eptps = ArgBytes(info, 3, "eptps");
    Bytes apt = ArgBytes(info, 5, "aptCr3");
    Bytes counters = ArgBytes(info, 6, "counters");
    if (eptps.length < 8u * n_ || apt.length < 8 || counters.length < 4u * (2 + n_)) ThrowRange(env, "SwitchLoop: eptps/aptCr3/counters too small");
    eptp_ = reinterpret_cast<uint64_t*>(eptps.data);
    aptCr3_ = reinterpret_cast<uint64_t*>(apt.data);
    counters_ = reinterpret_cast<uint32_t*>(counters.data);
    for (int i = 2; i < 7; i++) if (i != 4) keep_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
    // Safe for as long as this object is open: the kvm_run mappings stay mapped while
    // their vCPUs live, the typed arrays are kept alive by the references above, and the
    // attachment closes this loop before it disposes any vCPU or the arena.
  }

 private:
  // run(start: number, timeoutMs: number) -> (status << 8) | context
  Napi::Value Run(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) ThrowType(env, "SwitchLoop is closed");
    int cur = static_cast<int>(ArgU32(info, 0, "start"));
    double timeoutMs = info[1].As<Napi::Number>().DoubleValue();
    if (cur >= n_) ThrowRange(env, "SwitchLoop.run: no such context");
    double deadline = NowMs() + timeoutMs;
    if (!timerMade_ || timerTid_ != ThisTid()) MakeTimer(env);
    itimerspec its{};
    long long ns = static_cast<long long>(timeoutMs * 1e6);
    if (ns < 1) ns = 1;
    its.it_value.tv_sec = ns / 1000000000LL;
    its.it_value.tv_nsec = ns % 1000000000LL;
    tlsFired = 0;
    timer_settime(timer_, 0, &its, nullptr);
    int status = kExit;
    for (;;) {
      kvm_run* run = run_[cur];
      tlsRun = run;
      int r = ioctl(fd_[cur], KVM_RUN, 0);
      int e = errno;
      tlsRun = nullptr;
      if (r < 0) {
        run->immediate_exit = 0;
        if (e == EINTR || e == EAGAIN) {
          if (tlsFired || NowMs() >= deadline) { run->exit_reason = KVM_EXIT_INTR; status = kTimeout; break; }
          continue;
        }
        Disarm();
        ThrowIoctlError(env, "KVM_RUN", e);
      }
      if (run->exit_reason != KVM_EXIT_IO || run->io.port != kTrapPort || run->io.direction != KVM_EXIT_IO_OUT) break;
      uint64_t rip = run->s.regs.regs.rip;
      uint64_t site = 0;
      bool found = false;
      for (uint64_t s : sites_[cur]) if (s + 1 == rip || s + 3 == rip) { site = s; found = true; break; }  // at or after the OUT
      if (!found) break;  // ordinary port I/O on the trap port: JS decides
      uint32_t eax = static_cast<uint32_t>(run->s.regs.regs.rax), ecx = static_cast<uint32_t>(run->s.regs.regs.rcx);
      int target = -1;
      if (eax == 0 && ecx < 512) {
        uint64_t eptp = list_[ecx];  // live: the guest's own stores are visible here
        for (int i = 0; i < n_; i++) if (eptp_[i] == eptp && eptp != 0) { target = i; break; }
      }
      // A failing VMFUNC, or a CR3 the APT slot does not sit at: TypeScript takes over.
      if (target < 0 || (cur == 0 && (run->s.regs.sregs.cr3 & ~0xfffULL) != *aptCr3_)) { status = kTrap; break; }
      kvm_run* to = run_[target];
      if (target != cur) {
        uint64_t dirty = KVM_SYNC_X86_REGS;
        to->s.regs.regs = run->s.regs.regs;
        if (std::memcmp(&to->s.regs.sregs, &run->s.regs.sregs, sizeof(kvm_sregs)) != 0) {
          to->s.regs.sregs = run->s.regs.sregs; dirty |= KVM_SYNC_X86_SREGS; counters_[0]++;
        }
        if (std::memcmp(&to->s.regs.events, &run->s.regs.events, sizeof(kvm_vcpu_events)) != 0) {
          to->s.regs.events = run->s.regs.events; dirty |= KVM_SYNC_X86_EVENTS; counters_[1]++;
        }
        to->kvm_dirty_regs |= dirty;
      } else {
        to->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
      }
      to->s.regs.regs.rip = site + 3;
      counters_[2 + target]++;
      cur = target;
    }
    Disarm();
    return Napi::Number::New(env, (status << 8) | cur);
  }

  void MakeTimer(Napi::Env env) {
    if (timerMade_) timer_delete(timer_);
    sigevent sev{};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = kSwitchSignal;
    sev._sigev_un._tid = ThisTid();
    if (timer_create(CLOCK_MONOTONIC, &sev, &timer_) != 0) ThrowSyscallError(env, "timer_create", errno);
    timerMade_ = true;
    timerTid_ = ThisTid();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, kSwitchSignal);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  }

  void Disarm() {
    itimerspec its{};
    if (timerMade_) timer_settime(timer_, 0, &its, nullptr);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (!closed_) {
      closed_ = true;
      Disarm();
      if (timerMade_) timer_delete(timer_);
      timerMade_ = false;
      keep_.clear();
    }
    return info.Env().Undefined();
  }

  int n_ = 0;
  int fd_[kMaxContexts]{};
  kvm_run* run_[kMaxContexts]{};
  std::vector<uint64_t> sites_[kMaxContexts];
  volatile uint64_t* list_ = nullptr;
  uint64_t* eptp_ = nullptr;
  uint64_t* aptCr3_ = nullptr;
  uint32_t* counters_ = nullptr;
  std::vector<Napi::ObjectReference> keep_;
  timer_t timer_{};
  bool timerMade_ = false;
  pid_t timerTid_ = 0;
  bool closed_ = false;
};

}  // namespace

void InitSwitchLoop(Napi::Env env, Napi::Object exports) {
  kSwitchSignal = SIGRTMIN + 6;
  struct sigaction sa{};
  sa.sa_sigaction = OnSwitchSignal;
  sa.sa_flags = SA_SIGINFO;  // no SA_RESTART: KVM_RUN must return EINTR
  sigemptyset(&sa.sa_mask);
  sigaction(kSwitchSignal, &sa, nullptr);
  exports.Set("SwitchLoop", SwitchLoop::Define(env));
}

}  // namespace elisa
