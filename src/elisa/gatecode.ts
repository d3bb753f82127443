// Adapts the gate/sub code generators of src/elisa/gate.ts to the builder's narrow
// GateCodeGenerator interface.
import type { GateCodeGenerator, VmfuncSite } from './codepages';
import { buildGatePages } from './gate';

/** The real gate code: top/bottom entry pages, gate page and sub page with values embedded. */
export const elisaGateCode: GateCodeGenerator = (p) => {
  const pages = buildGatePages({
    middleGva: p.gva, subEptp: p.subEptp, gateEptpListGva: p.eptpListGva, subEptpListGva: p.eptpListGva,
    gateStackTop: p.gateStackTop, subStackTop: p.subStackTop, entry: p.entry, vaBits: p.vaBits,
  });
  const sites: VmfuncSite[] = [];
  for (const page of [pages.top, pages.gate, pages.sub, pages.bottom]) {
    for (const v of page.vmfuncs) sites.push({ page: page.role, offset: v.offset, slot: v.slot, gva: v.gva });
  }
  return { top: pages.top.bytes, bottom: pages.bottom.bytes, gate: pages.gate.bytes, sub: pages.sub.bytes, vmfuncSites: sites, entryGva: pages.entryGva };
};
