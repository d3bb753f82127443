// Runs a vCPU: KVM_RUN synchronously on the calling thread, or asynchronously on
// a dedicated native thread per vCPU, both with an optional timeout, plus kick()
// and the KVM_CAP_SYNC_REGS state copy between two vCPUs.
//
// Interrupting KVM_RUN: a realtime signal (kKickSignal) with a handler installed
// WITHOUT SA_RESTART makes KVM_RUN return EINTR. The handler also sets
// kvm_run.immediate_exit of the run in progress on its thread, which closes the
// race of a signal arriving just before the ioctl is entered (KVM checks
// immediate_exit on entry). Timeouts are POSIX timers delivering that signal to
// the running thread (SIGEV_THREAD_ID); kick() sends it with pthread_kill.
#include "common.h"
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <ctime>
#include <linux/kvm.h>
#include <mutex>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace elisa {
namespace {

int kKickSignal = 0;

// Why the last KVM_RUN returned EINTR (exit reason INTR). Values shared with TS.
enum InterruptCause : int32_t { kNone = 0, kTimeout = 1, kKick = 2, kSignal = 3 };

// Per-thread state the signal handler touches. Every thread that runs a vCPU
// writes `run` before arming anything, so the TLS block exists before a signal
// can reach the handler (no lazy TLS allocation inside the handler).
struct ThreadRunState {
  kvm_run* volatile run;
  volatile sig_atomic_t timerFired;
};
thread_local ThreadRunState tls{nullptr, 0};

void OnKickSignal(int, siginfo_t* si, void*) {
  // Async-signal-safe: only plain stores to memory owned by this thread's run.
  if (tls.run) tls.run->immediate_exit = 1;
  if (si->si_code == SI_TIMER) tls.timerFired = 1;
}

void InstallSignalHandler() {
  kKickSignal = SIGRTMIN + 4;
  struct sigaction sa{};
  sa.sa_sigaction = OnKickSignal;
  sa.sa_flags = SA_SIGINFO;  // deliberately no SA_RESTART: KVM_RUN must see EINTR
  sigemptyset(&sa.sa_mask);
  sigaction(kKickSignal, &sa, nullptr);
}

// A thread that runs vCPUs must be able to receive the kick signal.
void UnblockKickSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kKickSignal);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

pid_t GetTid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// A one-shot timer that delivers kKickSignal to one thread.
struct ThreadTimer {
  timer_t id{};
  pid_t tid = 0;
  bool created = false;

  void EnsureFor(pid_t thread) {
    if (created && tid == thread) return;
    Destroy();
    sigevent sev{};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = kKickSignal;
    sev._sigev_un._tid = thread;
    if (timer_create(CLOCK_MONOTONIC, &sev, &id) == 0) { created = true; tid = thread; }
  }
  bool Arm(double timeoutMs) {
    if (!created) return false;
    itimerspec its{};
    long long ns = static_cast<long long>(timeoutMs * 1e6);
    if (ns < 1) ns = 1;  // a zero it_value would disarm: expire "now" instead
    its.it_value.tv_sec = ns / 1000000000LL;
    its.it_value.tv_nsec = ns % 1000000000LL;
    return timer_settime(id, 0, &its, nullptr) == 0;
  }
  void Disarm() {
    itimerspec its{};
    timer_settime(id, 0, &its, nullptr);
  }
  void Destroy() {
    if (created) timer_delete(id);
    created = false;
  }
};

struct RunResult {
  int err;         // 0, or errno of a failed KVM_RUN other than EINTR
  uint32_t exitReason;
  int32_t cause;   // InterruptCause when exitReason == KVM_EXIT_INTR
};

