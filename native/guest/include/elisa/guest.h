/*
 * The freestanding guest runtime: what a guest program may call. No libc; built with
 * -ffreestanding -nostdlib -mgeneral-regs-only -mno-red-zone (see ../../Makefile).
 * The program defines `int main(void)`; _start (runtime/start.S) sets up the stack,
 * calls main and exits with its return value.
 */
#ifndef ELISA_GUEST_H
#define ELISA_GUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "ports.h"

#define ELISA_NORETURN __attribute__((noreturn))
#define ELISA_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Port I/O (CPL 0: the guest runs in ring 0). */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
/* Writes n bytes to one port with a single `rep outsb` (one exit for up to a page). */
static inline void outsb(uint16_t port, const void *p, size_t n) {
    __asm__ volatile("rep outsb" : "+S"(p), "+c"(n) : "d"(port) : "memory");
}

/* Writes n bytes to the console with as few exits as possible (see ports.h). */
void console_write(const void *p, size_t n);
int putchar(int c);
int puts(const char *s);                 /* writes s and a newline */
int printf(const char *fmt, ...) ELISA_PRINTF(1, 2);
int vprintf(const char *fmt, va_list ap);
/* Formats into buf (always NUL-terminated when size > 0); returns the full length. */
int snprintf(char *buf, size_t size, const char *fmt, ...) ELISA_PRINTF(3, 4);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);

/* Ends the run; the host sees `code` as the exit code. */
ELISA_NORETURN void exit(int code);
/* Hands a 64-bit value to the host (the last one written wins). */
void result(uint64_t value);

/* Reports "file:line: assertion `cond` failed: message" to the host and ends the run. */
ELISA_NORETURN void __guest_assert_fail(const char *file, int line, const char *cond,
                                        const char *fmt, ...) ELISA_PRINTF(4, 5);
/* GUEST_ASSERT(cond) or GUEST_ASSERT(cond, "fmt", args...): on failure the host run
 * rejects with a GuestAssertionError carrying file, line and the formatted message. */
#define GUEST_ASSERT(cond, ...) \
    do { if (!(cond)) __guest_assert_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__); } while (0)
#define GUEST_ASSERT_EQ(a, b) \
    do { uint64_t __a = (uint64_t)(a), __b = (uint64_t)(b); \
         if (__a != __b) __guest_assert_fail(__FILE__, __LINE__, #a " == " #b, \
                                             "%#llx != %#llx", (unsigned long long)__a, \
                                             (unsigned long long)__b); } while (0)

/* gcc may emit calls to these even in freestanding code. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif
