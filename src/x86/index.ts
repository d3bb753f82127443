// Public API of the x86 guest layer (src/x86, excluding the encoder in src/x86/asm).
export { GuestMachine, GuestProgram, prepareLongModeVcpu, runGuestProgram, DEFAULT_RUN_TIMEOUT_MS,
  type GuestMachineOptions, type GuestRunOptions, type GuestRunResult } from './machine';
export { GuestError, GuestFault, GuestShutdown, GuestTimeout, GuestAssertionError, GuestUnexpectedExit } from './errors';
export { guestProgramPath, guestProgramDir, packageRoot } from './programs';
export { GuestPort, guestPortName, type GuestPortName } from './ports';
export { ElfError, ElfSymbols, parseElf, loadSegments,
  type ElfImage, type ElfSegment, type ElfSymbol, type ReservedRange } from './elf';
export { buildIdentityMap, Pte, LARGE_PAGE_SIZE, MAX_IDENTITY_MAP, type IdentityMap, type IdentityMapOptions } from './paging';
export { EXCEPTIONS, decodeReport, describePageFaultError, exceptionStubs, writeIdt, ReportOffset, REPORT_SIZE,
  type ExceptionReport, type GprName } from './exceptions';
export { writeSystemStructures, longModeState, Cr0, Cr4, Efer, LONG_MODE_CR0, LONG_MODE_CR4, LONG_MODE_EFER,
  type LongModeState, type SegmentState, type DescriptorTableState } from './longmode';
export { codeSegment64, dataSegment, segmentDescriptor, tssDescriptor, writeTss, idtGate, GateType } from './descriptors';
export {
  GUEST_RESERVED_END, GDT_GPA, TSS_GPA, TSS_STRIDE, IDT_GPA, STUBS_GPA, PAGE_TABLES_GPA, PAGE_TABLES_END,
  EXCEPTION_AREA_GPA, EXCEPTION_AREA_SIZE, INITIAL_STACK_TOP, MAX_VCPUS, Selector,
  exceptionAreaGpa, tssGpa, tssSelector, gdtSize,
} from './layout';
