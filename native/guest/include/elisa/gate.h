/*
 * The guest side of ELISA (default context): the 3-page gate region the host fills
 * and the call into the gate. A program that wants a sub context writes
 * ELISA_GATE_DEFINE(); once at file scope and calls elisa_gate_entry(a0..a5).
 *
 *   elisa_gate_region      3 pages, page aligned: top | middle | bottom. The host writes
 *                          the generated top page (ending with VMFUNC(0,511)) and bottom
 *                          page (the return path) here when it attaches a sub context;
 *                          the middle page is where the gate/sub code appears in the
 *                          other contexts.
 *   elisa_gate_entry_gva   the address of elisa_gate_entry inside the top page, written
 *                          by the host at attach (0 = no sub context attached).
 *
 * Interrupts must be off while the gate runs (the gate refuses IF=1 and returns -1).
 * Guests of this runtime start with IF=0 and never enable interrupts, so
 * elisa_gate_entry simply calls; elisa_gate_entry_with_if_set exists for the tests.
 */
#ifndef ELISA_GATE_H
#define ELISA_GATE_H

#include <stdint.h>

#define ELISA_GATE_PAGE_SIZE 4096
#define ELISA_GATE_PAGES 3

extern uint8_t elisa_gate_region[ELISA_GATE_PAGES * ELISA_GATE_PAGE_SIZE];
extern volatile uint64_t elisa_gate_entry_gva;

/* Defines the gate region (in .bss: zero until the host fills it) and the entry variable. */
#define ELISA_GATE_DEFINE()                                                                  \
    __attribute__((section(".bss.elisa_gate"), aligned(ELISA_GATE_PAGE_SIZE)))              \
    uint8_t elisa_gate_region[ELISA_GATE_PAGES * ELISA_GATE_PAGE_SIZE];                      \
    volatile uint64_t elisa_gate_entry_gva

typedef long (*elisa_gate_fn)(long, long, long, long, long, long);

/* True once the host attached a sub context to this program. */
static inline int elisa_attached(void) { return elisa_gate_entry_gva != 0; }

/* Enters the sub context: a System V call of the gate entry; returns the sub entry
 * function's result, or -1 if the gate refused. Interrupts must be off. */
static inline long elisa_gate_entry(long a0, long a1, long a2, long a3, long a4, long a5) {
    return ((elisa_gate_fn)(uintptr_t)elisa_gate_entry_gva)(a0, a1, a2, a3, a4, a5);
}

/* Interrupt flag helpers (CPL 0). */
static inline void elisa_cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void elisa_sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline uint64_t elisa_rflags(void) {
    uint64_t f;
    __asm__ volatile("pushfq; popq %0" : "=r"(f));
    return f;
}

/* Time stamp counter (for the in-guest timing of round trips). */
static inline uint64_t elisa_rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return ((uint64_t)hi << 32) | lo;
}

#endif
