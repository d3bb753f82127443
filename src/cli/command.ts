// The contract every `elisa` subcommand fulfils. One file per command under
// src/cli/commands/, listed once in src/cli/commands/index.ts.

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

export interface CliCommand {
  /** The word after `elisa`. */
  name: string;
  /** One line for `elisa --help`. */
  summary: string;
  /** Full usage text for `elisa NAME --help`. */
  usage: string;
  /** Runs the command with the arguments after its name; resolves to the exit code. */
  run(argv: string[], io: CliIo): Promise<number>;
}

/** Thrown for bad command-line input: printed with the usage, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}
