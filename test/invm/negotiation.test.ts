// The in-VM negotiation (docs/in-vm-protocol.md): the codec against fixed byte sequences and a C
// peer that moves u64s with plain write()/read() the way the original libelisa does, and both
// roles over loopback TCP. The hypercalls are the roles' interface to the host; here they are
// recorded, because a VMCALL on this project's machines never returns. Issuing them for real is
// the emulated VT-x host's job.
import { expect } from 'chai';
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  decodeGuestHello, decodeManagerReply, encodeGuestHello, encodeManagerReply, negotiateAsGuest, NegotiationError,
  serveNegotiation, type BuiltForGuest, type ServedGuest, type ServeOptions,
} from '../../src/elisa/invm';

const U64_MAX = (1n << 64n) - 1n;

describe('in-VM negotiation wire format', () => {
  it('guest hello: u64 vCPU id then u64 GVA, little-endian (fixed bytes)', () => {
    const bytes = encodeGuestHello({ vcpuId: 0x0123456789abcdefn, requestedGva: 0x401000n });
    expect(bytes.toString('hex')).to.equal('efcdab8967452301' + '0010400000000000');
    expect(decodeGuestHello(Buffer.from('ffffffffffffffff00f0ffffff7f0000', 'hex')))
      .to.deep.equal({ vcpuId: U64_MAX, requestedGva: 0x7ffffffff000n });
  });

  it('manager reply: u64 ack then u64 EPTP-list HPA (fixed bytes)', () => {
    expect(encodeManagerReply({ ack: 0n, eptpListHpa: 0x12345000n }).toString('hex'))
      .to.equal('0000000000000000' + '0050341200000000');
    expect(decodeManagerReply(Buffer.from('5a5a5a5a5a5a5a5a0010000000010000', 'hex')))
      .to.deep.equal({ ack: 0x5a5a5a5a5a5a5a5an, eptpListHpa: 0x10000001000n });
  });

  it('round-trips every u64 pair, and byte i of a value lands at offset i (property)', () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: U64_MAX }), fc.bigInt({ min: 0n, max: U64_MAX }), (a, b) => {
      const hello = encodeGuestHello({ vcpuId: a, requestedGva: b });
      for (let i = 0; i < 8; i++) {
        expect(hello[i]).to.equal(Number((a >> BigInt(8 * i)) & 0xffn));
        expect(hello[8 + i]).to.equal(Number((b >> BigInt(8 * i)) & 0xffn));
      }
      expect(decodeGuestHello(hello)).to.deep.equal({ vcpuId: a, requestedGva: b });
      expect(decodeManagerReply(encodeManagerReply({ ack: a, eptpListHpa: b }))).to.deep.equal({ ack: a, eptpListHpa: b });
    }));
  });

  it('refuses values that are not u64 and messages that are not 16 bytes, naming them', () => {
    expect(() => encodeGuestHello({ vcpuId: -1n, requestedGva: 0n })).to.throw(RangeError, /vcpuId -0x1 does not fit in a u64/);
    expect(() => encodeGuestHello({ vcpuId: 0n, requestedGva: 1n << 64n })).to.throw(RangeError, /requestedGva 0x10000000000000000/);
    expect(() => encodeManagerReply({ ack: 0n, eptpListHpa: 4096 as unknown as bigint })).to.throw(TypeError, /eptpListHpa must be a bigint/);
    expect(() => decodeGuestHello(Buffer.alloc(15))).to.throw(NegotiationError, /guest hello is 15 bytes/);
    expect(() => decodeManagerReply(Buffer.alloc(17))).to.throw(NegotiationError, /manager reply is 17 bytes/);
  });
});

/** Hypercalls of both roles, in the order the host would see them. */
class HypercallLog {
  readonly calls: string[] = [];
  manager = {
    setRendezvousEptpListHpa: (hpa: bigint): void => { this.calls.push(`manager: list ${hpa.toString(16)}`); },
    setRendezvousVcpuId: (id: bigint): void => { this.calls.push(`manager: vcpu ${id.toString(16)}`); },
  };
  guest = (id: bigint) => ({
    vcpuId: (): bigint => { this.calls.push('guest: vcpu id'); return id; },
    activate: (): void => { this.calls.push('guest: activate'); },
  });
}

