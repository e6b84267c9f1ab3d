#!/usr/bin/python3
"""Reference token ids for the llama2.c and SentencePiece tokenizer tests.

    /usr/bin/python3 testdata/tokenizer/gen_ref.py > testdata/tokenizer/spm_ref.json

Run from the module root with ../shared present. Needs only the standard
library: there is no sentencepiece package on the machines this project uses,
so both algorithms are re-implemented here from their published descriptions,
deliberately in a different shape from the Go code (plain lists and an
O(n^2) "find the best pair, merge it, start again" loop instead of a heap):

  * llama2.c: run.c `encode` (karpathy/llama2.c): dummy prefix " " when the
    text is non-empty, code points looked up in the vocabulary, unknown ones
    as byte tokens id = byte + 3, then merge the adjacent pair whose
    concatenation is in the vocabulary with the highest score (> -1e10),
    leftmost on ties, until none is left.
  * SentencePiece BPE (google/sentencepiece normalizer.cc, bpe_model.cc,
    sentencepiece_processor.cc): identity normalisation with
    add_dummy_prefix / remove_extra_whitespaces / escape_whitespaces, merges
    restricted to NORMAL, USER_DEFINED and UNUSED pieces, highest score then
    leftmost, unknown symbols become <unk> or, with byte_fallback, <0xXX>.

Before writing anything the script checks itself against ids published by
others: karpathy/llama2.c test.c (commit 350e04fe35433e6d2941dce5a1f53308f87058eb,
"expected tokens come from me breaking in the debugger in Python", i.e. Meta's
SentencePiece) for the Llama-2 tokenizer, in both file formats.

The texts are the first 20 blank-line-separated chunks of
../shared/data/tinystories/validation.txt, the first 6 chunks that contain
non-ASCII characters, 3 multi-paragraph texts, and the handmade strings in
EXTRA. The JSON stores chunk indices (not the text, which stays in ../shared)
with a sha256 of each text so the Go test can tell if the data changed.
"""

import hashlib
import json
import os
import struct
import sys

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared")

EXTRA = [
    "",
    "Hello world",
    "  leading and trailing  ",
    "multiple   spaces\tand\ttabs",
    "line1\nline2\n\nline4",
    "I believe the meaning of life is",
    "na\u00efve caf\u00e9 r\u00e9sum\u00e9",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "emoji \U0001F600\U0001F44D\U0001F3FD!",
    "<s> and </s> and <unk> and <0x41> are plain text",
    "12345 3.14159 -42",
    "don't can't won't I'm",
    "a\u2581b lower one eighth block",
    "   ",
    " x",
    "x ",
    "zzz hmmm ooo !!! ??? --- ... ,,, ___ *** lll eee",  # ties: "aa" pieces, no "aaa"
]

PUBLISHED = [  # karpathy/llama2.c test.c, with BOS (1) first
    ("", [1]),
    ("I believe the meaning of life is", [1, 306, 4658, 278, 6593, 310, 2834, 338]),
    ("Simply put, the theory of relativity states that ",
     [1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871]),
    ("A brief message congratulating the team on the launch:\n\n        Hi everyone,\n\n        I just ",
     [1, 319, 11473, 2643, 378, 629, 271, 18099, 278, 3815, 373, 278, 6826, 29901, 13, 13, 4706, 6324,
      14332, 29892, 13, 13, 4706, 306, 925, 29871]),
    ("Translate English to French:\n\n        sea otter => loutre de mer\n        peppermint => menthe poivr\u00e9e\n"
     "        plush girafe => girafe peluche\n        cheese =>",
     [1, 4103, 9632, 4223, 304, 5176, 29901, 13, 13, 4706, 7205, 4932, 357, 1149, 301, 449, 276, 316, 2778,
      13, 4706, 1236, 407, 837, 524, 1149, 6042, 354, 772, 440, 29878, 1318, 13, 4706, 715, 1878, 330, 3055,
      1725, 1149, 330, 3055, 1725, 4639, 28754, 13, 4706, 923, 968, 1149]),
]


# ---------------------------------------------------------------- llama2.c

