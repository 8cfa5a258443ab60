package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"regexp"
	"strconv"
	"testing"
)

// The chart is well-formed SVG, with one bar per value, labelled, and
// longer bars for larger values (log scale).
func TestBarChart(t *testing.T) {
	svg := barChart("CPU seconds per GiB", "CPU-s/GiB", []bar{{"floor", 0.29}, {"klink", 0.71}, {"baseline <kgo>", 32.8}})
	d := xml.NewDecoder(bytes.NewReader(svg))
	for {
		_, err := d.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("not well-formed: %v\n%s", err, svg)
		}
	}
	widths := regexp.MustCompile(`<rect x="250" y="\d+" width="([0-9.]+)"`).FindAllSubmatch(svg, -1)
	if len(widths) != 3 {
		t.Fatalf("%d bars, want 3:\n%s", len(widths), svg)
	}
	var w []float64
	for _, m := range widths {
		f, _ := strconv.ParseFloat(string(m[1]), 64)
		w = append(w, f)
	}
	if !(0 < w[0] && w[0] < w[1] && w[1] < w[2]) {
		t.Fatalf("bar widths %v do not grow with the values", w)
	}
	for _, want := range []string{"floor", "klink", "baseline &lt;kgo&gt;", "32.8 CPU-s/GiB", "0.29 CPU-s/GiB"} {
		if !regexp.MustCompile(regexp.QuoteMeta(want)).Match(svg) {
			t.Errorf("chart lacks %q", want)
		}
	}
}
