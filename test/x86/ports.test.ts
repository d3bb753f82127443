import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GuestPort, guestPortName } from '../../src/x86/ports';
import { packageRoot } from '../../src/x86/programs';

describe('guest ports', function () {
  it('ports.h and ports.ts define the same ports, name for name', function () {
    const header = readFileSync(join(packageRoot(), 'native/guest/include/elisa/ports.h'), 'utf8');
    const fromC: Record<string, number> = {};
    for (const m of header.matchAll(/^#define ELISA_PORT_([A-Z0-9_]+)\s+(0x[0-9a-fA-F]+|\d+)\s*$/gm)) {
      const camel = m[1]!.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
      fromC[camel] = Number(m[2]);
    }
    expect(Object.keys(fromC)).to.have.length.greaterThan(4);
    expect(fromC).to.deep.equal({ ...GuestPort });
  });

  it('port numbers are distinct, so each names one purpose', function () {
    const values = Object.values(GuestPort);
    expect(new Set(values).size).to.equal(values.length);
    expect(guestPortName(0x520)).to.equal('exception');
    expect(guestPortName(0x3f8)).to.equal(undefined);
  });
});
