// The in-VM deployment (the original's): manager and guests are Linux VMs, negotiating over TCP.
export * from './wire';
export * from './stream';
export * from './negotiation';
