// The vmfunc backend on the hardened ELISA modules (swapped in by the suite): the shared
// behaviour suite (test/shared/elisa-behaviour.ts), then the vmfunc-only checks.
import { vmfuncSuite } from './vmfunc-suite';

vmfuncSuite('hardened');
