package tokenizer_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/onnxprune/onnxprune/tokenizer"
)

// readGGUFVocab reads the tokenizer.ggml.* metadata of a GGUF v2/v3 file:
// just enough of the format for tests, independent of convert's reader.
func readGGUFVocab(t *testing.T, path string) tokenizer.GGUFVocab {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := parseGGUFVocab(bufio.NewReader(f))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func parseGGUFVocab(r io.Reader) (tokenizer.GGUFVocab, error) {
	v := tokenizer.GGUFVocab{BOS: -1, EOS: -1}
	le := binary.LittleEndian
	var hdr struct {
		Magic   [4]byte
		Version uint32
		Tensors uint64
		KVs     uint64
	}
	if err := binary.Read(r, le, &hdr); err != nil {
		return v, err
	}
	if string(hdr.Magic[:]) != "GGUF" || hdr.Version < 2 {
		return v, fmt.Errorf("not GGUF v2+")
	}
	u32 := func() uint32 { var x uint32; binary.Read(r, le, &x); return x }
	u64 := func() uint64 { var x uint64; binary.Read(r, le, &x); return x }
	str := func() string {
		b := make([]byte, u64())
		io.ReadFull(r, b)
		return string(b)
	}
	sizes := map[uint32]int{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
	var value func(typ uint32) (any, error)
	value = func(typ uint32) (any, error) {
		switch typ {
		case 8:
			return str(), nil
		case 9:
			et, n := u32(), u64()
			switch et {
			case 8:
				s := make([]string, n)
				for i := range s {
					s[i] = str()
				}
				return s, nil
			case 6:
				s := make([]float32, n)
				return s, binary.Read(r, le, s)
			case 5:
				s := make([]int32, n)
				return s, binary.Read(r, le, s)
			}
			for range n {
				if _, err := value(et); err != nil {
					return nil, err
				}
			}
			return nil, nil
		case 4:
			return int(u32()), nil
		case 5:
			return int(int32(u32())), nil
		case 7:
			b := make([]byte, 1)
			_, err := io.ReadFull(r, b)
			return b[0] != 0, err
		}
		n, ok := sizes[typ]
		if !ok {
			return nil, fmt.Errorf("metadata type %d", typ)
		}
		_, err := io.CopyN(io.Discard, r, int64(n))
		return nil, err
	}
	for range hdr.KVs {
		key := str()
		x, err := value(u32())
		if err != nil {
			return v, fmt.Errorf("%s: %w", key, err)
		}
		switch key {
		case "tokenizer.ggml.model":
			v.Model, _ = x.(string)
		case "tokenizer.ggml.pre":
			v.Pre, _ = x.(string)
		case "tokenizer.ggml.tokens":
			v.Tokens, _ = x.([]string)
		case "tokenizer.ggml.scores":
			v.Scores, _ = x.([]float32)
		case "tokenizer.ggml.token_type":
			v.Types, _ = x.([]int32)
		case "tokenizer.ggml.merges":
			v.Merges, _ = x.([]string)
		case "tokenizer.ggml.bos_token_id":
			v.BOS, _ = x.(int)
		case "tokenizer.ggml.eos_token_id":
			v.EOS, _ = x.(int)
		case "tokenizer.ggml.add_space_prefix":
			b, _ := x.(bool)
			v.NoSpacePrefix = !b
		}
	}
	return v, nil
}
