// `elisa doctor` against facts read independently from /proc and /dev/kvm.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { main } from '../../src/cli/main';
import { collectDoctorReport, type DoctorReport } from '../../src/cli/commands/doctor';
import { requireKvm } from '../support/kvm';

describe('elisa doctor', function () {
  before(function () { requireKvm(this); });

  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const flags = new Set((/^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '').trim().split(/\s+/));
  const vendorId = /^vendor_id\s*:\s*(\S+)/m.exec(cpuinfo)?.[1];

  it('--json reports API 12, the vendor, flags and KVM modules as /proc and /sys show them', async function () {
    let out = '';
    const write = process.stdout.write;
    process.stdout.write = ((s: string) => { out += s; return true; }) as typeof process.stdout.write;
    let code: number;
    try { code = await main(['doctor', '--json', '--iterations', '20000']); } finally { process.stdout.write = write; }
    expect(code).to.equal(0);
    const r = JSON.parse(out) as DoctorReport;
    expect(r.kvm.available).to.equal(true);
    expect(r.kvm.apiVersion).to.equal(12);
    expect(r.cpu.vendorId).to.equal(vendorId);
    expect(r.cpu.vendor).to.equal(vendorId === 'GenuineIntel' ? 'Intel' : vendorId === 'AuthenticAMD' ? 'AMD' : 'other');
    expect([r.cpu.vmx, r.cpu.svm, r.cpu.hypervisor]).to.deep.equal([flags.has('vmx'), flags.has('svm'), flags.has('hypervisor')]);
    expect(r.kvm.modules).to.include('kvm');
    expect(r.guest.iterations).to.equal(20000);
  });

  it('times the guest loop and derives the backends with reasons', function () {
    const r = collectDoctorReport({ iterations: 20000 });
    expect(r.guest.error).to.equal(undefined);
    expect(r.guest.nsPerIteration).to.be.greaterThan(0);
    expect(r.guest.instructionPath).to.equal(r.guest.nsPerIteration! > 50 ? 'emulated' : 'hardware');
    expect(r.backends.emulated.available).to.equal(true);
    expect(r.backends.vmfunc.available).to.equal(false); // never claimed without probing the patch
    if (!flags.has('vmx')) expect(r.backends.vmfunc.reason).to.match(/needs Intel VMX .* without VMX/);
  });

  it('a missing device is reported, not thrown, and no backend is available', function () {
    const r = collectDoctorReport({ device: '/dev/no-such-kvm' });
    expect(r.kvm.available).to.equal(false);
    expect(r.kvm.error).to.match(/\/dev\/no-such-kvm does not exist/);
    expect(r.backends.emulated).to.deep.equal({ available: false, reason: `KVM is not usable: ${r.kvm.error}` });
  });

  it('rejects unknown options with exit code 2', async function () {
    const write = process.stderr.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try { expect(await main(['doctor', '--bogus'])).to.equal(2); } finally { process.stderr.write = write; }
  });
});
