// Host-wide serialisation of compat activations. The compat patch keeps ONE rendezvous
// (vCPU id + list HPA) for the whole host: two managers negotiating at once would hand a
// guest the other's list. Within this process attach() is synchronous; across processes
// a lock file created with O_EXCL holds the owner's PID, and a lock whose owner is gone
// is taken over.
import { closeSync, existsSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The lock file (tmpfs on most systems; root-owned when the backend runs as root). */
export const RENDEZVOUS_LOCK = join(existsSync('/run') ? '/run' : tmpdir(), 'elisa-vmfunc-rendezvous.lock');

function ownerAlive(path: string): boolean {
  try {
    const pid = Number(readFileSync(path, 'utf8').trim());
    if (!Number.isSafeInteger(pid) || pid <= 0) return false;
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Runs `fn` holding the host-wide rendezvous lock; waits up to `timeoutMs` for it. */
export function withRendezvousLock<T>(fn: () => T, timeoutMs = 10_000, path = RENDEZVOUS_LOCK): T {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let fd: number | undefined;
    try {
      fd = openSync(path, 'wx', 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`cannot create the rendezvous lock ${path}: ${(err as Error).message}`);
      if (!ownerAlive(path)) { try { unlinkSync(path); } catch { /* raced */ } continue; }
      if (Date.now() > deadline) throw new Error(`the compat rendezvous is held by another process (${path}) for more than ${timeoutMs} ms`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
      continue;
    }
    try {
      try { writeSync(fd, `${process.pid}\n`); } finally { closeSync(fd); }
      return fn();
    } finally {
      try { unlinkSync(path); } catch { /* already gone */ }
    }
  }
}
