import { ElisaGuest, ElisaManager, GuestMachine, guestProgramPath } from '../src/index';

async function main(): Promise<void> {
  // A bare-metal guest program (native/guest/examples/hello.c) on the x86 layer.
  using m = GuestMachine.create({ memory: '64M' });
  const r = await m.loadElf(guestProgramPath('hello')).run({ timeoutMs: 5000 }); // faults reject: GuestFault, GuestShutdown, GuestTimeout
  console.log(r.console.trim(), r.exitCode, `0x${r.result?.toString(16)}`);
  // Hello from a KVM guest! 2 + 3 = 5 42 0x1122334455667788

  // ELISA in host mode: the Node process is the VMM and the manager.
  using manager = ElisaManager.create();
  using guest = ElisaGuest.create('nop');                 // guest program reserving the 3-page gate region
  const att = manager.attach(guest, { program: 'sub/nop' }); // sub-context program, mapped into the sub context
  const n = guest.run({ timeoutMs: 5000 });               // one round trip: default → gate → sub → default
  console.log(n.console.trim(), n.result, att.backend);
  // nop returned 1 1n emulated
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1; });
