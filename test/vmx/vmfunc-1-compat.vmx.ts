// The vmfunc backend on the compat ELISA modules (swapped in by the suite).
import { vmfuncSuite } from './vmfunc-suite';

vmfuncSuite('compat');
