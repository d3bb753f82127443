// The vmfunc backend on the hardened ELISA modules (swapped in by the suite).
import { vmfuncSuite } from './vmfunc-suite';

vmfuncSuite('hardened');
