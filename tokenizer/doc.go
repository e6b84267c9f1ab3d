// Package tokenizer turns text into the token ids of a language model and
// back, for the vocabularies the models onnxprune handles ship with:
//
//   - llama2.c tokenizer.bin files (LoadLlama2C), encoded exactly as
//     llama2.c's run.c does;
//   - SentencePiece BPE .model files (LoadSentencePiece), encoded as the
//     sentencepiece library does, without it;
//   - Hugging Face tokenizer.json files with a BPE model (LoadHF): byte-level
//     vocabularies (GPT-2, Llama 3, Qwen) and SentencePiece-style ones
//     (Llama 2, Mistral, TinyLlama);
//   - vocabularies embedded in GGUF files (FromGGUF), "llama" and "gpt2".
//
// Load finds whichever of these a model directory has.
//
// Every format returns a Tokenizer. Encode never adds BOS or EOS: prompts
// for causal LMs usually start with BOS, perplexity windows often do not,
// and the caller knows which it wants:
//
//	ids := append([]int{tok.BOS()}, tok.Encode(text)...)
//
// BOS and EOS are -1 when the vocabulary has none (Qwen has no BOS).
//
// # Where the formats differ
//
// llama2.c and SentencePiece agree on ordinary text but not everywhere; each
// loader follows its own reference, so the same vocabulary can give
// different ids through tokenizer.bin and tokenizer.model:
//
//   - SentencePiece's normalizer runs first: with remove_extra_whitespaces
//     (the proto default, in effect in tok105.model but off in Llama 2's
//     tokenizer.model) it drops leading and trailing spaces and collapses
//     runs of spaces; run.c never does.
//   - A literal "▁" (U+2581) in the text is a space to SentencePiece, which
//     writes spaces so in its pieces; llama2.c's export replaced "▁" by " "
//     in every piece, so run.c encodes the character as three bytes.
//   - Invalid UTF-8: SentencePiece replaces each bad byte by U+FFFD; run.c
//     looks up a lead byte together with up to three continuation bytes
//     after it (stray continuation bytes in groups of up to four) and
//     falls back to one token per byte.
//   - run.c treats every vocabulary entry as mergeable, control and byte
//     pieces included, and ignores merges scoring -1e10 or less;
//     SentencePiece merges only NORMAL, USER_DEFINED and UNUSED pieces. No
//     text has been found where this matters.
//
// Hugging Face's SentencePiece-style tokenizer.json files follow
// tokenizers, not SentencePiece: with a Metaspace pre-tokenizer, text that
// starts with a space gets no extra "▁" (" Hi" is "▁Hi", where
// SentencePiece has "▁▁Hi"); the legacy Prepend/Replace normalizer agrees
// with SentencePiece.
//
// # Decoding
//
// Decode reverses Encode where the vocabulary allows it: SentencePiece
// maps characters it lacks to <unk> when it has no byte fallback (tok105
// has no newline), and its whitespace clean-up cannot be undone. In every
// format BOS and EOS decode to nothing; other control and added tokens
// decode to their text ("<|im_start|>"), as tokenizers'
// decode(skip_special_tokens=False) gives them. Byte pieces are returned as
// raw bytes, so a single token's text may be an incomplete UTF-8 sequence;
// the concatenation is right.
package tokenizer
