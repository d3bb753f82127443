/*
 * Baseline for bench/exit.ts: the PIO-exit round trip with raw KVM ioctls.
 * A real-mode guest loops on `out %al, $0x10; jmp back`; every KVM_RUN returns
 * with KVM_EXIT_IO.
 * Usage: exit BATCHES EXITS_PER_BATCH   prints one JSON array: microseconds per exit per batch
 *        exit serve                     for each line "N" on stdin, runs N exits and prints
 *                                       microseconds per exit (lets bench/exit.ts interleave
 *                                       C and Node batch by batch under the same load)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "exit.c: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int vcpu_fd;
static struct kvm_run *run;

/* Runs n exits; returns microseconds per exit. */
static double batch(int n) {
  double t0 = now_us();
  for (int i = 0; i < n; i++) {
    if (ioctl(vcpu_fd, KVM_RUN, 0) < 0) die("KVM_RUN");
    if (run->exit_reason != KVM_EXIT_IO) {
      fprintf(stderr, "exit.c: unexpected exit reason %u\n", run->exit_reason);
      exit(1);
    }
  }
  return (now_us() - t0) / n;
}

int main(int argc, char **argv) {
  int serve = argc > 1 && strcmp(argv[1], "serve") == 0;
  int batches = argc > 1 && !serve ? atoi(argv[1]) : 10;
  int per_batch = argc > 2 ? atoi(argv[2]) : 1000;
  /* out %al, $0x10 ; jmp -4 (back to the out) */
  static const unsigned char code[] = {0xe6, 0x10, 0xeb, 0xfc};

  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("open /dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  size_t mem_size = 0x10000;
  unsigned char *mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) die("mmap guest memory");
  memcpy(mem + 0x1000, code, sizeof code);
  struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0, .memory_size = mem_size,
                                               .userspace_addr = (unsigned long)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < 0) die("KVM_GET_VCPU_MMAP_SIZE");
  run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  vcpu_fd = vcpu;
  if (run == MAP_FAILED) die("mmap kvm_run");

  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

  batch(100); /* warm up */
  if (serve) {
    int n;
    while (scanf("%d", &n) == 1 && n > 0) {
      printf("%.4f\n", batch(n));
      fflush(stdout);
    }
    return 0;
  }
  printf("[");
  for (int b = 0; b < batches; b++) printf("%s%.4f", b ? "," : "", batch(per_batch));
  printf("]\n");
  return 0;
}
