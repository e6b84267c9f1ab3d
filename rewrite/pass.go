package rewrite

import (
	"fmt"

	"github.com/onnxprune/onnxprune/graph"
)

// Pass is one named graph transformation.
type Pass struct {
	Name string
	Run  func(*graph.Model) error
}

// Run applies the passes in order, checking the graph after each.
func Run(m *graph.Model, passes ...Pass) error {
	for _, p := range passes {
		if err := p.Run(m); err != nil {
			return fmt.Errorf("rewrite: %s: %w", p.Name, err)
		}
		if err := graph.Check(m); err != nil {
			return fmt.Errorf("rewrite: graph invalid after %s: %w", p.Name, err)
		}
	}
	return nil
}
