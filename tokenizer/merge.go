package tokenizer

import (
	"container/heap"
	"strings"
)

// symbol is one element of a word being merged: a token id and, for
// SentencePiece, the byte range of the normalized text it covers. Symbols
// form a doubly linked list through prev and next (-1 at the ends).
type symbol struct {
	id         int32
	start, end int32
	prev, next int32
	frozen     bool  // user-defined pieces never merge
	gen        int32 // changes whenever the symbol does, invalidating queued pairs
}

// pairFunc reports whether adjacent symbols l and r merge, into which id,
// and with what priority: lower merges first, ties go to the leftmost pair.
// SentencePiece and llama2.c pass minus the merged piece's score, Hugging
// Face BPE the merge rank.
type pairFunc func(l, r *symbol) (id int32, prio float64, ok bool)

type candidate struct {
	prio        float64
	left, right int32
	lgen, rgen  int32
	id          int32
}

type candidates []candidate

func (c candidates) Len() int { return len(c) }
func (c candidates) Less(i, j int) bool {
	if c[i].prio != c[j].prio {
		return c[i].prio < c[j].prio
	}
	return c[i].left < c[j].left
}
func (c candidates) Swap(i, j int) { c[i], c[j] = c[j], c[i] }
func (c *candidates) Push(x any)   { *c = append(*c, x.(candidate)) }
func (c *candidates) Pop() any {
	old := *c
	x := old[len(old)-1]
	*c = old[:len(old)-1]
	return x
}

// mergeSymbols applies BPE to syms, linked 0 → 1 → … in order: it
// repeatedly merges the adjacent pair with the lowest priority (the
// leftmost among equals) until no pair merges. This is the order
// SentencePiece's bpe_model.cc, llama2.c's encode and Hugging Face's
// Word::merge_all all follow; a heap makes it O(n log n) instead of
// run.c's O(n²). The survivors remain linked from index 0, which is never
// merged away.
func mergeSymbols(syms []symbol, pair pairFunc) {
	if len(syms) < 2 {
		return
	}
	q := make(candidates, 0, len(syms))
	push := func(l, r int32) {
		if l < 0 || r < 0 || syms[l].frozen || syms[r].frozen {
			return
		}
		id, prio, ok := pair(&syms[l], &syms[r])
		if !ok {
			return
		}
		heap.Push(&q, candidate{prio: prio, left: l, right: r, lgen: syms[l].gen, rgen: syms[r].gen, id: id})
	}
	for i := 1; i < len(syms); i++ {
		push(int32(i-1), int32(i))
	}
	for q.Len() > 0 {
		c := heap.Pop(&q).(candidate)
		l, r := &syms[c.left], &syms[c.right]
		if l.gen != c.lgen || r.gen != c.rgen || l.next != c.right {
			continue // one side has changed since the pair was queued
		}
		l.id = c.id
		l.end = r.end
		l.next = r.next
		l.gen++
		if r.next >= 0 {
			syms[r.next].prev = c.left
		}
		r.gen++
		r.next, r.prev = -1, -1
		push(l.prev, c.left)
		push(c.left, l.next)
	}
}

// splitSafe reports whether no piece has sep right after something other
// than sep: then no merge can cross a boundary before a sep that follows
// a non-sep character, and a long text can be merged word by word with
// the same result and much smaller heaps. SentencePiece vocabularies
// trained with split_by_whitespace (the default) have "▁" only at the
// start of pieces or in pieces of spaces alone.
func splitSafe(pieces []string, sep string) bool {
	for _, p := range pieces {
		for i := strings.Index(p, sep); i >= 0; {
			if i > 0 && !strings.HasSuffix(p[:i], sep) {
				return false
			}
			j := strings.Index(p[i+len(sep):], sep)
			if j < 0 {
				break
			}
			i += len(sep) + j
		}
	}
	return true
}

// forChunks calls f on the consecutive pieces of s cut before every sep
// that follows something other than sep.
func forChunks(s, sep string, f func(string)) {
	start := 0
	for i := 0; i < len(s); {
		j := strings.Index(s[i:], sep)
		if j < 0 {
			break
		}
		i += j
		if i > start && !strings.HasSuffix(s[start:i], sep) {
			f(s[start:i])
			start = i
		}
		i += len(sep)
	}
	f(s[start:])
}
