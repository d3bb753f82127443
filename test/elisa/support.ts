// Test helpers for the elisa suites: a stand-in code generator whose pages carry
// recognisable markers, and a resolver for arena-backed sources.
import type { GateCodeGenerator } from '../../src/elisa/codepages';

/** Marker bytes at the start of each stand-in page. */
export const MARK = { top: 0x71, bottom: 0xb0, gate: 0x6a, sub: 0x5b } as const;

/**
 * A stand-in generator: each page is filled with its marker byte; the gate page embeds the
 * sub EPTP at offset 8 and the sub page the entry point at offset 8, so tests can see the
 * builder passed the right values. Not executable code.
 */
export const markerCode: GateCodeGenerator = (p) => {
  const page = (mark: number): Uint8Array => new Uint8Array(4096).fill(mark);
  const gate = page(MARK.gate);
  const sub = page(MARK.sub);
  new DataView(gate.buffer).setBigUint64(8, p.subEptp, true);
  new DataView(sub.buffer).setBigUint64(8, p.entry, true);
  new DataView(sub.buffer).setBigUint64(16, p.subStackTop, true);
  new DataView(gate.buffer).setBigUint64(16, p.gateStackTop, true);
  return {
    top: page(MARK.top), bottom: page(MARK.bottom), gate, sub,
    vmfuncSites: [{ page: 'top', offset: 4093, slot: 511, gva: p.gva - 3n }, { page: 'sub', offset: 4093, slot: 0, gva: p.gva + 4093n }],
  };
};
