// The in-VM deployment's TCP negotiation, byte for byte as the original C libelisa speaks it
// (docs/in-vm-protocol.md). Each message is a pair of raw u64 values in the sender's byte order;
// every ELISA host is x86-64, so that is little-endian, and we fix it to little-endian so that a
// manager and a guest on any host agree.

import { hex, U64 } from '../address';

/** The port libelisa's examples use (elisa-util-exec `-p 10000`). */
export const DEFAULT_NEGOTIATION_PORT = 10000;

/** Bytes of the guest's opening message: u64 vCPU id, u64 requested GVA. */
export const GUEST_HELLO_BYTES = 16;

/** Bytes of the manager's reply: u64 acknowledgement, u64 EPTP-list host-physical address. */
export const MANAGER_REPLY_BYTES = 16;

/**
 * The value our manager sends as acknowledgement. The original sends whatever its stack held
 * (the value is never read); a fixed zero makes our side reproducible.
 */
export const MANAGER_ACK = 0n;

/** What the guest tells the manager first. */
export interface GuestHello {
  /** What the guest's vCPU-id hypercall (1001/3/1) returned: opaque to the guest. */
  readonly vcpuId: bigint;
  /**
   * Where the gate code must appear in the guest's address space: the *middle* page of the
   * guest's 3-page gate entry region (entry page + 4 KiB).
   */
  readonly requestedGva: bigint;
}

/** What the manager answers once the contexts are built and the rendezvous is set. */
export interface ManagerReply {
  /** Not meaningful (the original sends an uninitialised value; ours is MANAGER_ACK). */
  readonly ack: bigint;
  /** Host-physical address of the guest vCPU's EPTP list (the original client does not read it). */
  readonly eptpListHpa: bigint;
}

/** A malformed or unacceptable negotiation message. */
export class NegotiationError extends Error {
  override readonly name = 'NegotiationError';
}

function checkU64(value: unknown, what: string): bigint {
  if (typeof value !== 'bigint') throw new TypeError(`${what} must be a bigint, got ${typeof value}`);
  if (value < 0n || value > U64) throw new RangeError(`${what} ${hex(value)} does not fit in a u64`);
  return value;
}

function pair(a: bigint, b: bigint): Buffer {
  const out = Buffer.alloc(16);
  out.writeBigUInt64LE(a, 0);
  out.writeBigUInt64LE(b, 8);
  return out;
}

function unpair(bytes: Uint8Array, what: string): [bigint, bigint] {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  if (bytes.length !== 16) throw new NegotiationError(`${what} is ${bytes.length} bytes; the protocol sends exactly 16`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, 16);
  return [view.getBigUint64(0, true), view.getBigUint64(8, true)];
}

/** The 16 bytes a guest sends first. */
export function encodeGuestHello(hello: GuestHello): Buffer {
  return pair(checkU64(hello.vcpuId, 'vcpuId'), checkU64(hello.requestedGva, 'requestedGva'));
}

/**
 * Parses the guest's first 16 bytes. No policy: the requested GVA comes from an untrusted guest
 * and is checked by the context builder, the one place that knows the layout around it.
 */
export function decodeGuestHello(bytes: Uint8Array): GuestHello {
  const [vcpuId, requestedGva] = unpair(bytes, 'guest hello');
  return { vcpuId, requestedGva };
}

/** The 16 bytes a manager answers. */
export function encodeManagerReply(reply: ManagerReply): Buffer {
  return pair(checkU64(reply.ack, 'ack'), checkU64(reply.eptpListHpa, 'eptpListHpa'));
}

/** Parses the manager's 16-byte answer. */
export function decodeManagerReply(bytes: Uint8Array): ManagerReply {
  const [ack, eptpListHpa] = unpair(bytes, 'manager reply');
  return { ack, eptpListHpa };
}
