// The one channel between the in-host suite (inside the emulated VT-x host) and the
// harness on the real machine: lines on the emulated serial console that contain
// "ELISA-VMX: ". Kernel messages may share the console, so a marker is recognised
// anywhere in a line, and titles and messages travel as JSON strings (one line each,
// any character allowed). Formats:
//   ELISA-VMX: PASS "<full title>" <ms>ms
//   ELISA-VMX: FAIL "<full title>": "<message and stack>"
//   ELISA-VMX: SKIP "<full title>"
//   ELISA-VMX: DONE <passing> <failing> <pending>
//   ELISA-VMX: BOOT-FAIL <reason>        (initramfs or suite.sh could not get going)
//   ELISA-VMX: DMESG <kernel log line>   (printed after the suite; shown on failure)
//   ELISA-VMX: <anything else>           (progress: timings, phases; shown as notes)

/** What a marker prefix looks like on the console. */
export const MARKER = 'ELISA-VMX: ';

/** Marker line for a passed test. */
export function passLine(title: string, ms: number): string {
  return `${MARKER}PASS ${JSON.stringify(title)} ${Math.round(ms)}ms`;
}

/** Marker line for a failed test (or hook); `message` may span lines. */
export function failLine(title: string, message: string): string {
  return `${MARKER}FAIL ${JSON.stringify(title)}: ${JSON.stringify(message)}`;
}

/** Marker line for a skipped (pending) test. */
export function skipLine(title: string): string {
  return `${MARKER}SKIP ${JSON.stringify(title)}`;
}

/** Final marker: the counts the host compares with the PASS/FAIL/SKIP lines it saw. */
export function doneLine(passing: number, failing: number, pending: number): string {
  return `${MARKER}DONE ${passing} ${failing} ${pending}`;
}

/** Everything the harness learned from one serial log. */
export interface SuiteReport {
  passes: { title: string; ms: number }[];
  failures: { title: string; message: string }[];
  skips: string[];
  /** Counts announced by the DONE marker; null if it never arrived. */
  done: { passing: number; failing: number; pending: number } | null;
  bootFailures: string[];
  dmesg: string[];
  notes: string[];
  /** Marker lines that did not parse (a garbled console line, or a format bug). */
  garbled: string[];
}

const JSON_STRING = '"(?:[^"\\\\]|\\\\.)*"';
const PASS_RE = new RegExp(`^PASS (${JSON_STRING}) (\\d+)ms\\s*$`);
const FAIL_RE = new RegExp(`^FAIL (${JSON_STRING}): (${JSON_STRING})\\s*$`);
const SKIP_RE = new RegExp(`^SKIP (${JSON_STRING})\\s*$`);
const DONE_RE = /^DONE (\d+) (\d+) (\d+)\s*$/;

/** Parses every marker in a serial-console log (CRs and other console noise ignored). */
export function parseMarkers(log: string): SuiteReport {
  const report: SuiteReport = {
    passes: [], failures: [], skips: [], done: null, bootFailures: [], dmesg: [], notes: [], garbled: [],
  };
  for (const rawLine of log.split('\n')) {
    const at = rawLine.indexOf(MARKER);
    if (at < 0) continue;
    const body = rawLine.slice(at + MARKER.length).replace(/\r/g, '');
    let m: RegExpMatchArray | null;
    if (body.startsWith('PASS ')) {
      if ((m = PASS_RE.exec(body))) report.passes.push({ title: JSON.parse(m[1]!) as string, ms: Number(m[2]) });
      else report.garbled.push(body);
    } else if (body.startsWith('FAIL ')) {
      if ((m = FAIL_RE.exec(body))) {
        report.failures.push({ title: JSON.parse(m[1]!) as string, message: JSON.parse(m[2]!) as string });
      } else report.garbled.push(body);
    } else if (body.startsWith('SKIP ')) {
      if ((m = SKIP_RE.exec(body))) report.skips.push(JSON.parse(m[1]!) as string);
      else report.garbled.push(body);
    } else if (body.startsWith('DONE')) {
      if ((m = DONE_RE.exec(body)) && report.done === null) {
        report.done = { passing: Number(m[1]), failing: Number(m[2]), pending: Number(m[3]) };
      } else report.garbled.push(body);
    } else if (body.startsWith('BOOT-FAIL')) {
      report.bootFailures.push(body.slice('BOOT-FAIL'.length).trim());
    } else if (body.startsWith('DMESG ')) {
      report.dmesg.push(body.slice('DMESG '.length));
    } else {
      report.notes.push(body.trim());
    }
  }
  return report;
}

/** Verdict on a report: ok only if the suite finished, its counts agree and nothing failed. */
export function judge(report: SuiteReport): { ok: boolean; problems: string[] } {
  const problems: string[] = [];
  for (const reason of report.bootFailures) problems.push(`the emulated host could not start the suite: ${reason}`);
  if (report.done === null) {
    const last = report.notes.at(-1);
    problems.push('no DONE marker: the in-host suite did not finish'
      + (last === undefined ? ' (no progress marker at all: did the emulated host boot?)' : ` (last progress marker: "${last}")`));
  } else {
    const d = report.done;
    if (d.passing !== report.passes.length || d.failing !== report.failures.length || d.pending !== report.skips.length) {
      problems.push(`DONE announced ${d.passing} passing / ${d.failing} failing / ${d.pending} pending but the log has `
        + `${report.passes.length} PASS / ${report.failures.length} FAIL / ${report.skips.length} SKIP lines`);
    }
    if (d.passing === 0 && d.failing === 0) problems.push('the in-host suite ran no test');
  }
  if (report.failures.length > 0) problems.push(`${report.failures.length} in-host test(s) failed`);
  if (report.garbled.length > 0) problems.push(`${report.garbled.length} marker line(s) did not parse`);
  return { ok: problems.length === 0, problems };
}

/** A mocha-style summary of a report, ending with a plain "N passed, N failed" line. */
export function summarize(report: SuiteReport): string {
  const out: string[] = [''];
  for (const p of report.passes) out.push(`  ✔ ${p.title} (${p.ms}ms)`);
  report.failures.forEach((f, i) => out.push(`  ${i + 1}) ${f.title}`));
  for (const s of report.skips) out.push(`  - ${s}`);
  out.push('', `  ${report.passes.length} passing`);
  if (report.failures.length > 0) out.push(`  ${report.failures.length} failing`);
  if (report.skips.length > 0) out.push(`  ${report.skips.length} pending`);
  report.failures.forEach((f, i) => {
    out.push('', `  ${i + 1}) ${f.title}:`);
    for (const line of f.message.split('\n')) out.push(`     ${line}`);
  });
  const { ok, problems } = judge(report);
  if (!ok) {
    out.push('');
    for (const g of report.garbled) out.push(`  unparsed marker: ${g}`);
    for (const p of problems) out.push(`  vmx-e2e: ${p}`);
    if (report.dmesg.length > 0) {
      out.push('', '  kernel log of the emulated host (KVM/error lines):');
      for (const l of report.dmesg) out.push(`    ${l}`);
    }
  }
  // A failure that never produced a FAIL line (no DONE, boot failure) still counts.
  const failed = report.failures.length + (ok || report.failures.length > 0 ? 0 : 1);
  out.push('', `vmx: ${report.passes.length} passed, ${failed} failed`);
  return out.join('\n');
}
