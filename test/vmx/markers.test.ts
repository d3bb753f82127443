// Host-side checks of the vmx e2e harness's marker parser (runs in the normal `npm test`).
// The log excerpts are written by hand, as the emulated host's console prints them.
import { expect } from 'chai';
import { judge, parseMarkers, summarize } from './markers';

const good = [
  '[    0.314592] [Firmware Bug]: TSC_DEADLINE disabled',
  'ELISA-VMX: ROOT 43.73s\r',
  'ELISA-VMX: PASS "stock KVM opens /dev/kvm" 12ms\r',
  'ELISA-VMX: FAIL "stock KVM \\"VMFUNC\\" gives #UD": "expected 6 to equal 7\\n    at Context.<anonymous>"\r',
  'ELISA-VMX: SKIP "patched: hypercall 1001/3/1"',
  'ELISA-VMX: DONE 1 1 1',
  'ELISA-VMX: DMESG [   50.1] kvm: VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL does not work properly',
].join('\n');

describe('vmx e2e marker parser', function () {
  it('reads PASS/FAIL/SKIP/DONE/DMESG and progress markers, with JSON-escaped titles', function () {
    const r = parseMarkers(good);
    expect(r.passes).to.deep.equal([{ title: 'stock KVM opens /dev/kvm', ms: 12 }]);
    expect(r.failures).to.deep.equal([
      { title: 'stock KVM "VMFUNC" gives #UD', message: 'expected 6 to equal 7\n    at Context.<anonymous>' },
    ]);
    expect(r.skips).to.deep.equal(['patched: hypercall 1001/3/1']);
    expect(r.done).to.deep.equal({ passing: 1, failing: 1, pending: 1 });
    expect(r.notes).to.deep.equal(['ROOT 43.73s']);
    expect(r.dmesg).to.have.length(1);
    expect(r.garbled).to.deep.equal([]);
  });

  it('finds a marker that a kernel message pushed into the middle of a line', function () {
    const r = parseMarkers('[   61.2] random: crng initELISA-VMX: PASS "a" 3ms\nELISA-VMX: DONE 1 0 0\n');
    expect(r.passes).to.deep.equal([{ title: 'a', ms: 3 }]);
    expect(judge(r)).to.deep.equal({ ok: true, problems: [] });
  });

  it('fails a run with a failing test and prints its message mocha-style', function () {
    const r = parseMarkers(good);
    expect(judge(r).ok).to.equal(false);
    const text = summarize(r);
    expect(text).to.contain('  1 passing\n  1 failing\n  1 pending');
    expect(text).to.contain('  1) stock KVM "VMFUNC" gives #UD:\n     expected 6 to equal 7');
    expect(text.trimEnd().split('\n').at(-1)).to.equal('vmx: 1 passed, 1 failed');
  });

  it('fails a run whose DONE marker never arrived, naming the last progress marker', function () {
    const r = parseMarkers('ELISA-VMX: ROOT 43.73s\nELISA-VMX: PASS "a" 3ms\n');
    const { ok, problems } = judge(r);
    expect(ok).to.equal(false);
    expect(problems).to.deep.equal(['no DONE marker: the in-host suite did not finish (last progress marker: "ROOT 43.73s")']);
    expect(summarize(r).trimEnd().split('\n').at(-1)).to.equal('vmx: 1 passed, 1 failed');
  });

  it('fails a run whose DONE counts disagree with the PASS/FAIL lines (a lost line)', function () {
    const r = parseMarkers('ELISA-VMX: PASS "a" 3ms\nELISA-VMX: DONE 2 0 0\n');
    expect(judge(r).problems).to.deep.equal([
      'DONE announced 2 passing / 0 failing / 0 pending but the log has 1 PASS / 0 FAIL / 0 SKIP lines',
    ]);
  });

  it('fails a run that ran no test, and one whose boot failed', function () {
    expect(judge(parseMarkers('ELISA-VMX: DONE 0 0 0\n')).problems).to.deep.equal(['the in-host suite ran no test']);
    const boot = judge(parseMarkers('ELISA-VMX: INITRAMFS 28.6s\nELISA-VMX: BOOT-FAIL mount /dev/sda\n'));
    expect(boot.ok).to.equal(false);
    expect(boot.problems[0]).to.equal('the emulated host could not start the suite: mount /dev/sda');
  });

  it('counts a truncated marker line as garbled, not as a result', function () {
    const r = parseMarkers('ELISA-VMX: PASS "a 3ms\nELISA-VMX: DONE 0 0 0\n');
    expect(r.passes).to.deep.equal([]);
    expect(r.garbled).to.deep.equal(['PASS "a 3ms']);
    expect(judge(r).ok).to.equal(false);
  });
});
