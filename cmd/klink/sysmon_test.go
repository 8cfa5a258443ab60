package main

import "testing"

func TestHasGodebug(t *testing.T) {
	for _, tc := range []struct {
		godebug string
		want    bool
	}{
		{"", false},
		{"schedtrace=0", true},
		{"gctrace=1,schedtrace=1000", true},
		{"gctrace=1, schedtrace=1000", false}, // the runtime does not trim: " schedtrace" is not its key
		{"schedtrace=", false},
		{"schedtrace=often", false},
		{"scheddetail=1", false},
		{"myschedtrace=1", false},
		{"schedtrace", false}, // no value: the runtime ignores it too
	} {
		if got := hasGodebug(tc.godebug, "schedtrace"); got != tc.want {
			t.Errorf("hasGodebug(%q) = %v, want %v", tc.godebug, got, tc.want)
		}
	}
}
