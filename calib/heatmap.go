package calib

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// WriteHeatmapSVG draws d(l, n) as a heatmap: columns are the first
// removed block l, rows the number of blocks n, darker is more
// redundant (smaller distance); the best start for each n is outlined.
func WriteHeatmapSVG(w io.Writer, s *Stats, allTokens bool, title string) error {
	const cell, left, top, pad = 36, 56, 56, 90
	L := s.Layers
	width, height := max(left+L*cell+20, 720), top+L*cell+pad
	lo, hi := math.Inf(1), math.Inf(-1)
	for l := range L {
		for n := 1; l+n <= L; n++ {
			v := s.Distance(l, n, allTokens)
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", left, xmlEscape(title))
	where := "last real token"
	if allTokens {
		where = "all real tokens"
	}
	fmt.Fprintf(&b, `<text x="%d" y="38">angular distance d(l, n) = arccos(cos(h_l, h_l+n))/π, %s; %d samples, %d tokens</text>`+"\n", left, where, s.Samples, s.Tokens)
	for n := 1; n <= L; n++ {
		y := top + (n-1)*cell
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">n=%d</text>`+"\n", left-6, y+cell/2+4, n)
		best, bestV := -1, math.Inf(1)
		for l := 0; l+n <= L; l++ {
			if v := s.Distance(l, n, allTokens); v < bestV {
				best, bestV = l, v
			}
		}
		for l := 0; l+n <= L; l++ {
			v := s.Distance(l, n, allTokens)
			t := 0.0
			if hi > lo {
				t = (v - lo) / (hi - lo)
			}
			// Dark blue (redundant) to pale yellow (far).
			r, g, bl := int(20+235*t), int(40+215*t), int(120+40*t)
			x := left + l*cell
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="rgb(%d,%d,%d)"><title>l=%d n=%d d=%.4f</title></rect>`+"\n", x, y, cell-1, cell-1, r, g, bl, l, n, v)
			text := "white"
			if t > 0.55 {
				text = "black"
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="%s" font-size="9">%.3f</text>`+"\n", x+cell/2, y+cell/2+3, text, v)
			if l == best {
				fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="red" stroke-width="2"/>`+"\n", x+1, y+1, cell-3, cell-3)
			}
		}
	}
	for l := range L {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%d</text>`+"\n", left+l*cell+cell/2, top+L*cell+14, l)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">first removed block l (red: best l for each n)</text>`+"\n", left+L*cell/2, top+L*cell+32)
	fmt.Fprintf(&b, `<text x="%d" y="%d">scale: %.3f (dark) … %.3f (light)</text>`+"\n", left, top+L*cell+52, lo, hi)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