class VcpuRunner : public Napi::ObjectWrap<VcpuRunner> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "VcpuRunner", {
      InstanceMethod<&VcpuRunner::RunSync>("runSync"),
      InstanceMethod<&VcpuRunner::RunAsync>("runAsync"),
      InstanceMethod<&VcpuRunner::Kick>("kick"),
      InstanceMethod<&VcpuRunner::LastCause>("lastInterruptCause"),
      InstanceMethod<&VcpuRunner::IsRunning>("isRunning"),
      InstanceMethod<&VcpuRunner::Close>("close"),
      InstanceMethod<&VcpuRunner::RunLoop>("runLoop"),
    });
  }

  // new VcpuRunner(vcpuFd, runBuffer): runBuffer is the kvm_run mapping made by
  // mmap(vcpuFd, KVM_GET_VCPU_MMAP_SIZE); the runner pins it until close().
  explicit VcpuRunner(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VcpuRunner>(info) {
    Napi::Env env = info.Env();
    fd_ = ArgFd(info, 0);
    if (!info[1].IsArrayBuffer()) ThrowType(env, "VcpuRunner: kvm_run ArrayBuffer expected");
    auto ab = info[1].As<Napi::ArrayBuffer>();
    if (ab.ByteLength() < sizeof(kvm_run)) ThrowRange(env, "VcpuRunner: kvm_run mapping too small");
    if (!PinMapping(ab.Data())) ThrowType(env, "VcpuRunner: the kvm_run buffer must come from mmap()");
    run_ = static_cast<kvm_run*>(ab.Data());
    runRef_ = Napi::Persistent(ab);
    tsfn_ = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                          "elisa-vcpu", 0, 1);
    tsfn_.Unref(env);  // only a run in flight keeps the event loop alive
  }

  ~VcpuRunner() override { StopWorker(); syncTimer_.Destroy(); }

  // The pointer the signal handler and copySyncRegs use; valid until close().
  kvm_run* Run() const { return run_; }
  // From JS's point of view a runAsync is in flight until its promise settles
  // (pending_), even after the worker finished KVM_RUN: the result still
  // describes kvm_run, so nothing may run or touch it before JS has seen it.
  bool Busy() { return pending_; }
  void CheckOpen(Napi::Env env) const {
    if (closed_) ThrowType(env, "vCPU runner is closed");
  }

 private:
  // One KVM_RUN on the calling thread. `timer` is armed for timeoutMs when >= 0.
  // Touching run_ is safe: the mapping is pinned (munmap from JS refused) and
  // only close() unmaps it, after joining the worker; callers check closed_.
  RunResult RunOnce(ThreadTimer* timer, double timeoutMs) {
    tls.run = run_;
    tls.timerFired = 0;
    bool armed = false;
    if (timeoutMs >= 0) {
      timer->EnsureFor(GetTid());
      armed = timer->Arm(timeoutMs);
    }
    int r = ioctl(fd_, KVM_RUN, 0);
    int e = errno;
    if (armed) timer->Disarm();  // a signal still pending is delivered on return, while tls.run is set
    tls.run = nullptr;
    RunResult res{0, run_->exit_reason, kNone};
    if (r < 0 && e == EINTR) {
      // KVM leaves exit_reason untouched when it bails out on immediate_exit;
      // report INTR in every EINTR case so callers see one consistent exit.
      run_->exit_reason = KVM_EXIT_INTR;
      res.exitReason = KVM_EXIT_INTR;
      res.cause = tls.timerFired ? kTimeout : kSignal;
    } else if (r < 0) {
      res.err = e;
    }
    return res;
  }

  // runSync(timeoutMs: number, -1 for none) -> exit reason number.
  Napi::Value RunSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    double timeoutMs = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    if (pending_) ThrowType(env, "vCPU is already running (a runAsync() is in flight)");
    RunResult res = RunOnce(&syncTimer_, timeoutMs);
    run_->immediate_exit = 0;
    if (res.err) ThrowIoctlError(env, "KVM_RUN", res.err);
    lastCause_ = res.cause;
    return Napi::Number::New(env, res.exitReason);
  }

  // runAsync(timeoutMs) -> Promise<exit reason number>, run on this vCPU's thread.
  Napi::Value RunAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    double timeoutMs = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    if (pending_) ThrowType(env, "vCPU is already running (a runAsync() is in flight)");
    std::unique_lock<std::mutex> g(mu_);
    if (!worker_.joinable()) worker_ = std::thread([this] { WorkerLoop(); });
    deferred_ = std::make_unique<Napi::Promise::Deferred>(env);
    inFlight_ = true;
    jobPending_ = true;
    jobTimeoutMs_ = timeoutMs;
    kickRequested_ = false;
    g.unlock();
    cv_.notify_all();
    pending_ = true;
    Ref();  // keep this object alive until the result is delivered
    tsfn_.Ref(env);
    return deferred_->Promise();
  }

  void WorkerLoop() {
    ThreadTimer timer;
    tls.run = nullptr;  // touch the TLS block before any signal can arrive
    UnblockKickSignal();
    std::unique_lock<std::mutex> g(mu_);
    for (;;) {
      cv_.wait(g, [this] { return jobPending_ || stopping_; });
      if (!jobPending_ && stopping_) break;
      jobPending_ = false;
      workerThread_ = pthread_self();
      workerInRun_ = true;
      double timeoutMs = jobTimeoutMs_;
      g.unlock();
      RunResult res = RunOnce(&timer, timeoutMs);
      g.lock();
      workerInRun_ = false;
      // Cleared under the lock, so a kick() either lands before (and is reported)
      // or sees the run finished and does nothing: no stale immediate_exit.
      run_->immediate_exit = 0;
      if (res.exitReason == KVM_EXIT_INTR && kickRequested_) res.cause = kKick;
      kickRequested_ = false;
      inFlight_ = false;
      auto* boxed = new RunResult(res);
      tsfn_.NonBlockingCall(boxed, [this](Napi::Env env, Napi::Function, RunResult* r) {
        std::unique_ptr<RunResult> owned(r);
        auto d = std::move(deferred_);
        lastCause_ = r->cause;
        pending_ = false;
        tsfn_.Unref(env);
        Unref();
        if (!d) return;
        if (r->err) d->Reject(MakeIoctlError(env, "KVM_RUN", r->err));
        else d->Resolve(Napi::Number::New(env, r->exitReason));
      });
    }
    timer.Destroy();
  }

  // Interrupts a run in flight (sync callers cannot be kicked: JS is blocked).
  // Returns true if a run was in flight.
  bool KickLocked() {
    if (!inFlight_) return false;
    kickRequested_ = true;
    // Safe: run_ stays mapped until close(), which joins the worker first.
    run_->immediate_exit = 1;
    if (workerInRun_) pthread_kill(workerThread_, kKickSignal);
    return true;
  }

  // runLoop(n, expectedExitReason): n KVM_RUNs back to back in C++, stopping at
  // the first other exit. For bench/exit.ts: the cost of KVM_RUN itself inside
  // this process, to separate it from the cost of crossing into JS.
  // Returns how many runs ended with the expected reason.
  Napi::Value RunLoop(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env);
    if (pending_) ThrowType(env, "vCPU is already running (a runAsync() is in flight)");
    uint32_t n = ArgU32(info, 0, "n");
    uint32_t expected = ArgU32(info, 1, "expectedExitReason");
    uint32_t i = 0;
    for (; i < n; i++) {
      if (ioctl(fd_, KVM_RUN, 0) < 0) ThrowIoctlError(env, "KVM_RUN", errno);
      if (run_->exit_reason != expected) break;
    }
    return Napi::Number::New(env, i);
  }

  Napi::Value Kick(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env());
    std::lock_guard<std::mutex> g(mu_);
    return Napi::Boolean::New(info.Env(), KickLocked());
  }

  Napi::Value LastCause(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), lastCause_); }

  Napi::Value IsRunning(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), Busy()); }

  void StopWorker() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stopping_ = true;
      KickLocked();
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  // close(): interrupts and joins a run in flight (its promise still settles, with
  // exit INTR / cause kick), stops the thread, and unmaps kvm_run. Idempotent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) return env.Undefined();
    StopWorker();
    closed_ = true;
    syncTimer_.Destroy();
    tsfn_.Release();
    Napi::ArrayBuffer ab = runRef_.Value();
    UnpinMapping(run_);
    run_ = nullptr;
    UnmapArrayBuffer(env, ab, true);
    runRef_.Reset();
    return env.Undefined();
  }

  int fd_ = -1;
  kvm_run* run_ = nullptr;
  Napi::Reference<Napi::ArrayBuffer> runRef_;
  Napi::ThreadSafeFunction tsfn_;
  std::unique_ptr<Napi::Promise::Deferred> deferred_;  // JS thread only
  ThreadTimer syncTimer_;                               // JS thread only
  int32_t lastCause_ = kNone;                           // JS thread only
  bool closed_ = false;                                 // JS thread only
  bool pending_ = false;                                // JS thread only: a runAsync promise is unsettled

  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::thread worker_;
  pthread_t workerThread_{};
  bool workerInRun_ = false;
  bool inFlight_ = false;
  bool jobPending_ = false;
  bool stopping_ = false;
  bool kickRequested_ = false;
  double jobTimeoutMs_ = -1;
};

