/*
 * A small printf: flags - 0 #, a width, lengths l ll z, conversions d i u x X p s c %.
 * Output is gathered in a buffer and written with one `rep outsb` per flush, because
 * each port write is a VM exit and byte-at-a-time output would cost one exit a byte.
 */
#include <elisa/guest.h>

struct sink {
    char *buf;      /* destination */
    size_t size;    /* capacity of buf */
    size_t used;    /* bytes in buf */
    size_t total;   /* bytes produced overall (the return value) */
    int console;    /* flush to the console port when full instead of truncating */
};

void console_write(const void *p, size_t n) {
    struct { uint64_t addr; uint64_t len; } buf = { (uintptr_t)p, n };
    if (n == 0) return;
    if ((uintptr_t)&buf < (1ULL << 32)) {
        /* "memory": buf and the bytes it points to must be in memory before the exit */
        __asm__ volatile("outl %0, %1" : : "a"((uint32_t)(uintptr_t)&buf), "Nd"(ELISA_PORT_CONSOLE_BUF) : "memory");
    } else {
        outsb(ELISA_PORT_CONSOLE, p, n);   /* stack above 4 GiB: the address does not fit */
    }
}

static void flush(struct sink *s) {
    if (s->console && s->used) console_write(s->buf, s->used);
    s->used = 0;
}

static void emit(struct sink *s, char c) {
    s->total++;
    if (s->console) {
        if (s->used == s->size) flush(s);
        s->buf[s->used++] = c;
    } else if (s->used + 1 < s->size) {
        s->buf[s->used++] = c;
    }
}

static void emit_padded(struct sink *s, const char *text, size_t len, int width, int left, char pad) {
    int fill = width > (int)len ? width - (int)len : 0;
    if (!left && pad == '0' && len && (text[0] == '-')) {   /* sign before zero padding */
        emit(s, '-');
        text++;
        len--;
    }
    if (!left) while (fill-- > 0) emit(s, pad);
    while (len--) emit(s, *text++);
    if (left) while (fill-- > 0) emit(s, ' ');
}

static size_t format_unsigned(char *out, unsigned long long v, unsigned base, int upper) {
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    size_t n = 0;
    do { tmp[n++] = digits[v % base]; v /= base; } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static void format(struct sink *s, const char *fmt, va_list ap) {
    for (; *fmt; fmt++) {
        if (*fmt != '%') { emit(s, *fmt); continue; }
        int left = 0, alt = 0, width = 0, longs = 0;
        char pad = ' ';
        for (;; fmt++) {
            if (fmt[1] == '-') left = 1;
            else if (fmt[1] == '0') pad = '0';
            else if (fmt[1] == '#') alt = 1;
            else break;
        }
        while (fmt[1] >= '0' && fmt[1] <= '9') width = width * 10 + (*++fmt - '0');
        while (fmt[1] == 'l' || fmt[1] == 'z') { longs++; fmt++; }
        char conv = *++fmt;
        char text[32];
        size_t len = 0;
        switch (conv) {
        case 'd': case 'i': {
            long long v = longs >= 2 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long long mag = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
            if (v < 0) text[len++] = '-';
            len += format_unsigned(text + len, mag, 10, 0);
            break;
        }
        case 'u': case 'x': case 'X': case 'p': {
            unsigned long long v;
            if (conv == 'p') { v = (uintptr_t)va_arg(ap, void *); alt = 1; }
            else v = longs >= 2 ? va_arg(ap, unsigned long long) : longs ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            /* '#' prefixes 0x to non-zero values only (C11 7.21.6.1); %p always has it */
            if (conv != 'u' && alt && (v != 0 || conv == 'p')) { text[len++] = '0'; text[len++] = conv == 'X' ? 'X' : 'x'; }
            len += format_unsigned(text + len, v, conv == 'u' ? 10 : 16, conv == 'X');
            break;
        }
        case 'c':
            text[len++] = (char)va_arg(ap, int);
            break;
        case 's': {
            const char *str = va_arg(ap, const char *);
            if (!str) str = "(null)";
            emit_padded(s, str, strlen(str), width, left, ' ');
            continue;
        }
        case '%':
            text[len++] = '%';
            break;
        case '\0':
            return;
        default:                       /* unknown conversion: print it as written */
            text[len++] = '%';
            text[len++] = conv;
            break;
        }
        emit_padded(s, text, len, width, left, left ? ' ' : pad);
    }
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    struct sink s = { buf, size, 0, 0, 0 };
    format(&s, fmt, ap);
    if (size) buf[s.used] = '\0';
    return (int)s.total;
}

int snprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int vprintf(const char *fmt, va_list ap) {
    char buf[256];
    struct sink s = { buf, sizeof buf, 0, 0, 1 };
    format(&s, fmt, ap);
    flush(&s);
    return (int)s.total;
}

int printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

int putchar(int c) {
    outb(ELISA_PORT_CONSOLE, (uint8_t)c);
    return (unsigned char)c;
}

int puts(const char *s) {
    return printf("%s\n", s) < 0 ? -1 : 0;   /* one buffered write, usually one exit */
}