class Llama2C:
    def __init__(self, path):
        data = open(path, "rb").read()
        self.max_len = struct.unpack_from("<i", data, 0)[0]
        off = 4
        self.pieces, self.scores = [], []
        while off < len(data):
            score, n = struct.unpack_from("<fi", data, off)
            off += 8
            self.pieces.append(data[off:off + n])
            self.scores.append(score)
            off += n
        # run.c's str_lookup is a binary search over the sorted vocabulary;
        # with unique pieces a dict answers the same.
        self.lookup = {}
        for i, p in enumerate(self.pieces):
            self.lookup.setdefault(p, i)

    def encode(self, text):
        b = text.encode("utf-8")
        toks = []
        if b:
            toks.append(self.lookup[b" "])
        i = 0
        while i < len(b):
            j = i + 1
            while j < len(b) and (b[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            cp = b[i:j]
            if cp in self.lookup:
                toks.append(self.lookup[cp])
            else:
                toks.extend(x + 3 for x in cp)
            i = j
        while True:
            best, best_i, best_id = -1e10, -1, -1
            for k in range(len(toks) - 1):
                tid = self.lookup.get(self.pieces[toks[k]] + self.pieces[toks[k + 1]], -1)
                if tid != -1 and self.scores[tid] > best:
                    best, best_i, best_id = self.scores[tid], k, tid
            if best_i < 0:
                return toks
            toks[best_i:best_i + 2] = [best_id]


# ----------------------------------------------------------- SentencePiece

def _varint(b, i):
    v = shift = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return v, i


def _fields(b):
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 1:
            v, i = b[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wire == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wire)
        yield num, v


def _int32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class SentencePiece:
    def __init__(self, path):
        self.pieces, self.scores, self.types = [], [], []
        trainer, norm = {}, {}
        for num, v in _fields(open(path, "rb").read()):
            if num == 1:
                f = dict(_fields(v))
                self.pieces.append(f[1].decode("utf-8"))
                self.scores.append(struct.unpack("<f", f[2])[0] if 2 in f else 0.0)
                self.types.append(f.get(3, NORMAL))
            elif num == 2:
                trainer = dict(_fields(v))
            elif num == 3:
                norm = dict(_fields(v))
        if trainer.get(3, 1) != 2:
            raise ValueError("not a BPE model")
        if norm.get(2):
            raise ValueError("precompiled_charsmap is not implemented here")
        self.byte_fallback = bool(trainer.get(35, 0))
        self.unk = _int32(trainer.get(40, 0))
        self.add_dummy_prefix = bool(norm.get(3, 1))
        self.remove_extra_ws = bool(norm.get(4, 1))
        self.escape_ws = bool(norm.get(5, 1))
        if bool(trainer.get(24, 0)):
            raise ValueError("treat_whitespace_as_suffix is not implemented here")
        assert USER_DEFINED not in self.types and UNUSED not in self.types
        self.mergeable = {}
        self.reserved = {}
        for i, (p, t) in enumerate(zip(self.pieces, self.types)):
            (self.mergeable if t in (NORMAL, USER_DEFINED, UNUSED) else self.reserved)[p] = i

    def normalize(self, text):
        chars = list(text)
        if self.remove_extra_ws:
            while chars and chars[0] == " ":
                chars.pop(0)
        if not chars:
            return ""
        out = []
        if self.add_dummy_prefix:
            out.append(" ")
        prev_space = self.remove_extra_ws
        for c in chars:
            if prev_space and c == " ":
                continue
            out.append(c)
            prev_space = self.remove_extra_ws and c == " "
        if self.remove_extra_ws:
            while out and out[-1] == " ":
                out.pop()
        s = "".join(out)
        return s.replace(" ", "\u2581") if self.escape_ws else s

    def piece_id(self, piece):
        if piece in self.reserved:
            return self.reserved[piece]
        return self.mergeable.get(piece, self.unk)

    def encode(self, text):
        syms = list(self.normalize(text))
        while True:
            best, best_i = None, -1
            for k in range(len(syms) - 1):
                tid = self.mergeable.get(syms[k] + syms[k + 1])
                if tid is not None and (best is None or self.scores[tid] > best):
                    best, best_i = self.scores[tid], k
            if best_i < 0:
                break
            syms[best_i:best_i + 2] = [syms[best_i] + syms[best_i + 1]]
        ids = []
        for s in syms:
            tid = self.piece_id(s)
            if tid == self.unk and self.byte_fallback:
                ids.extend(self.piece_id("<0x%02X>" % x) for x in s.encode("utf-8"))
            else:
                ids.append(tid)
        return ids


def sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main():
    llama_bin = Llama2C(os.path.join(SHARED, "models/llama2-tokenizer/tokenizer.bin"))
    llama_spm = SentencePiece(os.path.join(SHARED, "models/llama2-tokenizer/tokenizer.model"))
    for text, want in PUBLISHED:
        for name, tok in (("tokenizer.bin", llama_bin), ("tokenizer.model", llama_spm)):
            got = [1] + tok.encode(text)
            if got != want:
                sys.exit("gen_ref.py: %s disagrees with llama2.c test.c on %r:\n got %s\nwant %s" % (name, text, got, want))

    raw = open(os.path.join(SHARED, "data/tinystories/validation.txt"), encoding="utf-8").read()
    chunks = raw.split("\n\n")
    texts = [{"chunk": i} for i in range(20)]
    nonascii = [i for i, c in enumerate(chunks) if any(ord(ch) > 127 for ch in c) and i >= 20][:6]
    texts += [{"chunk": i} for i in nonascii]
    texts += [{"chunks": [20, 24]}, {"chunks": [100, 103]}, {"chunks": [nonascii[0] - 1, nonascii[0] + 2]}]
    texts += [{"text": t} for t in EXTRA]
    for t in texts:
        if "chunk" in t:
            s = chunks[t["chunk"]]
        elif "chunks" in t:
            s = "\n\n".join(chunks[t["chunks"][0]:t["chunks"][1]])
        else:
            s = t["text"]
        t["sha256"] = sha(s)
        t["_s"] = s

    toks = {
        "stories260K/tok512.bin": Llama2C(os.path.join(SHARED, "models/stories260K/tok512.bin")),
        "babyllama-tok105/tok105.model": SentencePiece(os.path.join(SHARED, "models/babyllama-tok105/tok105.model")),
        "llama2-tokenizer/tokenizer.model": llama_spm,
        "llama2-tokenizer/tokenizer.bin": llama_bin,
    }
    out = {
        "generator": "testdata/tokenizer/gen_ref.py",
        "source": "data/tinystories/validation.txt split on blank lines; chunk = index, chunks = [from, to) joined by a blank line",
        "texts": [{k: v for k, v in t.items() if k != "_s"} for t in texts],
        "ids": {name: [tok.encode(t["_s"]) for t in texts] for name, tok in toks.items()},
    }
    diff = [i for i, (a, b) in enumerate(zip(out["ids"]["llama2-tokenizer/tokenizer.model"],
                                             out["ids"]["llama2-tokenizer/tokenizer.bin"])) if a != b]
    print("gen_ref.py: Llama-2 .model and .bin differ on texts %s" % diff, file=sys.stderr)
    json.dump(out, sys.stdout, ensure_ascii=True, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
