/*
 * Entry point of every guest program. The host enters here in 64-bit mode at CPL 0
 * with interrupts off; we switch to the program's own stack (so a program does not
 * depend on where the host put its initial stack), call main and exit with its value.
 */
    .section .text.start, "ax"
    .globl _start
    .type _start, @function
_start:
    movabs $__stack_top, %rsp
    xorl %ebp, %ebp
    call main
    movl %eax, %edi
    call exit
    ud2
    .size _start, . - _start

    /* The stack lives in its own NOLOAD section (placed by linker.ld); the loader
     * zeroes it with the rest of the segment's memsz. */
    .section .stack, "aw", @nobits
    .balign 16
    .space 32768
    .globl __stack_top
__stack_top:
