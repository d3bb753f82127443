// decodeExit on kvm_run images built byte by byte (offsets checked against C in
// layout.test.ts), for the exits a test guest cannot provoke on this host.
import { expect } from 'chai';
import {
  decodeExit, describeExit, ExitReason, InterruptCause, InternalErrorSuberror, KvmRun, SystemEventType,
} from '../../src/kvm/index';

function image(reason: ExitReason | number, fill: (v: DataView) => void = () => undefined): DataView {
  const v = new DataView(new ArrayBuffer(4096));
  v.setUint32(KvmRun.exit_reason, reason, true);
  fill(v);
  return v;
}

describe('exit decoding (synthetic kvm_run)', function () {
  it('FAIL_ENTRY carries the hardware reason and CPU', function () {
    const e = decodeExit(image(ExitReason.FAIL_ENTRY, (v) => {
      v.setBigUint64(KvmRun.fail_entry_reason, 0x80000021n, true);
      v.setUint32(KvmRun.fail_entry_cpu, 3, true);
    }));
    expect(e).to.deep.equal({ kind: 'failEntry', reason: ExitReason.FAIL_ENTRY, hardwareReason: 0x80000021n, cpu: 3 });
    expect(describeExit(e)).to.equal('fail entry (hardware reason 0x80000021)');
  });

  it('SYSTEM_EVENT carries the type and ndata words', function () {
    const e = decodeExit(image(ExitReason.SYSTEM_EVENT, (v) => {
      v.setUint32(KvmRun.system_event_type, SystemEventType.CRASH, true);
      v.setUint32(KvmRun.system_event_ndata, 2, true);
      v.setBigUint64(KvmRun.system_event_data, 7n, true);
      v.setBigUint64(KvmRun.system_event_data + 8, 9n, true);
    }));
    expect(e).to.deep.equal({ kind: 'systemEvent', reason: ExitReason.SYSTEM_EVENT, type: SystemEventType.CRASH, data: [7n, 9n] });
  });

  it('HYPERCALL decodes nr and args, and setResult writes kvm_run.hypercall.ret', function () {
    const v = image(ExitReason.HYPERCALL, (w) => {
      w.setBigUint64(KvmRun.hypercall_nr, 1001n, true);
      for (let i = 0; i < 6; i++) w.setBigUint64(KvmRun.hypercall_args + 8 * i, BigInt(i + 1), true);
    });
    const e = decodeExit(v);
    expect(e.kind).to.equal('hypercall');
    if (e.kind !== 'hypercall') return;
    expect([e.nr, e.args]).to.deep.equal([1001n, [1n, 2n, 3n, 4n, 5n, 6n]]);
    e.setResult(-1000n);
    expect(v.getBigInt64(KvmRun.hypercall_ret, true)).to.equal(-1000n);
  });

  it('INTERNAL_ERROR without the instruction-bytes flag has no instructionBytes; ndata is clamped to 16', function () {
    const e = decodeExit(image(ExitReason.INTERNAL_ERROR, (v) => {
      v.setUint32(KvmRun.internal_suberror, InternalErrorSuberror.DELIVERY_EV, true);
      v.setUint32(KvmRun.internal_ndata, 1000, true);
    }));
    expect(e.kind).to.equal('internalError');
    if (e.kind !== 'internalError') return;
    expect(e.suberror).to.equal(InternalErrorSuberror.DELIVERY_EV);
    expect(e.data).to.have.length(16);
    expect(e.instructionBytes).to.equal(undefined);
  });

  it('emulation failure with the flag exposes insn_size bytes as a view (no copy)', function () {
    const v = image(ExitReason.INTERNAL_ERROR, (w) => {
      w.setUint32(KvmRun.internal_suberror, InternalErrorSuberror.EMULATION, true);
      w.setUint32(KvmRun.internal_ndata, 3, true);
      w.setBigUint64(KvmRun.emulation_failure_flags, 1n, true);
      w.setUint8(KvmRun.emulation_failure_insn_size, 3);
      [0x0f, 0x01, 0xd4].forEach((b, i) => w.setUint8(KvmRun.emulation_failure_insn_bytes + i, b));
    });
    const e = decodeExit(v);
    if (e.kind !== 'internalError') throw new Error(e.kind);
    expect([...e.instructionBytes!]).to.deep.equal([0x0f, 0x01, 0xd4]);
    v.setUint8(KvmRun.emulation_failure_insn_bytes, 0x90);
    expect(e.instructionBytes![0]).to.equal(0x90);
    expect(describeExit(e)).to.equal('internal error suberror EMULATION instruction 9001d4');
  });

  it('IO data outside the mapping is refused instead of read', function () {
    expect(() => decodeExit(image(ExitReason.IO, (v) => {
      v.setUint8(KvmRun.io_size, 4);
      v.setUint32(KvmRun.io_count, 1000, true);
      v.setBigUint64(KvmRun.io_data_offset, 4000n, true);
    }))).to.throw(RangeError, /outside kvm_run/);
  });

  it('INTR carries the cause; other reasons decode as unknown with their name', function () {
    expect(decodeExit(image(ExitReason.INTR), InterruptCause.KICK)).to.deep.equal(
      { kind: 'intr', reason: ExitReason.INTR, cause: InterruptCause.KICK, timedOut: false });
    const u = decodeExit(image(ExitReason.IRQ_WINDOW_OPEN));
    expect(u).to.deep.include({ kind: 'unknown', reason: 7, name: 'IRQ_WINDOW_OPEN' });
    expect(decodeExit(image(999))).to.deep.include({ kind: 'unknown', name: 'exit reason 999' });
    const hw = decodeExit(image(ExitReason.UNKNOWN, (v) => v.setBigUint64(KvmRun.hw_exit_reason, 0x30n, true)));
    expect(hw).to.deep.include({ kind: 'unknown', name: 'UNKNOWN', hardwareReason: 0x30n });
  });
});
