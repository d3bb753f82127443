/**
 * x86-64 encoder: typed registers, memory operands, and an assembler with labels,
 * fix-ups and layout directives. See `assembler.ts` for the encoding policy.
 */
export * from './registers';
export * from './operands';
export * from './assembler';
