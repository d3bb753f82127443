// Worker-thread entry of runAppAsync (src/elisa/host/async.ts): runs one app with the
// synchronous loop on this worker's thread, so the main event loop stays free, and
// posts the report back (bigints as { $bigint: "…" }).
import { parentPort, workerData } from 'node:worker_threads';
import { runApp, type AppName, type AppOptions } from './apps';

const { app, options } = workerData as { app: AppName; options: AppOptions };
try {
  const report = runApp(app, options);
  parentPort!.postMessage({ ok: true, report: JSON.stringify(report, (_k, v) => (typeof v === 'bigint' ? { $bigint: v.toString() } : v)) });
} catch (err) {
  parentPort!.postMessage({ ok: false, name: err instanceof Error ? err.name : 'Error', message: err instanceof Error ? err.message : String(err) });
}
