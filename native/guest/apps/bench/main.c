/* bench: bench_iterations round trips through the gate, interleaved with as many calls
 * of a function doing one plain port-I/O exit (the baseline), each bracketed by rdtsc the
 * same way; the host reads both arrays. Two writes to the calibration port around the
 * loop let the host convert TSC cycles to time. */
#include <elisa/guest.h>
#include <elisa/gate.h>

ELISA_GATE_DEFINE();

#define BENCH_MAX 16384
volatile uint64_t bench_iterations = 16;
uint64_t bench_trip_cycles[BENCH_MAX];
uint64_t bench_pio_cycles[BENCH_MAX];
uint64_t bench_tsc_start, bench_tsc_end;

/* Ports the host serves in bench runs (src/elisa/host/bench.ts). */
#define BENCH_PIO_PORT      0x05f0  /* baseline: one exit, nothing else */
#define BENCH_CAL_PORT      0x05f1  /* calibration marks */
#define BENCH_PROGRESS_PORT 0x05f2  /* iterations done, every 256 */

__attribute__((noinline)) static long pio_call(void) {
    __asm__ volatile("outb %%al, %0" :: "Nd"((uint16_t)BENCH_PIO_PORT), "a"(0) : "memory");
    return 1;
}

int main(void) {
    GUEST_ASSERT(elisa_attached(), "no sub context attached to this vCPU");
    uint64_t n = bench_iterations < BENCH_MAX ? bench_iterations : BENCH_MAX;
    bench_tsc_start = elisa_rdtsc();
    outb(BENCH_CAL_PORT, 0);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t0 = elisa_rdtsc();
        long r = elisa_gate_entry(0, 0, 0, 0, 0, 0);
        uint64_t t1 = elisa_rdtsc();
        long p = pio_call();
        uint64_t t2 = elisa_rdtsc();
        GUEST_ASSERT_EQ(r, 1);
        GUEST_ASSERT_EQ(p, 1);
        bench_trip_cycles[i] = t1 - t0;
        bench_pio_cycles[i] = t2 - t1;
        if ((i & 255) == 255) outl(BENCH_PROGRESS_PORT, (uint32_t)(i + 1));
    }
    outb(BENCH_CAL_PORT, 1);
    bench_tsc_end = elisa_rdtsc();
    result(n);
    return 0;
}
