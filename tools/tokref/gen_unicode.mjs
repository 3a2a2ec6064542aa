// gen_unicode.mjs — writes host/unicode_tables.h: the Unicode data the C tokenizer needs,
// taken from the ICU built into Node (no UCD files are read).
//
//   node tools/tokref/gen_unicode.mjs > host/unicode_tables.h
//
// What it derives, per code point:
//   - \p{L}, \p{N}, \p{M} and White_Space (what the Rust regex engines behind Hugging Face
//     tokenizers call \s: U+0085 is whitespace, U+FEFF and U+001C..U+001F are not), and the
//     regex crate's \w (Alphabetic, M, Nd, Pc, Join_Control) for single_word added tokens;
//   - the canonical combining class, as an order-preserving rank (Node exposes no ccc, so the
//     marks are sorted by asking NFD whether it swaps each pair: only order and zero matter
//     to canonical reordering and to blocking in composition);
//   - full canonical decompositions (from NFD of each single code point);
//   - primary composition pairs (first, second) -> composite, found by splitting each
//     composite's NFD and asking NFC to confirm; exclusions fall out because Node's NFC never
//     produces an excluded composite;
//   - an NFC "needs work" flag: the character is not its own NFC, has ccc != 0, or can be the
//     second of a composition (NFC_QC Maybe, Hangul V/T jamo included). Text without any
//     flagged character is already NFC, which is the fast path.
// Hangul syllables are algorithmic in the C code and left out of the tables.

const MAXCP = 0x110000;
const isSur = (c) => c >= 0xd800 && c <= 0xdfff;
const S = (c) => String.fromCodePoint(c);
const cps = (s) => Array.from(s, (ch) => ch.codePointAt(0));
const isHangulSyl = (c) => c >= 0xac00 && c <= 0xd7a3;

const F_L = 1, F_N = 2, F_M = 4, F_WS = 8, F_W = 16, F_NFC = 32;
const reL = /\p{L}/u, reN = /\p{N}/u, reM = /\p{M}/u, reWS = /\p{White_Space}/u;
const reW = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;

// ---- canonical combining class ranks ---------------------------------------------------------
// swaps(a, b): NFD reorders "a b" to "b a", i.e. ccc(a) > ccc(b) > 0.
const swaps = (a, b) => (S(a) + S(b)).normalize('NFD') === S(b) + S(a);
const selfNFD = (c) => S(c).normalize('NFD') === S(c);
const LOW = 0x0334; // ccc 1, the lowest non-zero class
const HIGH = 0x0345; // ccc 240, the highest
function nonzeroCcc(c) {
    if (c === HIGH) return true;
    return swaps(c, LOW) || swaps(HIGH, c);
}
const marks = [];
for (let c = 0; c < MAXCP; c++) {
    if (isSur(c) || !selfNFD(c)) continue;
    if (nonzeroCcc(c)) marks.push(c);
}
const cmp = (a, b) => (swaps(a, b) ? 1 : swaps(b, a) ? -1 : 0);
marks.sort(cmp);
const ccc = new Map();
let rank = 0;
for (let i = 0; i < marks.length; i++) {
    if (i === 0 || cmp(marks[i - 1], marks[i]) !== 0) rank++;
    ccc.set(marks[i], rank);
}
if (rank > 255) throw new Error('too many ccc classes');

// ---- decompositions and compositions -----------------------------------------------------------
const decomp = []; // [cp, [cps]]
for (let c = 0; c < MAXCP; c++) {
    if (isSur(c) || isHangulSyl(c)) continue;
    const d = S(c).normalize('NFD');
    if (d !== S(c)) decomp.push([c, cps(d)]);
}
const comp = []; // [first, second, composite]
for (const [c, d] of decomp) {
    if (S(c).normalize('NFC') !== S(c) || d.length < 2) continue;
    let found = null;
    for (let k = d.length - 1; k >= 1 && !found; k--) {
        const rest = d.slice(0, k).concat(d.slice(k + 1));
        const x = cps(String.fromCodePoint(...rest).normalize('NFC'));
        if (x.length === 1 && (S(x[0]) + S(d[k])).normalize('NFC') === S(c)) found = [x[0], d[k], c];
    }
    if (!found) throw new Error('no composition pair for U+' + c.toString(16));
    comp.push(found);
}
comp.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
const seconds = new Set(comp.map((p) => p[1]));

// ---- per code point flags, two-stage table -----------------------------------------------------
const flags = new Uint8Array(MAXCP);
for (let c = 0; c < MAXCP; c++) {
    if (isSur(c)) continue;
    const s = S(c);
    let f = 0;
    if (reL.test(s)) f |= F_L;
    if (reN.test(s)) f |= F_N;
    if (reM.test(s)) f |= F_M;
    if (reWS.test(s)) f |= F_WS;
    if (reW.test(s)) f |= F_W;
    const jamoVT = (c >= 0x1161 && c <= 0x1175) || (c >= 0x11a8 && c <= 0x11c2);
    if (s.normalize('NFC') !== s || ccc.has(c) || seconds.has(c) || jamoVT) f |= F_NFC;
    flags[c] = f;
}

