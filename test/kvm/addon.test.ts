import { expect } from 'chai';
import { native } from '../../src/kvm/native';
import { requireKvm } from '../support/kvm';

describe('native addon', function () {
  before(function () { requireKvm(this); });

  it('reports KVM API version 12 (the only stable KVM API)', function () {
    expect(native.getApiVersion()).to.equal(12);
  });
});
