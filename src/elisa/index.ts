// libelisa in TypeScript: the structures a VMFUNC-capable CPU walks, built in pages handed out
// by an allocator. See docs/libelisa.md for the picture.
export * from './address';
export * from './memory';
export * from './flags';
export * from './table';
export * from './pagetable';
export * from './ept';
export * from './walk';
export * from './mapreq';
export * from './codepages';
export * from './context';
export * from './gatecode';
