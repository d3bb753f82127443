// Every `elisa` subcommand, in the order `elisa --help` lists them.
import type { CliCommand } from '../command';
import { doctor } from './doctor';

export const commands: CliCommand[] = [
  doctor,
];
