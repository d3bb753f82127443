// src/elisa/hypercall-abi.ts against the C it describes: the constants are
// read back out of every patch in kernel-patch/ and out of the system's
// kernel UAPI headers, so a change on either side that is not mirrored fails.
import { expect } from 'chai';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import {
  ElisaHypercall, ElisaModuleParam, GuestOp, KVM_CAP_ELISA_MANAGER, KvmHcError, ManagerOp,
  NegotiationGroup, UtilAddrOp, UtilGroup, UtilVmcsOp, VMCS_GUEST_RFLAGS, decodeHcError, hcErrorValue,
} from '../../src/elisa/hypercall-abi';

const PATCH_DIR = resolve(__dirname, '../../../kernel-patch');

/** The added lines of a unified diff, without their leading '+'. */
function addedLines(patch: string): string {
  return patch.split('\n').filter((l) => l.startsWith('+') && !l.startsWith('+++')).map((l) => l.slice(1)).join('\n');
}

/** #define NAME VALUE from C text, as a number. */
function cDefine(c: string, name: string): number | undefined {
  const m = new RegExp(`^#define\\s+${name}\\s+(0x[0-9a-fA-F]+|\\d+)\\b`, 'm').exec(c);
  return m ? Number(m[1]) : undefined;
}

function patches(variant: string): [string, string][] {
  const dir = join(PATCH_DIR, variant);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.patch'))
    .map((f) => [`${variant}/${f}`, addedLines(readFileSync(join(dir, f), 'utf8'))]);
}

