// The guest runtime's printf against glibc's: the same cases (native/guest/examples/
// printf-cases.h) printed in a guest and by a host program built here with gcc.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runGuestProgram } from '../../src/x86/machine';
import { packageRoot } from '../../src/x86/programs';
import { requireKvm } from '../support/kvm';

describe('guest printf', function () {
  before(function () { requireKvm(this); });

  it('prints %d %i %u %x %X %lx %llx %ld %zu %s %c %p %% with flags and widths exactly as glibc does', async function () {
    const dir = mkdtempSync(join(tmpdir(), 'elisa-printf-'));
    let expected: string;
    try {
      writeFileSync(join(dir, 'host.c'), '#include <stdio.h>\n#include <stddef.h>\n' +
        "#define CASE(...) do { printf(__VA_ARGS__); putchar('\\n'); } while (0)\n" +
        'int main(void) {\n#include "printf-cases.h"\nreturn 0;\n}\n');
      execFileSync('gcc', ['-w', '-I', join(packageRoot(), 'native/guest/examples'), join(dir, 'host.c'), '-o', join(dir, 'host')]);
      expected = execFileSync(join(dir, 'host'), { encoding: 'utf8' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(expected.split('\n')).to.have.length.greaterThan(6);
    const r = await runGuestProgram('printf');
    expect(r.console).to.equal(expected);
  });
});
