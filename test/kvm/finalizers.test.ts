// Objects dropped without dispose(): garbage collection unmaps guest memory and
// kvm_run and closes fds. Runs in a child process started with --expose-gc.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { requireKvm } from '../support/kvm';

const child = `
const { readdirSync, readFileSync } = require('node:fs');
const { GuestMemory, Kvm } = require(${JSON.stringify(join(__dirname, '..', '..', 'src', 'index.js'))});
const fds = () => readdirSync('/proc/self/fd').length;
const maps = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').length;
const settle = async () => { for (let i = 0; i < 10; i++) { global.gc(); await new Promise((r) => setTimeout(r, 10)); } };
(async () => {
  await settle();
  const before = { fds: fds(), maps: maps() };
  const addresses = [];
  (() => {
    for (let i = 0; i < 20; i++) {
      const m = GuestMemory.memfd('64K');
      addresses.push(m.hostAddress.toString(16));
      const kvm = Kvm.open();
      const vm = kvm.createVm();
      vm.createVcpu(0);
    }
  })();
  const during = { fds: fds(), maps: maps() };
  await settle();
  const after = { fds: fds(), maps: maps() };
  const text = readFileSync('/proc/self/maps', 'utf8');
  const stillMapped = addresses.filter((a) => new RegExp('^0*' + a + '-', 'm').test(text)).length;
  console.log(JSON.stringify({ before, during, after, stillMapped }));
})();
`;

describe('garbage collection without dispose()', function () {
  before(function () { requireKvm(this); });

  it('unmaps memory and kvm_run and closes every fd of dropped Kvm/Vm/Vcpu/GuestMemory objects', function () {
    const out = execFileSync(process.execPath, ['--expose-gc', '-e', child], { timeout: 60_000 }).toString();
    const r = JSON.parse(out) as { before: { fds: number; maps: number }; during: { fds: number; maps: number };
      after: { fds: number; maps: number }; stillMapped: number };
    // 20 x (memfd + /dev/kvm + VM + vCPU) fds were open before collection
    expect(r.during.fds - r.before.fds).to.be.at.least(80);
    expect(r.after.fds).to.equal(r.before.fds);
    expect(r.stillMapped).to.equal(0);
    expect(r.after.maps - r.before.maps).to.be.lessThan(10);
  });
});
