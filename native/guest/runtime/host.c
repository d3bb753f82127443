/* exit, result and assertions: the channel from a guest program to the host. */
#include <elisa/guest.h>

void exit(int code) {
    outl(ELISA_PORT_EXIT, (uint32_t)code);
    /* The host ends the run on the write above; should anything resume us anyway,
     * stay parked rather than return into a program that asked to stop. */
    for (;;) __asm__ volatile("cli; hlt");
}

void result(uint64_t value) {
    outl(ELISA_PORT_RESULT_LO, (uint32_t)value);
    outl(ELISA_PORT_RESULT_HI, (uint32_t)(value >> 32));
}

void __guest_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s:%d: assertion `%s` failed", file, line, cond);
    if (fmt[0] != '\0' && n >= 0 && (size_t)n < sizeof msg - 2) {
        va_list ap;
        va_start(ap, fmt);
        msg[n++] = ':';
        msg[n++] = ' ';
        n += vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
        va_end(ap);
    }
    size_t len = strlen(msg);
    outsb(ELISA_PORT_ASSERT_MSG, msg, len);
    outl(ELISA_PORT_ASSERT_FAIL, (uint32_t)line);
    for (;;) __asm__ volatile("cli; hlt");
}
