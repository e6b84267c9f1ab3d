package calib

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// stats with hand-chosen distances: blocks 2-3 are the most redundant
// pair, block 4 the single block with the lowest BI.
func handStats() *Stats {
	// L = 6; Angular[l][n-1].
	return &Stats{
		Layers: 6,
		Angular: [][]float64{
			{0.30, 0.40, 0.45, 0.50, 0.55, 0.60},
			{0.20, 0.35, 0.40, 0.45, 0.50},
			{0.10, 0.12, 0.30, 0.40},
			{0.11, 0.25, 0.35},
			{0.05, 0.30},
			{0.40},
		},
		BlockInfluence: []float64{0.9, 0.3, 0.2, 0.25, 0.1, 0.5},
	}
}

func TestSelect(t *testing.T) {
	s := handStats()
	cases := []struct {
		name string
		plan func() (*Plan, error)
		want []int
	}{
		{"angular n=1", func() (*Plan, error) { return SelectAngular(s, 1, false) }, []int{4}},
		{"angular n=2", func() (*Plan, error) { return SelectAngular(s, 2, false) }, []int{2, 3}},
		{"angular n=3", func() (*Plan, error) { return SelectAngular(s, 3, false) }, []int{2, 3, 4}},
		{"bi n=2", func() (*Plan, error) { return SelectBI(s, 2) }, []int{2, 4}},
		{"last n=2", func() (*Plan, error) { return SelectLast(6, 2) }, []int{3, 4}},
		{"layers", func() (*Plan, error) { return SelectLayers(6, []int{5, 1}) }, []int{1, 5}},
	}
	for _, c := range cases {
		p, err := c.plan()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(p.Remove, c.want) {
			t.Errorf("%s: remove %v, want %v (%s)", c.name, p.Remove, c.want, p.Reason)
		}
	}
	for _, bad := range []func() (*Plan, error){
		func() (*Plan, error) { return SelectAngular(s, 6, false) },
		func() (*Plan, error) { return SelectAngular(s, 0, false) },
		func() (*Plan, error) { return SelectBI(s, 7) },
		func() (*Plan, error) { return SelectLayers(6, []int{6}) },
		func() (*Plan, error) { return SelectLayers(6, []int{1, 1}) },
		func() (*Plan, error) { return SelectLayers(6, []int{0, 1, 2, 3, 4, 5}) },
	} {
		if p, err := bad(); err == nil {
			t.Errorf("accepted %v", p.Remove)
		}
	}
}

func TestPlanRoundTripAndParse(t *testing.T) {
	p, _ := SelectAngular(handStats(), 2, false)
	path := filepath.Join(t.TempDir(), "plan.json")
	if err := WritePlan(p, path); err != nil {
		t.Fatal(err)
	}
	q, err := ReadPlan(path)
	if err != nil || !slices.Equal(q.Remove, p.Remove) || q.Strategy != "angular" {
		t.Fatalf("read back %+v, %v", q, err)
	}
	got, err := ParseLayers("2-4,7")
	if err != nil || !slices.Equal(got, []int{2, 3, 4, 7}) {
		t.Fatalf("ParseLayers = %v, %v", got, err)
	}
	if _, err := ParseLayers("2,x"); err == nil || !strings.Contains(err.Error(), "x") {
		t.Fatalf("ParseLayers accepted junk: %v", err)
	}
	if blocksString([]int{1, 2, 3, 7}) != "blocks 1-3,7" || blocksString([]int{4}) != "block 4" {
		t.Fatal(blocksString([]int{1, 2, 3, 7}))
	}
}
