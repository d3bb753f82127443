// Every `elisa` subcommand, in the order `elisa --help` lists them.
import type { CliCommand } from '../command';

export const commands: CliCommand[] = [
];
