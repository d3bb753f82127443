// Every `elisa` subcommand, in the order `elisa --help` lists them.
import type { CliCommand } from '../command';
import { doctor } from './doctor';
import { execCommand } from './exec';

export const commands: CliCommand[] = [
  doctor,
  execCommand,
];
