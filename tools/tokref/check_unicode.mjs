// check_unicode.mjs — compares the character classes of host/unicode_tables.h (Node's ICU) with
// what the Rust regex engine inside Hugging Face tokenizers (@anush008/tokenizers) matches for
// \p{L}, \p{N}, \p{M} and \s, over every code point. Differences come from the two Unicode
// versions (characters one of them does not know yet); run it after regenerating the tables.
//
//   node check_unicode.mjs
import { createRequire } from 'module';

const require = createRequire(import.meta.url);
const rust = require('@anush008/tokenizers');

// A tokenizer whose only step is Split(regex, Isolated): each character of the class becomes a
// piece of its own, while the '!' put between all characters keeps the others in runs.
function splitter(regex) {
    return rust.Tokenizer.fromString(JSON.stringify({
        version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
        pre_tokenizer: { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false },
        post_processor: null, decoder: null,
        model: { type: 'WordLevel', vocab: { '!': 0 }, unk_token: '!' },
    })).getPreTokenizer();
}

const classes = { L: ['\\p{L}', /\p{L}/u], N: ['\\p{N}', /\p{N}/u], M: ['\\p{M}', /\p{M}/u], s: ['\\s', /\p{White_Space}/u] };
const cps = [];
for (let c = 0x20; c < 0x110000; c++) if (c < 0xd800 || c > 0xdfff) if (c !== 0x21) cps.push(c);
for (const [name, [rx, js]] of Object.entries(classes)) {
    const pt = splitter(rx);
    const inRust = new Set();
    for (let i = 0; i < cps.length; i += 50000) {
        const chunk = cps.slice(i, i + 50000);
        const text = chunk.map((c) => '!' + String.fromCodePoint(c)).join('');
        for (const [piece] of pt.preTokenizeString(text))
            if (!piece.includes('!')) inRust.add(piece.codePointAt(0));
    }
    const diff = cps.filter((c) => inRust.has(c) !== js.test(String.fromCodePoint(c)));
    const show = diff.slice(0, 8).map((c) => 'U+' + c.toString(16).toUpperCase() + (inRust.has(c) ? '(rust)' : '(node)'));
    const rustOnly = diff.filter((c) => inRust.has(c)).length;
    console.log(`${name}: ${diff.length} code points differ (${rustOnly} in the class only for Rust, ` +
        `${diff.length - rustOnly} only for Node) ${show.join(' ')}${diff.length > 8 ? ' ...' : ''}`);
}
