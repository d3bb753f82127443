// Every `elisa` subcommand, in the order `elisa --help` lists them.
import type { CliCommand } from '../command';
import { bench } from './bench';
import { doctor } from './doctor';
import { execCommand } from './exec';
import { inspect } from './inspect';
import { run } from './run';

export const commands: CliCommand[] = [
  doctor,
  execCommand,
  inspect,
  run,
  bench,
];