function twoStage(shift) {
    const bs = 1 << shift, blocks = [], index = [], seen = new Map();
    for (let b = 0; b < MAXCP / bs; b++) {
        const key = flags.subarray(b * bs, (b + 1) * bs).join(',');
        if (!seen.has(key)) { seen.set(key, blocks.length); blocks.push(flags.subarray(b * bs, (b + 1) * bs)); }
        index.push(seen.get(key));
    }
    return { shift, bs, blocks, index, bytes: index.length * 2 + blocks.length * bs };
}
let best = null;
for (const sh of [5, 6, 7, 8]) { const t = twoStage(sh); if (!best || t.bytes < best.bytes) best = t; }

// ---- ccc ranges ---------------------------------------------------------------------------------
const cccRanges = [];
for (const c of [...ccc.keys()].sort((a, b) => a - b)) {
    const last = cccRanges[cccRanges.length - 1];
    if (last && last[1] === c - 1 && last[2] === ccc.get(c)) last[1] = c;
    else cccRanges.push([c, c, ccc.get(c)]);
}

// ---- output -------------------------------------------------------------------------------------
const hex = (n, w) => '0x' + n.toString(16).toUpperCase().padStart(w, '0');
function rows(items, per) {
    const out = [];
    for (let i = 0; i < items.length; i += per) out.push('    ' + items.slice(i, i + per).join(', ') + ',');
    return out.join('\n');
}
const pool = [], dtab = [];
for (const [c, d] of decomp) { dtab.push(`{${hex(c, 5)}, ${pool.length}, ${d.length}}`); pool.push(...d); }
const maxDecomp = Math.max(...decomp.map((e) => e[1].length));

const L = [];
L.push(`/* unicode_tables.h — generated by tools/tokref/gen_unicode.mjs; do not edit.
 *
 * Made with Node ${process.version}, ICU ${process.versions.icu}, Unicode ${process.versions.unicode}.
 * Regenerate: node tools/tokref/gen_unicode.mjs > host/unicode_tables.h
 *
 * Included by unicode.c only (unicode.h declares the two stages): uni_stage1[cp >> UNI_SHIFT]
 * picks a block of uni_stage2; the byte there holds the UNI_* flags of unicode.h. ccc ranks are order-preserving stand-ins for the canonical combining
 * classes (${rank} classes). Decompositions are full canonical ones (Hangul excluded);
 * compositions are the primary composites, sorted by (first, second). */
#ifndef UNICODE_TABLES_H
#define UNICODE_TABLES_H

#include <stdint.h>

#define UNI_TABLE_SHIFT ${best.shift}
#define UNI_MAX_DECOMP ${maxDecomp}
#define UNI_NDECOMP ${decomp.length}
#define UNI_NCOMP ${comp.length}
#define UNI_NCCC ${cccRanges.length}

struct uni_decomp { uint32_t cp; uint16_t off, len; };
struct uni_comp { uint32_t first, second, composite; };
struct uni_ccc { uint32_t lo, hi; uint8_t rank; };
`);
L.push(`const uint16_t uni_stage1[${best.index.length}] = {\n${rows(best.index.map(String), 16)}\n};\n`);
const st2 = [];
for (const b of best.blocks) for (const v of b) st2.push(String(v));
L.push(`const uint8_t uni_stage2[${st2.length}] = {\n${rows(st2, 24)}\n};\n`);
L.push(`static const struct uni_ccc uni_ccc_tab[${cccRanges.length}] = {\n${rows(cccRanges.map((r) => `{${hex(r[0], 5)}, ${hex(r[1], 5)}, ${r[2]}}`), 4)}\n};\n`);
L.push(`static const uint32_t uni_decomp_pool[${pool.length}] = {\n${rows(pool.map((c) => hex(c, 5)), 10)}\n};\n`);
L.push(`static const struct uni_decomp uni_decomp_tab[${dtab.length}] = {\n${rows(dtab, 4)}\n};\n`);
L.push(`static const struct uni_comp uni_comp_tab[${comp.length}] = {\n${rows(comp.map((p) => `{${hex(p[0], 5)}, ${hex(p[1], 5)}, ${hex(p[2], 5)}}`), 3)}\n};\n`);
L.push('#endif');
process.stdout.write(L.join('\n') + '\n');
process.stderr.write(`two-stage shift ${best.shift}: ${best.bytes} bytes; ${marks.length} marks in ${rank} ccc ranks; ` +
    `${decomp.length} decompositions; ${comp.length} compositions\n`);
