// Every `elisa` subcommand, in the order `elisa --help` lists them.
import type { CliCommand } from '../command';
import { kernelCommand } from './kernel';

export const commands: CliCommand[] = [
  kernelCommand,
];