interface Listening { server: Server; port: number; served: Promise<ServedGuest>[] }

async function listen(options: ServeOptions): Promise<Listening> {
  const served: Promise<ServedGuest>[] = [];
  const server = createServer((socket) => {
    const p = serveNegotiation(socket, options);
    p.catch(() => undefined);
    served.push(p);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, served };
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

function built(hpa: bigint, log: string[]): BuiltForGuest {
  return { eptpListHpa: hpa, release: () => { log.push('manager: release'); } };
}

describe('in-VM negotiation roles over loopback TCP', () => {
  const open: Server[] = [];
  afterEach(() => { for (const s of open.splice(0)) s.close(); });

  it("runs libelisa's order: vCPU id, hello, build, list before vCPU, reply, activate; release only after the guest closes", async () => {
    const log = new HypercallLog();
    const l = await listen({
      hypercalls: log.manager,
      build: (hello) => { log.calls.push(`manager: build gva ${hello.requestedGva.toString(16)}`); return built(0xabc000n, log.calls); },
    });
    open.push(l.server);
    const sock = await dial(l.port);
    const reply = await negotiateAsGuest(sock, { hypercalls: log.guest(0x77n), requestedGva: 0x402000n });
    expect(reply).to.deep.equal({ ack: 0n, eptpListHpa: 0xabc000n });
    const served = await l.served[0]!;
    expect(served.hello).to.deep.equal({ vcpuId: 0x77n, requestedGva: 0x402000n });
    expect(log.calls).to.deep.equal([
      'guest: vcpu id', 'manager: build gva 402000', 'manager: list abc000', 'manager: vcpu 77', 'guest: activate',
    ]);
    await new Promise((r) => setTimeout(r, 50));
    expect(log.calls).to.not.include('manager: release');
    sock.end();
    await served.released;
    expect(log.calls.at(-1)).to.equal('manager: release');
  });

  it("carries the applications' own exchange on the same socket, between hello and reply", async () => {
    const log = new HypercallLog();
    const l = await listen({
      hypercalls: log.manager,
      build: async (_hello, ch) => {
        const asked = await ch.read(5, 'app request', 2000);
        await ch.write(Buffer.from(`got ${asked.toString()}`));
        return built(0x1000n, log.calls);
      },
    });
    open.push(l.server);
    const sock = await dial(l.port);
    let answer = '';
    await negotiateAsGuest(sock, {
      hypercalls: log.guest(1n), requestedGva: 0x1000n,
      exchange: async (ch) => { await ch.write(Buffer.from('hello')); answer = (await ch.read(9, 'app answer', 2000)).toString(); },
    });
    expect(answer).to.equal('got hello');
    sock.destroy();
    await (await l.served[0]!).released;
  });

  it('a guest that sends 12 of 16 bytes and closes is refused before any build or hypercall', async () => {
    const log = new HypercallLog();
    let builds = 0;
    const l = await listen({ hypercalls: log.manager, build: () => { builds++; return built(0n, log.calls); } });
    open.push(l.server);
    const sock = await dial(l.port);
    sock.end(Buffer.alloc(12));
    await until(() => l.served.length === 1);
    try {
      await l.served[0]!;
      expect.fail('serveNegotiation resolved for a truncated hello');
    } catch (err) {
      expect(err).to.be.instanceOf(NegotiationError);
      expect((err as Error).message).to.match(/closed the connection after 12 of the 16 bytes of the guest hello/);
    }
    expect(builds).to.equal(0);
    expect(log.calls).to.deep.equal([]);
  });

  it('a silent guest times out; a refused build makes no hypercall and closes the connection', async () => {
    const log = new HypercallLog();
    const l = await listen({ hypercalls: log.manager, timeoutMs: 150, build: () => { throw new Error('GVA 0x0 leaves no room'); } });
    open.push(l.server);
    const silent = await dial(l.port);
    await until(() => l.served.length === 1);
    const t0 = Date.now();
    try { await l.served[0]!; expect.fail('resolved'); } catch (err) {
      expect((err as Error).message).to.match(/0 of 16 bytes arrived within 150 ms/);
    }
    expect(Date.now() - t0).to.be.lessThan(2000);
    silent.destroy();

    const refused = await dial(l.port);
    const closed = new Promise<void>((resolve) => refused.on('close', () => resolve()));
    refused.write(encodeGuestHello({ vcpuId: 5n, requestedGva: 0n }));
    await until(() => l.served.length === 2);
    try { await l.served[1]!; expect.fail('resolved'); } catch (err) {
      expect(err).to.be.instanceOf(NegotiationError);
      expect((err as Error).message).to.match(/guest refused: GVA 0x0 leaves no room/);
    }
    await closed;
    expect(log.calls).to.deep.equal([]);
  });

  it('refuses bad options before touching the socket', async () => {
    const log = new HypercallLog();
    const sock = connect(1, '127.0.0.1');
    sock.on('error', () => undefined);
    try {
      await negotiateAsGuest(sock, { hypercalls: log.guest(1n), requestedGva: 0x1001n });
      expect.fail('accepted an unaligned GVA');
    } catch (err) { expect((err as Error).message).to.match(/requestedGva 0x1001 must be a page-aligned bigint/); }
    try {
      await negotiateAsGuest(sock, { hypercalls: log.guest(1n), requestedGva: 0x1000n, timeoutMs: Number.NaN });
      expect.fail('accepted a NaN timeout');
    } catch (err) { expect((err as Error).message).to.match(/timeoutMs NaN must be a finite number/); }
    sock.destroy();
    expect(log.calls).to.deep.equal([]);
  });
});

describe('in-VM negotiation against a C peer speaking like the original libelisa', function () {
  this.timeout(30_000);
  let dir = '';
  let peer = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'elisa-c-peer-'));
    peer = join(dir, 'c-peer');
    execFileSync('gcc', ['-O1', '-Wall', '-Werror', '-o', peer, join(__dirname, '../../../test/invm/c-peer.c')]);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function lines(child: ChildProcessWithoutNullStreams): () => Promise<string> {
    let buf = '';
    const queue: string[] = [];
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) { queue.push(buf.slice(0, i)); buf = buf.slice(i + 1); }
    });
    return async () => { await until(() => queue.length > 0, 10_000); return queue.shift()!; };
  }

  it('our manager serves a C guest that reads only the ack, and keeps the contexts until it exits', async () => {
    const log = new HypercallLog();
    const l = await listen({ hypercalls: log.manager, build: () => built(0xfeed000n, log.calls) });
    try {
      const child = spawn(peer, ['client', String(l.port), '0xdeadbeefcafe', '0x7f0000001000']);
      const next = lines(child);
      expect(await next()).to.equal('ack=0x0');
      const served = await l.served[0]!;
      expect(served.hello).to.deep.equal({ vcpuId: 0xdeadbeefcafen, requestedGva: 0x7f0000001000n });
      expect(log.calls).to.deep.equal(['manager: list feed000', 'manager: vcpu deadbeefcafe']);
      child.stdin.end();
      await served.released;
      expect(log.calls.at(-1)).to.equal('manager: release');
    } finally { l.server.close(); }
  });

  it('our guest negotiates with a C manager: the C side reads our exact values, we read its ack and HPA', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => { const p = (s.address() as AddressInfo).port; s.close(() => resolve(p)); });
    });
    const child = spawn(peer, ['server', String(port), '0x1234567000']);
    const next = lines(child);
    expect(await next()).to.equal('listening');
    const log = new HypercallLog();
    const sock = await dial(port);
    const reply = await negotiateAsGuest(sock, { hypercalls: log.guest(0xabcdef0123n), requestedGva: 0x555555556000n });
    expect(await next()).to.equal('vcpu=0xabcdef0123 gva=0x555555556000');
    expect(reply).to.deep.equal({ ack: 0x5a5a5a5a5a5a5a5an, eptpListHpa: 0x1234567000n });
    expect(log.calls).to.deep.equal(['guest: vcpu id', 'guest: activate']);
    sock.end();
    expect(await next()).to.equal('closed');
  });
});
