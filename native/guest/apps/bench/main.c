/* bench: bench_iterations round trips through the gate, then as many plain port-I/O
 * exits (the baseline), each timed with rdtsc; the host reads both arrays. */
#include <elisa/guest.h>
#include <elisa/gate.h>

ELISA_GATE_DEFINE();

#define BENCH_MAX 4096
volatile uint64_t bench_iterations = 16;
uint64_t bench_trip_cycles[BENCH_MAX];
uint64_t bench_pio_cycles[BENCH_MAX];

/* Port the host ignores in bench runs: one PIO exit, nothing else. */
#define BENCH_PIO_PORT 0x05f0

__attribute__((noinline)) static long pio_call(void) {
    __asm__ volatile("outb %%al, %0" :: "Nd"((uint16_t)BENCH_PIO_PORT), "a"(0) : "memory");
    return 1;
}

int main(void) {
    GUEST_ASSERT(elisa_attached(), "no sub context attached to this vCPU");
    uint64_t n = bench_iterations < BENCH_MAX ? bench_iterations : BENCH_MAX;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t0 = elisa_rdtsc();
        long r = elisa_gate_entry(0, 0, 0, 0, 0, 0);
        uint64_t t1 = elisa_rdtsc();
        GUEST_ASSERT_EQ(r, 1);
        bench_trip_cycles[i] = t1 - t0;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t t0 = elisa_rdtsc();
        long r = pio_call();
        uint64_t t1 = elisa_rdtsc();
        GUEST_ASSERT_EQ(r, 1);
        bench_pio_cycles[i] = t1 - t0;
    }
    result(n);
    return 0;
}
