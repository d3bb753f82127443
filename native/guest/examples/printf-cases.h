/*
 * printf cases shared by examples/printf.c (the guest runtime's printf) and a host
 * program built by test/guest/printf.test.ts (glibc's printf): both outputs must match.
 * Each CASE(fmt, args...) prints one line. Only what our printf supports.
 */
CASE("%d|%i|%u|%d", -42, 7, 3000000000u, 0);
CASE("%x|%X|%#x|%#x|%x", 0xdeadbeefu, 0xabcu, 255u, 0u, 0u);
CASE("%lx|%llx|%ld|%lld|%lu", 0x123456789abcdefUL, 0xfedcba9876543210ULL, -1234567890123L,
     -9223372036854775807LL - 1, 18446744073709551615UL);
CASE("%s|%-6s|%6s|%c%c", "str", "ab", "cd", 'x', 'y');
CASE("%05d|%-5d|%5d|%08x|%-4x|", -42, 17, 3, 0xbeefu, 0xau);
CASE("%p|%zu|100%%", (void *)0x1234abcdUL, (size_t)123456);
CASE("%#llx|%20llu|%-3c|", 0x8000000000000000ULL, 12345678901234567890ULL, 'z');
