// A context VM's memory slots, derived by walking the context's EPT.
import { hex, levelSize } from '../../address';
import type { ElisaContexts } from '../../context';
import { ADDRESS_MASK, EPT } from '../../flags';
import type { ManagerMemory } from '../backend';

/** One memory slot of a context VM. */
export interface ContextSlot {
  gpa: bigint;
  /** Byte offset into the arena memory. */
  offset: number;
  size: number;
  readonly: boolean;
  /** 'ept' for slots derived from EPT leaves, 'apt' for the page-table root at the guest's CR3. */
  source: 'ept' | 'apt';
}

/**
 * Derives a context VM's memory slots by walking the EPT's leaves: each leaf's GPA
 * range is backed by the arena bytes its HPA names; adjacent leaves whose GPAs and
 * HPAs are both contiguous and whose writability agrees are coalesced. Throws if a
 * leaf points outside the arena (the backend can only back arena memory).
 */
export function slotsFromEpt(contexts: ElisaContexts, which: 'gate' | 'sub', manager: ManagerMemory): ContextSlot[] {
  const { allocator } = manager;
  const out: ContextSlot[] = [];
  for (const leaf of contexts[which].ept.leaves()) {
    const size = levelSize(leaf.level);
    const hpa = leaf.entry & ADDRESS_MASK & ~(size - 1n);
    if (hpa < allocator.base || hpa + size > allocator.end) {
      throw new Error(`${which} context: EPT leaf GPA ${hex(leaf.gpa)} → HPA ${hex(hpa)} lies outside the manager arena ` +
        `[${hex(allocator.base)}, ${hex(allocator.end)}): the emulated backend can only back arena memory`);
    }
    const readonly = (leaf.entry & EPT.W) === 0n;
    const offset = Number(hpa - allocator.base);
    const last = out[out.length - 1];
    if (last && last.readonly === readonly && last.gpa + BigInt(last.size) === leaf.gpa && last.offset + last.size === offset) {
      last.size += Number(size);
    } else {
      out.push({ gpa: leaf.gpa, offset, size: Number(size), readonly, source: 'ept' });
    }
  }
  return out;
}

