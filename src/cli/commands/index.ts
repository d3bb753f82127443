// Every `elisa` subcommand, in the order `elisa --help` lists them.
import type { CliCommand } from '../command';
import { execCommand } from './exec';

export const commands: CliCommand[] = [
  execCommand,
];
