// Command-line parsing shared by the `elisa` subcommands: node's util.parseArgs in strict
// mode (unknown options, missing values and stray arguments are refused), with its errors
// turned into UsageError so every command reports them the same way, plus the value
// checks several commands need.
import { parseArgs } from 'node:util';
import { UsageError } from './command';
import type { BackendChoice } from '../elisa/backends/backend';

/** The options a command accepts: name (without `--`) → string-valued or a flag. */
export type OptionSpec = Record<string, { type: 'string' | 'boolean' }>;

/** Parsed values: strings for string options, booleans for flags; absent when not given. */
export type OptionValues<S extends OptionSpec> = {
  [K in keyof S]?: S[K]['type'] extends 'boolean' ? boolean : string;
};

/**
 * Parses `argv` against `options`, allowing at most `maxPositionals` plain arguments.
 * Throws UsageError naming the offending option or argument.
 */
export function parseCommandLine<S extends OptionSpec>(
  argv: string[], options: S, maxPositionals = 0,
): { values: OptionValues<S>; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
  } catch (err) {
    // parseArgs' errors carry a code and name the option in quotes: say it our way.
    const code = (err as { code?: string }).code;
    const message = err instanceof Error ? err.message : String(err);
    const option = /'(-[^']*)'/.exec(message)?.[1] ?? '';
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option '${option}'`);
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const name = /--([a-z][\w-]*)/i.exec(message)?.[0] ?? option;
      throw new UsageError(options[name.replace(/^--/, '')]?.type === 'boolean' ? `${name} takes no value` : `${name} needs a value`);
    }
    throw new UsageError(message);
  }
  if (parsed.positionals.length > maxPositionals) {
    const extra = parsed.positionals.slice(maxPositionals);
    throw new UsageError(maxPositionals === 0
      ? `unexpected argument '${extra[0]}'`
      : `too many arguments: ${parsed.positionals.map((p) => `'${p}'`).join(', ')} (at most ${maxPositionals})`);
  }
  return { values: parsed.values as OptionValues<S>, positionals: parsed.positionals };
}

/** An integer option within [min, max], or `fallback` when it was not given. */
export function integerOption(name: string, raw: string | undefined, min: number, max: number, fallback: number): number;
export function integerOption(name: string, raw: string | undefined, min: number, max: number): number | undefined;
export function integerOption(name: string, raw: string | undefined, min: number, max: number, fallback?: number): number | undefined {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer in ${min}..${max}, got '${raw}'`);
  }
  return n;
}

/** The `--backend` option: auto (default), emulated or vmfunc. */
export function backendOption(raw: string | undefined): BackendChoice {
  if (raw === undefined) return 'auto';
  if (raw !== 'auto' && raw !== 'emulated' && raw !== 'vmfunc') throw new UsageError(`--backend: '${raw}' is not auto, emulated or vmfunc`);
  return raw;
}
