// Every `elisa` subcommand, in the order `elisa --help` lists them.
import type { CliCommand } from '../command';
import { inspect } from './inspect';
import { run } from './run';

export const commands: CliCommand[] = [
  inspect,
  run,
];
