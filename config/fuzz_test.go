package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// topLevelKeys are the keys a config file may have at its top.
var topLevelKeys = map[string]bool{"stateDir": true, "admin": true, "log": true, "destination": true, "networkLinks": true, "links": true, "cluster": true}

// keyPathRE is a key path as errors write it: keys (YAML key names, and
// Kafka-style config names with dots) joined by dots, list indexes in
// brackets; a map key with other characters is quoted.
var keyPathRE = regexp.MustCompile(`^(?:[A-Za-z0-9_.-]+|"(?:[^"\\]|\\.)*")(?:\[[0-9]+\]|\.(?:[A-Za-z0-9_.-]+|"(?:[^"\\]|\\.)*"))*$`)

// fuzzSeeds are the README's example, the packaged default, the valid
// config of the tests and the invalid ones of TestInvalidConfigs' kinds.
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		f.Fatal(err)
	}
	for _, block := range strings.Split(string(readme), "```yaml\n")[1:] {
		seeds = append(seeds, []byte(block[:strings.Index(block, "```")]))
	}
	if def, err := os.ReadFile("../systemd/klink.yaml"); err == nil {
		seeds = append(seeds, def)
	}
	const dst = "destination: {bootstrap: [\"d:9092\"]}\n"
	const link = "links:\n  - name: l1\n    source: {bootstrap: [\"s:9092\"]}\n"
	for _, s := range []string{
		validYAML,
		dst + "statedir: /x\n",
		dst + "a: 1\nb: 2\n",
		dst + link + "    mirrorTopics:\n      - {name: a, replicationFactor: three, partitions: 3}\n",
		dst + link + "    mirrorTopics:\n      - name: a\n        configs: {retention.ms: [1], compression.type: lz4, \"\": x}\n",
		dst + link + "    configs: {cluster.link.retry.timeout.ms: soon, \"x y\": 1}\n",
		dst + link + "    linkMode: SOURCE\n    destination: {address: \"k:1\", tls: {enabled: true, caFile: /nonexistent/ca.pem}}\n",
		dst + link + "    linkMode: DESTINATION\n    connectionMode: INBOUND\n    inbound: {listen: \":9443\"}\n",
		"networkLinks:\n  services:\n    - {name: e, listen: \":1\", accept: {networks: [n]}, source: {bootstrap: [\"s:1\"]}, allow: [\"x\"]}\n",
		dst + "links: {name: x}\nlog: {level: loud, format: xml}\nadmin: {listen: localhost}\n",
		// Line breaks in a file name and in a key: each problem stays one
		// line.
		"destination:\n  bootstrap: [\"d:9092\"]\n  tls:\n    enabled: true\n    caFile: |\n      /nonexistent\n      ca.pem\n",
		dst + "? |\n  two\n  lines\n: 1\n" + link + "    configs:\n      ? |\n        a\n        b\n      : 1\n",
		"destination: [\n",
		dst + link + "cluster:\n  group: west\n  member: vm-3\n  sessionTimeout: 10s\n  stateTopic: _klink-west-state\n",
		dst + link + "cluster:\n  group: \"a b\"\n  sessionTimeout: 1h\n",
		"- a\n- b\n",
		"",
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// FuzzLoad loads arbitrary bytes as a config file, the way klink run does.
// Load never panics; it returns a config that validates, or an error that
// names the file and then, one per line, every problem, each line starting
// with the key path at fault ("links[0].source.bootstrap: ..."). YAML that
// does not parse is the one error without a key path: "not valid YAML".
func FuzzLoad(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		// validate opens the files a config names (certificates,
		// secrets). Opening a device can block or do worse: inputs that
		// could name one are left out.
		if bytes.Contains(data, []byte("dev")) || bytes.ContainsAny(data, `\%`) || bytes.Contains(data, []byte("binary")) {
			return
		}
		path := filepath.Join(dir, "klink.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err == nil {
			if c == nil {
				t.Fatal("no config and no error")
			}
			if errs := c.validate(); len(errs) > 0 {
				t.Fatalf("a loaded config does not validate: %v", errs)
			}
			if c.StateDir == "" || c.Admin.Listen == "" || c.Log.Level == "" || c.Log.Format == "" {
				t.Fatalf("defaults not applied: %+v", c)
			}
			return
		}
		if c != nil {
			t.Fatal("a config with an error")
		}
		msg := err.Error()
		head := "config " + path + ":\n"
		if !strings.HasPrefix(msg, head) {
			t.Fatalf("error does not name the file:\n%s", msg)
		}
		if strings.HasPrefix(msg[len(head):], "not valid YAML: ") {
			return
		}
		var joined interface{ Unwrap() []error }
		if !errors.As(err, &joined) {
			t.Fatalf("not a list of problems: %T\n%s", errors.Unwrap(err), msg)
		}
		problems := joined.Unwrap()
		lines := strings.Split(msg[len(head):], "\n")
		if len(lines) != len(problems) || len(problems) == 0 {
			t.Fatalf("%d problems on %d lines:\n%s", len(problems), len(lines), msg)
		}
		for i, p := range problems {
			var fe FieldError
			if !errors.As(p, &fe) {
				t.Fatalf("problem %d is a %T, not a FieldError: %v", i, p, p)
			}
			if lines[i] != fe.Path+": "+fe.Msg {
				t.Fatalf("line %d %q is not problem %d (%q: %q)", i, lines[i], i, fe.Path, fe.Msg)
			}
			if !keyPathRE.MatchString(fe.Path) {
				t.Fatalf("line %d %q does not start with a key path (%q)", i, lines[i], fe.Path)
			}
			top := fe.Path[:strings.IndexAny(fe.Path+".", ".[")]
			if !topLevelKeys[top] && fe.Msg != "unknown key" {
				t.Fatalf("line %d %q: %q is not a top-level key", i, lines[i], top)
			}
		}
	})
}
