// Host mode in one import: the manager and guests (host.ts), the apps, running them on a
// worker thread, the round-trip benchmark, and the backends' public parts.
export * from './host';
export { APP_NAMES, ARGS_VALUES, argsExpected, readGuestU64s, runApp, setGuestU64, SHM_GVA, type AppName, type AppOptions, type AppReport } from './host/apps';
export { AppRunError, runAppAsync } from './host/async';
export { BENCH_MAX_ITERATIONS, distribution, formatBench, histogramSvg, measureRoundTrips, type BenchOptions, type BenchResult, type Distribution } from './host/bench';
export {
  BackendUnavailableError, emulatedAvailability, registerVmfuncBackend, vmfuncAvailability,
  type Availability, type Backend, type BackendAttachment, type BackendChoice, type BackendName, type VmfuncProvider,
} from './backends/backend';
export { ContextExitError, EmulatedBackend, slotsFromEpt, vmfuncOutcome, VMFUNC_TRAP_PORT } from './backends/emulated';
