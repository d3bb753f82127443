// The two roles of the in-VM negotiation, one guest vCPU per connection, in the original
// libelisa's order (docs/in-vm-protocol.md):
//   guest → manager   u64 vCPU id (1001/3/1), u64 requested GVA (gate entry page + 4 KiB)
//   (both)            the applications' own exchange, if any, on the same socket
//   manager           builds the contexts, then 1001/2/2 (list HPA) BEFORE 1001/2/1 (vCPU id)
//   manager → guest   u64 ack, u64 EPTP-list HPA
//   guest             1001/3/2 (activate)
//   manager           keeps the contexts until the guest closes the connection
// The hypercalls are interfaces: inside a VM they are VMCALLs, which only a host carrying the
// ELISA patch serves (on other hosts a VMCALL may never return), so this module never issues one.

import type { Socket } from 'node:net';
import { hex } from '../address';
import { NegotiationChannel } from './stream';
import {
  decodeGuestHello, decodeManagerReply, encodeGuestHello, encodeManagerReply, GUEST_HELLO_BYTES, type GuestHello,
  MANAGER_ACK, MANAGER_REPLY_BYTES, type ManagerReply, NegotiationError,
} from './wire';

/** The manager's negotiation hypercalls (group 1001/2). */
export interface ManagerHypercalls {
  /** 1001/2/2: names the EPTP list (by host-physical address) the next activation will use. */
  setRendezvousEptpListHpa(hpa: bigint): void | Promise<void>;
  /** 1001/2/1: names the guest vCPU allowed to activate it. */
  setRendezvousVcpuId(vcpuId: bigint): void | Promise<void>;
}

/** The guest's negotiation hypercalls (group 1001/3). */
export interface GuestHypercalls {
  /** 1001/3/1: this vCPU's identifier, opaque to the guest. */
  vcpuId(): bigint | Promise<bigint>;
  /** 1001/3/2: enables EPTP switching with the list the manager named for this vCPU. */
  activate(): void | Promise<void>;
}

/** What the manager built for one guest vCPU. */
export interface BuiltForGuest {
  /** Host-physical address of the vCPU's EPTP list. */
  readonly eptpListHpa: bigint;
  /** Frees the contexts (after the guest has gone; hardened hosts revoke first). */
  release(): void | Promise<void>;
}

/** Default bound on each read of a negotiation, in milliseconds. */
export const DEFAULT_NEGOTIATION_TIMEOUT_MS = 30_000;

function checkTimeout(timeoutMs: unknown): number {
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0) {
    throw new RangeError(`timeoutMs ${String(timeoutMs)} must be a finite number of milliseconds ≥ 0`);
  }
  return timeoutMs;
}

/** Options of the manager's side of one connection. */
export interface ServeOptions {
  readonly hypercalls: ManagerHypercalls;
  /**
   * Builds the gate and sub contexts for the guest's request. It may talk to the guest's
   * application on `channel` first (libelisa's server callback). Throwing refuses the guest: the
   * connection is closed and no hypercall is made.
   */
  build(hello: GuestHello, channel: NegotiationChannel): BuiltForGuest | Promise<BuiltForGuest>;
  /** Bound on each read before the reply, in ms (default DEFAULT_NEGOTIATION_TIMEOUT_MS). */
  readonly timeoutMs?: number;
}

/** One guest vCPU served by the manager. */
export interface ServedGuest {
  readonly hello: GuestHello;
  readonly eptpListHpa: bigint;
  /** Resolves once the guest closed the connection and the contexts were released. */
  readonly released: Promise<void>;
}

/**
 * Serves one guest vCPU's negotiation on `socket`. Resolves once the reply is sent (the guest
 * activates on its own); `released` follows when the guest disconnects. Rejects, closing the
 * connection, if the guest's messages are short, late, or its request cannot be built.
 */
export async function serveNegotiation(socket: Socket, options: ServeOptions): Promise<ServedGuest> {
  const timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_NEGOTIATION_TIMEOUT_MS);
  const channel = new NegotiationChannel(socket);
  let built: BuiltForGuest | undefined;
  try {
    const hello = decodeGuestHello(await channel.read(GUEST_HELLO_BYTES, 'the guest hello (vCPU id, requested GVA)', timeoutMs));
    built = await options.build(hello, channel);
    // libelisa's order: the list first, then the vCPU id that makes the rendezvous complete.
    await options.hypercalls.setRendezvousEptpListHpa(built.eptpListHpa);
    await options.hypercalls.setRendezvousVcpuId(hello.vcpuId);
    await channel.write(encodeManagerReply({ ack: MANAGER_ACK, eptpListHpa: built.eptpListHpa }));
    const contexts = built;
    const released = channel.closed().then(() => contexts.release());
    released.catch(() => undefined); // a failed release rejects `released` for whoever awaits it, never the process
    return { hello, eptpListHpa: built.eptpListHpa, released };
  } catch (err) {
    socket.destroy();
    if (built) await built.release();
    if (err instanceof NegotiationError) throw err;
    throw new NegotiationError(`guest refused: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** Options of the guest's side of one vCPU's negotiation. */
export interface NegotiateOptions {
  readonly hypercalls: GuestHypercalls;
  /** The middle page of the guest's gate entry region (entry page + 4 KiB), page-aligned. */
  readonly requestedGva: bigint;
  /** The guest application's own exchange with the manager's (libelisa's client callback). */
  exchange?(channel: NegotiationChannel): void | Promise<void>;
  /** Bound on the wait for the manager's reply, in ms (default DEFAULT_NEGOTIATION_TIMEOUT_MS). */
  readonly timeoutMs?: number;
}

/**
 * Negotiates one vCPU (the caller must be pinned to it: the id names this vCPU) and activates.
 * The connection must stay open while the guest uses the gate: closing it tells the manager to
 * free the contexts.
 */
export async function negotiateAsGuest(socket: Socket, options: NegotiateOptions): Promise<ManagerReply> {
  const timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_NEGOTIATION_TIMEOUT_MS);
  const gva = options.requestedGva;
  if (typeof gva !== 'bigint' || gva % 0x1000n !== 0n) {
    throw new RangeError(`requestedGva ${typeof gva === 'bigint' ? hex(gva) : String(gva)} must be a page-aligned bigint`);
  }
  const channel = new NegotiationChannel(socket);
  const vcpuId = await options.hypercalls.vcpuId();
  await channel.write(encodeGuestHello({ vcpuId, requestedGva: gva }));
  await options.exchange?.(channel);
  // The original client reads only the ack; reading the list HPA too keeps the stream clean for
  // anything the applications send later, and the original manager sends both.
  const reply = decodeManagerReply(await channel.read(MANAGER_REPLY_BYTES, "the manager's reply (ack, EPTP-list HPA)", timeoutMs));
  await options.hypercalls.activate();
  return reply;
}
