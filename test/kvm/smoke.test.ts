import { expect } from 'chai';
import { ExitReason, IoDirection } from '../../src/kvm/index';
import { requireKvm } from '../support/kvm';
import { longModeGuest, realModeGuest } from './guest';

describe('smoke', function () {
  before(function () { requireKvm(this); });
  it('real mode out + hlt', function () {
    using g = realModeGuest('mov $0x41, %al\nout %al, $0x10\nhlt');
    const e = g.vcpu.run({ timeoutMs: 1000 });
    expect(e.kind).to.equal('io');
    if (e.kind !== 'io') return;
    expect(e.direction).to.equal(IoDirection.OUT);
    expect(e.port).to.equal(0x10);
    expect([...e.data]).to.deep.equal([0x41]);
    expect(g.vcpu.runRaw(1000)).to.equal(ExitReason.HLT);
  });
  it('long mode out + hlt', function () {
    using g = longModeGuest('mov $0x1234567890, %rax\nmov $0x42, %al\nout %al, $0x11\nhlt');
    const e = g.vcpu.run({ timeoutMs: 1000 });
    expect(e.kind).to.equal('io');
    expect(g.vcpu.getRegs().rax).to.equal(0x1234567842n);
  });
});
