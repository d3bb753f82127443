import { expect } from 'chai';
import { Kvm } from '../../src/kvm/index';
import { native } from '../../src/kvm/native';
import { requireKvm } from '../support/kvm';

describe('native addon', function () {
  before(function () { requireKvm(this); });

  it('reports KVM API version 12 (the only stable KVM API)', function () {
    using kvm = Kvm.open();
    expect(kvm.apiVersion).to.equal(12);
    expect(native.getApiVersion(kvm.fd)).to.equal(12);
  });
});
