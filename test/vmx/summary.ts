// Host side of the vmx e2e harness: turns the emulated host's serial log into a
// mocha-style summary and an exit code (0 only if the suite finished, its counts agree
// and no test failed). Usage: node dist/test/vmx/summary.js SERIAL_LOG
import { readFileSync } from 'node:fs';
import { judge, parseMarkers, summarize } from './markers';

const file = process.argv[2];
if (file === undefined) {
  console.error('usage: node dist/test/vmx/summary.js SERIAL_LOG');
  process.exit(2);
}
const report = parseMarkers(readFileSync(file, 'utf8'));
if (report.notes.length > 0) {
  console.log('emulated host progress:');
  for (const n of report.notes) console.log(`  ${n}`);
}
console.log(summarize(report));
process.exit(judge(report).ok ? 0 : 1);
