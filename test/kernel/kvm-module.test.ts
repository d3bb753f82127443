// scripts/kvm-module.sh: the logic that can run on any machine — kernel release
// parsing, package resolution against the real apt archive, vermagic read from
// real ELF objects, and the refusal to touch modules while KVM is in use.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { requireKvm } from '../support/kvm';

const ROOT = resolve(__dirname, '../../..');
const SCRIPT = join(ROOT, 'scripts', 'kvm-module.sh');

function script(...args: string[]) {
  const r = spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

describe('kvm-module.sh', function () {
  describe('series (kernel release → X.Y)', function () {
    it('takes major.minor from Debian, Ubuntu and vanilla release strings', function () {
      const cases: [string, string][] = [
        ['6.1.0-56-amd64', '6.1'],
        ['6.12.117+deb12-amd64', '6.12'],
        ['6.8.0-45-generic', '6.8'],
        ['5.15.0', '5.15'],
        ['6.18.44-fc-v595', '6.18'],
        ['6.10', '6.10'],
      ];
      for (const [release, series] of cases) {
        const r = script('series', release);
        expect(r.code, release).to.equal(0);
        expect(r.stdout.trim(), release).to.equal(series);
      }
    });

    it('agrees with generated releases (property)', function () {
      this.timeout(120_000);
      fc.assert(
        fc.property(
          fc.integer({ min: 2, max: 99 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 300 }),
          fc.constantFrom('-1-amd64', '+deb12-amd64', '-45-generic', '', '-rc1'),
          (major, minor, patch, tail) => {
            const r = script('series', `${major}.${minor}.${patch}${tail}`);
            return r.code === 0 && r.stdout.trim() === `${major}.${minor}`;
          }),
        { numRuns: 40 });
    });

    it('rejects strings that are not kernel releases, with exit code 2', function () {
      for (const bad of ['', 'amd64', '6', 'v6.1.0', '6.x.1', '61-amd64']) {
        const r = script('series', bad);
        expect(r.code, JSON.stringify(bad)).to.equal(2);
        expect(r.stderr).to.match(/not a kernel release/);
      }
    });
  });

  describe('vermagic', function () {
    let dir: string;
    before(function () {
      if (!hasCommand('gcc') || !hasCommand('objcopy')) this.skip();
      dir = mkdtempSync(join(tmpdir(), 'elisa-vermagic-'));
    });
    after(function () { if (dir) rmSync(dir, { recursive: true, force: true }); });

    // A real ELF relocatable object whose .modinfo section is laid out as
    // modpost lays it out in a .ko: NUL-separated key=value strings.
    function objectWithModinfo(name: string, entries: string[]): string {
      const c = join(dir, `${name}.c`);
      const body = entries.map((e) => `"${e.replace(/["\\]/g, '\\$&')}\\0"`).join(' ');
      writeFileSync(c, `__attribute__((section(".modinfo"), used)) static const char info[] = ${body};\n` +
        'int placeholder(void) { return 0; }\n');
      const o = join(dir, `${name}.o`);
      const r = spawnSync('gcc', ['-c', '-o', o, c], { encoding: 'utf8' });
      expect(r.status, r.stderr).to.equal(0);
      return o;
    }

    it('returns the first word of vermagic= from .modinfo', function () {
      const ko = objectWithModinfo('kvm', ['license=GPL', 'depends=irqbypass',
        'vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions ', 'name=kvm']);
      const r = script('vermagic', ko);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.trim()).to.equal('6.1.0-56-amd64');
    });

    it('handles a release with "+" and an entry before it that mentions vermagic', function () {
      const ko = objectWithModinfo('kvm2', ['description=not vermagic=1.2.3',
        'vermagic=6.12.117+deb12-amd64 SMP preempt mod_unload modversions ']);
      expect(script('vermagic', ko).stdout.trim()).to.equal('6.12.117+deb12-amd64');
    });

    it('fails, naming the file, when there is no vermagic or no .modinfo', function () {
      const noMagic = objectWithModinfo('nomagic', ['license=GPL']);
      let r = script('vermagic', noMagic);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.contain(noMagic).and.to.match(/no vermagic/);

      const plain = join(dir, 'plain.txt');
      writeFileSync(plain, 'not an ELF file\n');
      r = script('vermagic', plain);
      expect(r.code).to.equal(1);
      expect(r.stderr).to.contain(plain);

      r = script('vermagic', join(dir, 'missing.ko'));
      expect(r.code).to.equal(1);
      expect(r.stderr).to.match(/no such file/);
    });
  });

  describe('resolve (Debian packages for a kernel release)', function () {
    before(function () {
      if (!hasCommand('apt-cache')) this.skip();
      // Other suites may not have refreshed apt; resolve runs apt-get update itself when root.
      this.timeout(300_000);
    });

    function resolved(release: string): Record<string, string> {
      const r = script('resolve', '--kernel', release);
      expect(r.code, r.stderr).to.equal(0);
      return Object.fromEntries(r.stdout.trim().split('\n').map((l) => {
        const i = l.indexOf('=');
        return [l.slice(0, i), l.slice(i + 1)];
      }));
    }

    it('finds headers, kbuild and same-version source for Debian 6.1.0-56-amd64', function () {
      this.timeout(300_000);
      const r = resolved('6.1.0-56-amd64');
      expect(r.series).to.equal('6.1');
      expect(r.headers_packages!.split(' ')).to.have.members(
        ['linux-headers-6.1.0-56-amd64', 'linux-headers-6.1.0-56-common', 'linux-kbuild-6.1']);
      expect(r.headers_version).to.equal('6.1.192-2');
      expect(r.source_package).to.equal('linux-source-6.1');
      expect(r.source_version).to.equal(r.headers_version);
      expect(r.patch_compat).to.equal(join(ROOT, 'kernel-patch', 'compat', '6.1.patch'));
      expect(existsSync(r.patch_compat!)).to.equal(true);
      expect(r.patch_hardened).to.equal(join(ROOT, 'kernel-patch', 'hardened', '6.1.patch'));
    });

    it('finds the 6.12 backport kernel of Debian 12', function () {
      this.timeout(300_000);
      const r = resolved('6.12.117+deb12-amd64');
      expect(r.series).to.equal('6.12');
      expect(r.headers_packages!.split(' ')).to.include.members(
        ['linux-headers-6.12.117+deb12-amd64', 'linux-headers-6.12.117+deb12-common']);
      expect(r.source_package).to.equal('linux-source-6.12');
      expect(r.source_version).to.equal(r.headers_version);
    });

    it('says which package is missing for an unknown release', function () {
      this.timeout(300_000);
      const r = script('resolve', '--kernel', '6.1.0-9999-amd64');
      expect(r.code).to.equal(1);
      expect(r.stderr).to.contain('linux-headers-6.1.0-9999-amd64');
    });
  });

  describe('refusing to swap modules while KVM is in use', function () {
    before(function () { requireKvm(this); });

    it('in-use lists this process while it holds /dev/kvm, and not after closing it', function () {
      const fd = openSync('/dev/kvm', 'r+');
      let r;
      try {
        r = script('in-use');
      } finally {
        closeSync(fd);
      }
      expect(r.code).to.equal(1);
      const pids = r.stdout.trim().split('\n').map((l) => Number(l.split(' ')[0]));
      expect(pids).to.include(process.pid);
      const after = script('in-use');
      const pidsAfter = after.stdout.trim().split('\n').filter(Boolean).map((l) => Number(l.split(' ')[0]));
      expect(pidsAfter).not.to.include(process.pid);
    });

    it('install and uninstall refuse (exit 3) naming this process, before touching any module', function () {
      const fd = openSync('/dev/kvm', 'r+');
      try {
        for (const args of [['install', '--variant', 'compat', '--dry-run'], ['uninstall', '--dry-run']]) {
          const r = script(...args);
          expect(r.code, args.join(' ')).to.equal(3);
          expect(r.stderr).to.match(/refused: KVM is in use/);
          expect(r.stderr).to.contain(`${process.pid} `);
          expect(r.stdout).not.to.match(/would run/);
        }
      } finally {
        closeSync(fd);
      }
    });
  });

  describe('status', function () {
    it('reports the loaded KVM modules as /sys/module shows them, and no ELISA variant without kvm_intel', function () {
      const r = script('status');
      expect(r.code, r.stderr).to.equal(0);
      const lines = r.stdout.trim().split('\n');
      for (const m of ['kvm', 'kvm_intel', 'kvm_amd', 'kvm_pvm']) {
        expect(lines.includes(`module: ${m}`), m).to.equal(existsSync(`/sys/module/${m}`));
      }
      const variantFile = '/sys/module/kvm_intel/parameters/elisa_variant';
      const expected = existsSync(variantFile) ? null : existsSync('/sys/module/kvm_intel') ? 'stock' : 'none';
      if (expected) expect(lines).to.include(`variant: ${expected}`);
    });
  });

  it('rejects unknown commands and options with exit code 2', function () {
    expect(script('frobnicate').code).to.equal(2);
    expect(script('build', '--colour', 'red').code).to.equal(2);
    expect(script('build', '--variant', 'turbo').code).to.equal(2);
  });
});
