package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// systemd-analyze verify passes on the unit (with ExecStart pointing at the
// klink built for the tests: verify checks the binary exists).
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (.ci/run installs Debian's systemd package)")
	}
	unit, err := os.ReadFile(filepath.Join("..", "..", "systemd", "klink.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID", "User=klink", "StateDirectory=klink", "ConfigurationDirectory=klink", "LimitNOFILE=", "ProtectSystem=strict"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	p := filepath.Join(t.TempDir(), "klink.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/bin/klink", klinkBinary)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", p).CombinedOutput()
	if err != nil || strings.Contains(string(out), "klink.service:") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
