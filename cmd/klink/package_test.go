package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klink-io/klink/config"
)

// The Debian package installs, with dpkg -i into a throwaway root, the
// binary, the unit, a default config klink accepts (readable by the klink
// group), the klink system user, and the alert rules and dashboard under
// /usr/share/klink/ (the same bytes as systemd/, readable by all).
func TestDebianPackage(t *testing.T) {
	for _, tool := range []string{"dpkg", "dpkg-deb", "systemd-sysusers"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian's dpkg and systemd packages)", tool)
		}
	}
	if os.Getuid() != 0 {
		t.Skip("dpkg -i into a throwaway root needs root")
	}
	out, err := exec.Command(filepath.Join("..", "..", "systemd", "build-deb"), klinkBinary, "0.0.0+test", t.TempDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb: %v\n%s", err, out)
	}
	deb := strings.TrimSpace(string(out))
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "etc/passwd", "etc/group"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// systemd, which the package depends on, is not in the throwaway root.
	if out, err := exec.Command("dpkg", "--root="+root, "--force-script-chrootless", "--force-depends", "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	for _, f := range []string{"usr/bin/klink", "lib/systemd/system/klink.service", "usr/lib/sysusers.d/klink.conf", "etc/klink/klink.yaml"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("not installed: %v", err)
		}
	}
	for _, f := range []string{"klink-rules.yml", "klink-dashboard.json"} {
		installed := filepath.Join(root, "usr/share/klink", f)
		fi, err := os.Stat(installed)
		if err != nil {
			t.Fatalf("not installed: %v", err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644", installed, fi.Mode().Perm())
		}
		got, _ := os.ReadFile(installed)
		want, err := os.ReadFile(filepath.Join("..", "..", "systemd", f))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from systemd/%s (%v)", installed, f, err)
		}
	}
	if out, err := exec.Command("dpkg-deb", "--contents", deb).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "./usr/share/klink/klink-rules.yml") || !strings.Contains(string(out), "./usr/share/klink/klink-dashboard.json") {
		t.Errorf("dpkg-deb --contents: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), "klink:x:") {
		t.Fatalf("no klink user:\n%s", passwd)
	}
	if _, err := config.Load(filepath.Join(root, "etc/klink/klink.yaml")); err != nil {
		t.Fatalf("the default config: %v", err)
	}
	if out, err := exec.Command(filepath.Join(root, "usr/bin/klink"), "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "klink ") {
		t.Fatalf("installed klink version: %v %s", err, out)
	}
	status, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
	if !strings.Contains(string(status), "Package: klink\nStatus: install ok installed") {
		t.Fatalf("dpkg status:\n%s", status)
	}
}
