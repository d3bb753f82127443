// Every `elisa` subcommand, in the order `elisa --help` lists them.
import type { CliCommand } from '../command';
import { doctor } from './doctor';
import { execCommand } from './exec';
import { inspect } from './inspect';

export const commands: CliCommand[] = [
  doctor,
  execCommand,
  inspect,
];
