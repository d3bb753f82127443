// Every `elisa` subcommand, in the order `elisa --help` lists them.
import type { CliCommand } from '../command';
import { bench } from './bench';
import { inspect } from './inspect';
import { run } from './run';

export const commands: CliCommand[] = [
  inspect,
  run,
  bench,
];