// copySyncRegs(src, dst): copies the KVM_CAP_SYNC_REGS areas that src's last exit
// made valid (kvm_valid_regs) into dst's kvm_run and marks them dirty there, so
// dst's next KVM_RUN loads them without any ioctl. Returns the mask copied.
Napi::Value CopySyncRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject() || !info[1].IsObject()) ThrowType(env, "copySyncRegs(src, dst): two VcpuRunners expected");
  VcpuRunner* src = VcpuRunner::Unwrap(info[0].As<Napi::Object>());
  VcpuRunner* dst = VcpuRunner::Unwrap(info[1].As<Napi::Object>());
  src->CheckOpen(env);
  dst->CheckOpen(env);
  if (src->Busy() || dst->Busy()) ThrowType(env, "copySyncRegs: a vCPU is running; its kvm_run belongs to KVM until it exits");
  // Safe: both mappings are pinned and open, and neither vCPU is inside KVM_RUN,
  // so nothing else writes these bytes concurrently.
  kvm_run* s = src->Run();
  kvm_run* d = dst->Run();
  uint64_t mask = s->kvm_valid_regs & KVM_SYNC_X86_VALID_FIELDS;
  if (mask & KVM_SYNC_X86_REGS) d->s.regs.regs = s->s.regs.regs;
  if (mask & KVM_SYNC_X86_SREGS) d->s.regs.sregs = s->s.regs.sregs;
  if (mask & KVM_SYNC_X86_EVENTS) d->s.regs.events = s->s.regs.events;
  d->kvm_dirty_regs |= mask;
  return Napi::Number::New(env, static_cast<double>(mask));
}

}  // namespace

void InitRunner(Napi::Env env, Napi::Object exports) {
  InstallSignalHandler();
  tls.run = nullptr;  // the JS thread runs vCPUs synchronously: touch its TLS block
  UnblockKickSignal();
  exports.Set("VcpuRunner", VcpuRunner::Define(env));
  exports.Set("copySyncRegs", Napi::Function::New(env, CopySyncRegs));
  exports.Set("kickSignal", Napi::Number::New(env, kKickSignal));
}

}  // namespace elisa
