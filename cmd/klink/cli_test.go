package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator"
)

// Every command's --help prints its usage and exits 0: asking for help is
// not an error (flag.ErrHelp used to make klink exit 1).
func TestEveryHelpExitsZero(t *testing.T) {
	for _, c := range [][]string{
		{"run"}, {"demo"}, {"status"}, {"plan"}, {"doctor"},
		{"netlink"}, {"netlink", "serve"}, {"netlink", "status"},
	} {
		for _, h := range []string{"--help", "-h"} {
			args := append(append([]string(nil), c...), h)
			out, err := exec.Command(klinkBinary, args...).CombinedOutput()
			if err != nil {
				t.Errorf("klink %s: %v\n%s", strings.Join(args, " "), err, out)
				continue
			}
			if !strings.Contains(strings.ToLower(string(out)), "usage") {
				t.Errorf("klink %s printed no usage:\n%s", strings.Join(args, " "), out)
			}
		}
	}
	out, err := exec.Command(klinkBinary, "plan", "--no-such-flag").CombinedOutput()
	if err == nil {
		t.Errorf("klink plan --no-such-flag exited 0:\n%s", out)
	}
}

// With no config file at the default path, klink status asks the daemon's
// default admin address instead of failing on the missing file.
func TestStatusWithoutConfigAsksDefaultAdmin(t *testing.T) {
	if _, err := os.Stat(config.DefaultPath); err == nil {
		t.Skipf("%s exists on this host: status reads it", config.DefaultPath)
	}
	ln, err := net.Listen("tcp", config.DefaultAdminListen)
	if err != nil {
		t.Skipf("the default admin address is in use here: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"links":[{"name":"asked-the-default","state":"ACTIVE"}]}`))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	out, err := exec.Command(klinkBinary, "status").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "link asked-the-default  ACTIVE") {
		t.Fatalf("klink status without a config: %v\n%s", err, out)
	}
	// A config named on the command line must exist.
	out, err = exec.Command(klinkBinary, "status", "--config", t.TempDir()+"/missing.yaml").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "missing.yaml") {
		t.Fatalf("klink status --config MISSING: %v\n%s", err, out)
	}
}

// make demo's table: redrawn in place on a terminal (cursor up over the
// previous table, lines cleared, nothing scrolled or wiped), plain lines
// without escape sequences anywhere else.
func TestDemoViewRedrawsInPlace(t *testing.T) {
	st := func(parts int) replicator.Status {
		m := replicator.MirrorStatus{Name: "orders", State: "ACTIVE"}
		for p := range parts {
			m.Partitions = append(m.Partitions, replicator.PartitionStatus{Partition: int32(p), SourceEndOffset: 10, DestEndOffset: 10})
		}
		return replicator.Status{Links: []replicator.LinkStatus{{Name: "demo", Mirrors: []replicator.MirrorStatus{m}}}}
	}
	var out strings.Builder
	v := newLiveView(&out)
	v.tty = true
	v.draw(st(3))
	first := out.String()
	if strings.Contains(first, "\033[2J") || strings.Contains(first, "\033[H") {
		t.Fatalf("the terminal view wipes the screen: %q", first)
	}
	lines := strings.Count(first, "\n") // title, header, 3 partitions
	if lines != 5 {
		t.Fatalf("first table: %d lines, want 5: %q", lines, first)
	}
	out.Reset()
	v.draw(st(2))
	second := out.String()
	if !strings.HasPrefix(second, "\033[5A\r") || !strings.HasSuffix(second, "\033[J") || strings.Count(second, "\033[K\n") != 4 {
		t.Fatalf("second table does not redraw over the first: %q", second)
	}
	out.Reset()
	v.forget()
	v.draw(st(2))
	if strings.HasPrefix(out.String(), "\033[") {
		t.Fatalf("after forget the table moved up over other output: %q", out.String())
	}

	var plain strings.Builder
	p := newLiveView(&plain)
	p.draw(st(3))
	p.draw(st(3))
	if strings.Contains(plain.String(), "\033") || strings.Count(plain.String(), "klink demo") != 2 {
		t.Fatalf("off a terminal: %q", plain.String())
	}
}
