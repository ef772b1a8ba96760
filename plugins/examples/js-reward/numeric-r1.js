// The example rule in plain JavaScript (no bindings), so it also runs under Node.
//
// Same rule as ../rust-reward/src/lib.rs and ../python-reward/numeric_r1.py;
// the definition is in docs/plugins.md ("The example rule"). Everything is
// ASCII on purpose: String.prototype.trim() and \s know Unicode whitespace
// (and \uFEFF), which other languages count differently.

const TAGS = ['<think>', '</think>', '<answer>', '</answer>'];
// [0-9], not \d: the same characters in every language.
const NUMBER = /^([+-]?)([0-9]*)(?:\.([0-9]*))?$/;

// Plain loops rather than a regex replace or split: the engine runs as an
// interpreter inside the component (no JIT), so allocations are not free.
const isWs = (c) => c === 32 || c === 9 || c === 10 || c === 13;

function trimWs(s) {
  let start = 0;
  let end = s.length;
  while (start < end && isWs(s.charCodeAt(start))) start++;
  while (end > start && isWs(s.charCodeAt(end - 1))) end--;
  return start === 0 && end === s.length ? s : s.slice(start, end);
}

function count(s, tag) {
  let n = 0;
  for (let i = s.indexOf(tag); i >= 0; i = s.indexOf(tag, i + tag.length)) n++;
  return n;
}

export function isR1Format(text) {
  const t = trimWs(text);
  if (!t.startsWith('<think>') || !t.endsWith('</answer>')) return false;
  if (TAGS.some((tag) => count(t, tag) !== 1)) return false;
  const gapStart = t.indexOf('</think>') + '</think>'.length;
  const openAnswer = t.indexOf('<answer>');
  return openAnswer >= gapStart && trimWs(t.slice(gapStart, openAnswer)) === '';
}

// Text between the last <answer> and the first </answer> after it, trimmed.
export function answerContent(text) {
  let start = text.lastIndexOf('<answer>');
  if (start < 0) return undefined;
  start += '<answer>'.length;
  const end = text.indexOf('</answer>', start);
  if (end < 0) return undefined;
  return trimWs(text.slice(start, end));
}

// '-0012.50' -> '-12.5', '-0.0' -> '0'; undefined when s is not a number.
export function canonicalNumber(s) {
  const m = NUMBER.exec(trimWs(s));
  if (m === null) return undefined;
  let [, sign, int, frac = ''] = m;
  if (int === '' && frac === '') return undefined;
  int = int.replace(/^0+/, '');
  frac = frac.replace(/0+$/, '');
  if (int === '' && frac === '') return '0';
  const out = (sign === '-' ? '-' : '') + (int === '' ? '0' : int);
  return frac === '' ? out : `${out}.${frac}`;
}

const DEFAULTS = { format_weight: 0.5, accuracy_weight: 1.0 };
// TOML's decimal integers and floats (underscores allowed between digits).
const TOML_NUMBER = /^[+-]?(0|[1-9](_?[0-9])*)(\.[0-9](_?[0-9])*)?([eE][+-]?[0-9](_?[0-9])*)?$/;

// There is no TOML parser in the engine and the config is two numbers, so this
// reads the subset of TOML the rule needs: `key = number` lines and comments.
// Anything else is refused with the line number rather than misread.
export function parseConfig(text) {
  const values = { ...DEFAULTS };
  const seen = new Set();
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').replace(/^[ \t\r]+|[ \t\r]+$/g, '');
    if (line === '') return;
    const where = `example-js-reward config line ${i + 1}`;
    const m = /^([A-Za-z0-9_-]+)[ \t]*=[ \t]*(.*)$/.exec(line);
    if (m === null) {
      throw new Error(`${where}: expected \`key = number\` (this plugin reads only that subset of TOML)`);
    }
    const [, key, value] = m;
    if (!(key in DEFAULTS)) {
      throw new Error(`${where}: unknown key \`${key}\`, expected one of \`format_weight\`, \`accuracy_weight\``);
    }
    if (seen.has(key)) throw new Error(`${where}: duplicate key \`${key}\``);
    seen.add(key);
    if (!TOML_NUMBER.test(value)) throw new Error(`${where}: \`${key}\` must be a finite number`);
    values[key] = Number(value.replace(/_/g, ''));
    if (!Number.isFinite(values[key])) throw new Error(`${where}: \`${key}\` must be a finite number`);
  });
  return values;
}

export class NumericR1 {
  constructor(config) {
    const c = parseConfig(config);
    this.formatWeight = c.format_weight;
    this.accuracyWeight = c.accuracy_weight;
  }

  // { total, components } or throws an Error with the item's message.
  score(id, reference, response) {
    if (reference === undefined || reference === null) {
      throw new Error(`sample \`${id}\`: no reference answer`);
    }
    const ref = canonicalNumber(reference);
    if (ref === undefined) {
      throw new Error(`sample \`${id}\`: reference answer \`${reference}\` is not a number`);
    }
    const format = isR1Format(response) ? this.formatWeight : 0.0;
    const given = answerContent(response);
    const correct = given !== undefined && canonicalNumber(given) === ref;
    const accuracy = correct ? this.accuracyWeight : 0.0;
    return { total: format + accuracy, components: [['format', format], ['accuracy', accuracy]] };
  }
}
