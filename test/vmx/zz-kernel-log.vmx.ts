// Runs last (files run in name order; "zz" sorts after every other file, the vmfunc
// backend suites included): whatever the suite did to KVM (guests, module swaps), the
// emulated host's kernel must not have logged a warning, BUG or oops.
import { expect } from 'chai';
import { kernelProblems } from './inhost';

describe('emulated VT-x host after the suite', function () {
  it('has no WARNING/BUG/oops in its kernel log', function () {
    expect(kernelProblems()).to.deep.equal([]);
  });
});
