package eval

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// byteEncoder maps each byte to its value; BOS is 1.
type byteEncoder struct{}

func (byteEncoder) Encode(s string) []int {
	var ids []int
	for i := range len(s) {
		ids = append(ids, int(s[i]))
	}
	return ids
}
func (byteEncoder) BOS() int { return 1 }

func ints(s string) []int { return byteEncoder{}.Encode(s) }

// TestMakeChoiceRow checks the token layout of one (context,
// continuation) row: what is fed, which positions predict the
// continuation, and left truncation keeping BOS.
func TestMakeChoiceRow(t *testing.T) {
	cases := []struct {
		name, ctx, cont string
		seqLen          int
		ids             []int // fed
		targets         []int
		first           int
		truncated       bool
	}{
		{"fits", "abc", " y", 10, append([]int{1}, ints("abc ")...), ints(" y"), 3, false},
		// lm-eval moves the context's trailing space to the continuation.
		{"trailing space", "ab ", "y", 10, append([]int{1}, ints("ab ")...), ints(" y"), 2, false},
		// 1 + 6 + 2 tokens, 4 may be fed: BOS, then the last 3 of
		// "abcdefxy" minus the final target.
		{"truncated", "abcdef", "xy", 4, append([]int{1}, ints("efx")...), ints("xy"), 2, true},
		// The continuation fills the window: BOS predicts its first token.
		{"continuation only", "abc", "xyz", 3, append([]int{1}, ints("xy")...), ints("xyz"), 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := makeChoiceRow(byteEncoder{}, c.ctx, c.cont, c.seqLen)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.ids, c.ids) || !slices.Equal(r.targets, c.targets) || r.first != c.first || r.truncated != c.truncated {
				t.Fatalf("ids %v targets %v first %d truncated %v; want %v %v %d %v", r.ids, r.targets, r.first, r.truncated, c.ids, c.targets, c.first, c.truncated)
			}
			if len(r.ids) > c.seqLen {
				t.Fatalf("%d tokens fed, more than %d", len(r.ids), c.seqLen)
			}
			// Position first+k predicts targets[k], which is the next fed
			// token except for the last.
			for k := 0; k+1 < len(r.targets); k++ {
				if r.ids[r.first+k+1] != r.targets[k] {
					t.Fatalf("target %d is not fed after position %d", k, r.first+k)
				}
			}
		})
	}
	if _, err := makeChoiceRow(byteEncoder{}, "abc", "wxyz", 3); err == nil {
		t.Error("a continuation longer than the window was accepted")
	}
	if _, err := makeChoiceRow(byteEncoder{}, "abc", "", 8); err == nil {
		t.Error("an empty continuation was accepted")
	}
}

func TestTally(t *testing.T) {
	cases := []struct {
		golds, preds []int
		acc          float64
		confusion    string
		majority     string
		baseline     float64
	}{
		{[]int{1, 1, 0, 1}, []int{1, 0, 0, 1}, 0.75, "[[1 0] [1 2]]", "yes", 0.75},
		{[]int{0, 0, 0, 1, 1}, []int{1, 1, 1, 1, 1}, 0.4, "[[0 3] [0 2]]", "no", 0.6},
		{[]int{0, 1}, []int{0, 1}, 1, "[[1 0] [0 1]]", "no", 0.5}, // tie: first label
	}
	for _, c := range cases {
		r := Tally([]string{"no", "yes"}, c.golds, c.preds)
		if r.Accuracy != c.acc || fmt.Sprint(r.Confusion) != c.confusion || r.Majority != c.majority || r.Baseline != c.baseline {
			t.Errorf("Tally(%v, %v) = acc %v confusion %v majority %s %v; want %v %s %s %v",
				c.golds, c.preds, r.Accuracy, r.Confusion, r.Majority, r.Baseline, c.acc, c.confusion, c.majority, c.baseline)
		}
		if r.Gold[0]+r.Gold[1] != len(c.golds) || r.Predicted[0]+r.Predicted[1] != len(c.golds) {
			t.Errorf("counts %v %v", r.Gold, r.Predicted)
		}
	}
}

func TestSubset(t *testing.T) {
	task := &ChoiceTask{Name: "x"}
	for i := range 100 {
		task.Examples = append(task.Examples, ChoiceExample{Index: i})
	}
	idx := func(t *ChoiceTask) []int {
		var out []int
		for _, e := range t.Examples {
			out = append(out, e.Index)
		}
		return out
	}
	a, desc := task.Subset(10, 1)
	b, _ := task.Subset(10, 1)
	c, _ := task.Subset(10, 2)
	if !slices.Equal(idx(a), idx(b)) || slices.Equal(idx(a), idx(c)) || !slices.IsSorted(idx(a)) || len(a.Examples) != 10 {
		t.Fatalf("seed 1: %v and %v, seed 2: %v", idx(a), idx(b), idx(c))
	}
	if !strings.Contains(desc, "10 of 100") || !strings.Contains(desc, "seed 1") {
		t.Errorf("description %q", desc)
	}
	if all, desc := task.Subset(0, 1); len(all.Examples) != 100 || desc != "all 100 examples" {
		t.Errorf("limit 0: %d examples, %q", len(all.Examples), desc)
	}
	if all, _ := task.Subset(500, 1); len(all.Examples) != 100 {
		t.Errorf("limit 500 of 100: %d examples", len(all.Examples))
	}
}
