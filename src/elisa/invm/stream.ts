// Exact-length reads over a TCP socket, for the negotiation and the applications' own exchange on
// the same connection (libelisa lets both sides' callbacks talk on the negotiation socket).

import type { Socket } from 'node:net';
import { NegotiationError } from './wire';

/** Reads and writes on one negotiation connection; owns the socket's 'data' events. */
export class NegotiationChannel {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private readonly endWaiters: (() => void)[] = [];

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.poke();
    });
    const finish = (): void => {
      this.ended = true;
      this.poke();
      for (const w of this.endWaiters.splice(0)) w();
    };
    socket.on('end', finish);
    socket.on('close', finish);
    socket.on('error', (err) => {
      this.failure = err;
      finish();
    });
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Bytes received and not yet read. */
  get pending(): number {
    return this.buffered;
  }

  /**
   * Resolves with exactly `length` bytes; rejects with a NegotiationError that names `what` if the
   * peer closes first or nothing completes within `timeoutMs` milliseconds.
   */
  async read(length: number, what: string, timeoutMs: number): Promise<Buffer> {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`length ${String(length)} must be an integer ≥ 0`);
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < length) {
      if (this.ended) {
        const why = this.failure ? `: ${this.failure.message}` : '';
        throw new NegotiationError(`peer closed the connection after ${this.buffered} of the ${length} bytes of ${what}${why}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new NegotiationError(`${what}: ${this.buffered} of ${length} bytes arrived within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.take(length);
  }

  private take(length: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = Buffer.from(all.subarray(0, length));
    const rest = all.subarray(length);
    this.chunks.length = 0;
    if (rest.length > 0) this.chunks.push(rest);
    this.buffered = rest.length;
    return out;
  }

  /** Sends bytes; resolves once the kernel took them. */
  write(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (err) => (err ? reject(new NegotiationError(`write failed: ${err.message}`)) : resolve()));
    });
  }

  /**
   * Resolves when the peer closes its side. Whatever it sends meanwhile is discarded (the original
   * manager holds the contexts until the guest goes away, whatever the guest writes).
   */
  closed(): Promise<void> {
    this.chunks.length = 0;
    this.buffered = 0;
    this.socket.on('data', () => {
      this.chunks.length = 0;
      this.buffered = 0;
    });
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => this.endWaiters.push(resolve));
  }
}
