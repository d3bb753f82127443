// Running an app without blocking the event loop: host mode drives every context vCPU of
// a guest vCPU synchronously on one thread (KVM charges an RCU synchronisation when a
// vCPU fd moves between threads), so the asynchronous form runs the whole app — VMs,
// manager and all — on a worker thread of its own.
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { AppName, AppOptions, AppReport } from './apps';

/** An app run failed inside the worker; `name` is the original error class. */
export class AppRunError extends Error {
  /** Builds it from the worker's message. */
  constructor(readonly originalName: string, message: string) {
    super(message);
    this.name = originalName;
  }
}

/** runApp on a worker thread: resolves with the same report, rejects with the worker's error. */
export function runAppAsync(app: AppName, options: AppOptions = {}): Promise<AppReport> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(join(__dirname, 'app-worker.js'), { workerData: { app, options } });
    let settled = false;
    worker.once('message', (m: { ok: boolean; report?: string; name?: string; message?: string }) => {
      settled = true;
      if (m.ok) resolve(JSON.parse(m.report!, (_k, v) => (v && typeof v === 'object' && '$bigint' in v ? BigInt(v.$bigint) : v)) as AppReport);
      else reject(new AppRunError(m.name ?? 'Error', m.message ?? 'app run failed'));
    });
    worker.once('error', (err) => { settled = true; reject(err); });
    worker.once('exit', (code) => { if (!settled) reject(new Error(`app worker exited with code ${code} before reporting`)); });
  });
}
