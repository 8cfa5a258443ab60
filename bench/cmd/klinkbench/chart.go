package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// bar is one bar of a chart: a label and a value.
type bar struct {
	label string
	value float64
}

// barChart draws horizontal bars on a logarithmic scale (the baseline costs
// tens of times what klink does, which a linear scale would hide), each
// labelled with its value, as a standalone SVG.
func barChart(title, unit string, bars []bar) []byte {
	const (
		width, left, right = 760, 250, 90
		top, rowH, barH    = 50, 36, 22
	)
	lo, hi := math.Inf(1), 0.0
	for _, b := range bars {
		if b.value > 0 {
			lo, hi = min(lo, b.value), max(hi, b.value)
		}
	}
	if hi == 0 {
		lo, hi = 0.1, 1
	}
	// Whole decades around the values.
	d0, d1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if d1 == d0 {
		d1++
	}
	plotW := float64(width - left - right)
	x := func(v float64) float64 {
		if v <= 0 {
			return 0
		}
		return (math.Log10(v) - d0) / (d1 - d0) * plotW
	}
	height := top + rowH*len(bars) + 40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", 10, html.EscapeString(title))
	for d := d0; d <= d1; d++ {
		gx := float64(left) + x(math.Pow(10, d))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", gx, top-8, gx, top+rowH*len(bars))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#666">%s</text>`+"\n", gx, top+rowH*len(bars)+18, html.EscapeString(decade(d)))
	}
	for i, br := range bars {
		y := top + i*rowH
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-10, y+barH-6, html.EscapeString(br.label))
		w := x(br.value)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, w, barH, barColor(i))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(left)+w+6, y+barH-6, html.EscapeString(fmt.Sprintf("%.3g %s", br.value, unit)))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#666">log scale</text>`+"\n", left, height-6)
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

func decade(d float64) string {
	v := math.Pow(10, d)
	if v >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g", v)
}

func barColor(i int) string {
	return []string{"#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2"}[i%5]
}