describe('ELISA hypercall ABI constants', function () {
  const compat = patches('compat');
  const hardened = patches('hardened');

  it('has a compat and a hardened patch for 6.1 and 6.12', function () {
    expect(compat.map(([n]) => n)).to.include.members(['compat/6.1.patch', 'compat/6.12.patch']);
    expect(hardened.map(([n]) => n)).to.include.members(['hardened/6.1.patch', 'hardened/6.12.patch']);
  });

  it('match the numbers and sub-operations in every patch', function () {
    for (const [name, c] of [...compat, ...hardened]) {
      const expectDefine = (macro: string, value: number) =>
        expect(cDefine(c, macro), `${name}: ${macro}`).to.equal(value);
      expectDefine('ELISA_HC_UTIL', ElisaHypercall.UTIL);
      expectDefine('ELISA_HC_NEGOTIATION', ElisaHypercall.NEGOTIATION);
      expectDefine('ELISA_UTIL_VMCS', UtilGroup.VMCS);
      expectDefine('ELISA_UTIL_ADDR', UtilGroup.ADDR);
      expectDefine('ELISA_UTIL_VMCS_READ64', UtilVmcsOp.READ64);
      expectDefine('ELISA_UTIL_VMCS_WRITE64', UtilVmcsOp.WRITE64);
      expectDefine('ELISA_UTIL_ADDR_GPA_TO_HPA', UtilAddrOp.GPA_TO_HPA);
      expectDefine('ELISA_NEG_MANAGER', NegotiationGroup.MANAGER);
      expectDefine('ELISA_NEG_GUEST', NegotiationGroup.GUEST);
      expectDefine('ELISA_NEG_MANAGER_SET_VCPU', ManagerOp.SET_VCPU);
      expectDefine('ELISA_NEG_GUEST_VCPU_ID', GuestOp.VCPU_ID);
      expectDefine('ELISA_NEG_GUEST_ACTIVATE', GuestOp.ACTIVATE);
      expect(c, name).to.contain(`module_param(${ElisaModuleParam.VARIANT}, charp, 0444)`);
    }
    for (const [name, c] of compat) {
      expect(cDefine(c, 'ELISA_NEG_MANAGER_SET_LIST_HPA'), name).to.equal(ManagerOp.SET_LIST);
      expect(c, name).to.match(new RegExp(`${ElisaModuleParam.VARIANT} = "compat"`));
    }
    for (const [name, c] of hardened) {
      expect(cDefine(c, 'ELISA_NEG_MANAGER_SET_LIST'), name).to.equal(ManagerOp.SET_LIST);
      expect(cDefine(c, 'ELISA_NEG_MANAGER_REVOKE'), name).to.equal(ManagerOp.REVOKE);
      expect(cDefine(c, 'ELISA_NEG_GUEST_DEACTIVATE'), name).to.equal(GuestOp.DEACTIVATE);
      expect(cDefine(c, 'KVM_CAP_ELISA_MANAGER'), name).to.equal(KVM_CAP_ELISA_MANAGER);
      expect(c, name).to.match(new RegExp(`${ElisaModuleParam.VARIANT} = "hardened"`));
      expect(c, name).to.contain(`module_param_array(${ElisaModuleParam.MANAGER_PIDS}, int,`);
      expect(c, name).to.contain(`module_param(${ElisaModuleParam.ALLOW_USER}, bool, 0644)`);
    }
  });

  it('KVM_CAP_ELISA_MANAGER spells "ELIS" and is far from upstream capability numbers', function () {
    expect(Buffer.from(KVM_CAP_ELISA_MANAGER.toString(16), 'hex').toString('ascii')).to.equal('ELIS');
    const uapi = '/usr/include/linux/kvm.h';
    if (!existsSync(uapi)) this.skip();
    const caps = [...readFileSync(uapi, 'utf8').matchAll(/^#define KVM_CAP_\w+\s+(\d+)\s*$/gm)].map((m) => Number(m[1]));
    expect(caps.length).to.be.greaterThan(100);
    expect(Math.max(...caps)).to.be.lessThan(KVM_CAP_ELISA_MANAGER / 1000);
  });

  it('error codes equal the kernel UAPI values (kvm_para.h, errno)', function () {
    const kvmPara = '/usr/include/linux/kvm_para.h';
    if (!existsSync(kvmPara)) this.skip();
    const errno = readFileSync('/usr/include/asm-generic/errno-base.h', 'utf8') +
      readFileSync('/usr/include/asm-generic/errno.h', 'utf8');
    const para = readFileSync(kvmPara, 'utf8');
    const uapi = (macro: string): number => {
      const m = new RegExp(`^#define\\s+${macro}\\s+(\\w+)`, 'm').exec(para);
      expect(m, macro).to.not.equal(null);
      const v = m![1]!;
      return /^\d+$/.test(v) ? Number(v) : cDefine(errno, v)!;
    };
    expect(uapi('KVM_ENOSYS')).to.equal(KvmHcError.ENOSYS);
    expect(uapi('KVM_EFAULT')).to.equal(KvmHcError.EFAULT);
    expect(uapi('KVM_EINVAL')).to.equal(KvmHcError.EINVAL);
    expect(uapi('KVM_EPERM')).to.equal(KvmHcError.EPERM);
    expect(uapi('KVM_EOPNOTSUPP')).to.equal(KvmHcError.EOPNOTSUPP);
  });

  it('every error code the patches return is one the TypeScript side knows', function () {
    const known = new Set(Object.keys(KvmHcError).map((k) => `KVM_${k}`));
    for (const [name, c] of [...compat, ...hardened]) {
      for (const m of c.matchAll(/(?:ELISA_ERR\(|-)(KVM_E[A-Z0-9]+)\b/g)) {
        expect(known.has(m[1]!), `${name} returns ${m[1]}`).to.equal(true);
      }
    }
  });

  it('hcErrorValue gives the 64-bit RAX value (-KVM_EPERM is all ones)', function () {
    expect(hcErrorValue(KvmHcError.EPERM)).to.equal(0xffff_ffff_ffff_ffffn);
    expect(hcErrorValue(KvmHcError.ENOSYS)).to.equal(0xffff_ffff_ffff_fc18n);
  });

  it('decodeHcError inverts hcErrorValue and leaves results alone (property)', function () {
    for (const [name, code] of Object.entries(KvmHcError)) {
      expect(decodeHcError(hcErrorValue(code))).to.equal(name);
    }
    const errorValues = new Set(Object.values(KvmHcError).map(hcErrorValue));
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (rax) =>
      decodeHcError(rax) === undefined || errorValues.has(rax)));
    // Identifiers and host-physical addresses have bit 63 clear: never errors.
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }), (value) => decodeHcError(value) === undefined));
  });

  it('uses the SDM encoding of GUEST_RFLAGS', function () {
    // SDM Vol. 3 App. B.4: natural-width guest-state field, index 0x10 → 0x6820.
    const width = 3, type = 2, index = 0x10;
    expect((width << 13) | (type << 10) | (index << 1)).to.equal(VMCS_GUEST_RFLAGS);
  });
});
