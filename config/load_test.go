package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const validYAML = `
stateDir: /var/lib/klink
admin:
  listen: 127.0.0.1:9780
log: {level: info, format: console}
destination:
  bootstrap: ["127.0.0.1:9092"]
links:
  - name: east-to-west
    source:
      bootstrap: ["10.0.0.1:9092", "10.0.0.2:9092"]
      clusterID: "abc"
    configs:
      mirror.start.offset.spec: latest
    mirrorTopics:
      - name: orders
        sourceTopicName: orders-src
        replicationFactor: 3
        configs: {retention.ms: 604800000, cleanup.policy: compact}
      - name: payments
`

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Links[0]
	if l.Name != "east-to-west" || len(l.Source.Bootstrap) != 2 || l.Source.ClusterID != "abc" {
		t.Fatalf("link decoded wrong: %+v", l)
	}
	if got := l.StartOffsetSpec(); got != StartLatest {
		t.Fatalf("start offset spec = %q", got)
	}
	m := l.MirrorTopics[0]
	if m.Name != "orders" || m.SourceTopic() != "orders-src" || m.ReplicationFactor != 3 {
		t.Fatalf("mirror decoded wrong: %+v", m)
	}
	// A number in configs is kept as the text Kafka expects, and the
	// dotted key stays whole.
	if m.Configs["retention.ms"] != "604800000" || m.Configs["cleanup.policy"] != "compact" {
		t.Fatalf("configs decoded wrong: %#v", m.Configs)
	}
	if p := l.MirrorTopics[1]; p.SourceTopic() != "payments" || p.ReplicationFactor != 0 {
		t.Fatalf("defaults wrong: %+v", p)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte("destination: {bootstrap: [\"k:9092\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != DefaultStateDir || c.Admin.Listen != DefaultAdminListen || c.Log.Level != "info" || c.Log.Format != "console" {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if len(c.Links) != 0 {
		t.Fatalf("links = %v", c.Links)
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "klink.yaml")
	if err := os.WriteFile(p, []byte("destination: {bootstrap: []}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "destination.bootstrap: ") {
		t.Fatalf("error should name the file and key path: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file error should name it: %v", err)
	}
}

// Each invalid file is rejected with an error that starts a line with the
// key path at fault.
func TestInvalidConfigs(t *testing.T) {
	const dst = "destination: {bootstrap: [\"d:9092\"]}\n"
	const link = "links:\n  - name: l1\n    source: {bootstrap: [\"s:9092\"]}\n"
	cases := []struct {
		name, yaml, path, contains string
	}{
		{"unknown top-level key", dst + "statedir: /x\n", "statedir", "unknown key"},
		{"unknown nested key", dst + "admin: {listen: \"127.0.0.1:1\", port: 5}\n", "admin.port", "unknown key"},
		{"unknown link key", dst + link + "    mirrors: []\n", "links[0].mirrors", "unknown key"},
		{"unknown mirror key", dst + link + "    mirrorTopics:\n      - {name: a, partitions: 3}\n", "links[0].mirrorTopics[0].partitions", "unknown key"},
		{"wrong type replicationFactor", dst + link + "    mirrorTopics:\n      - {name: a, replicationFactor: three}\n", "links[0].mirrorTopics[0].replicationFactor", "whole number"},
		{"wrong type bootstrap", "destination: {bootstrap: \"d:9092\"}\n", "destination.bootstrap", "list"},
		{"wrong type links", dst + "links: {name: x}\n", "links", "list"},
		{"wrong type stateDir", dst + "stateDir: [a, b]\n", "stateDir", "string"},
		{"wrong type configs", dst + link + "    configs: [a]\n", "links[0].configs", "mapping"},
		{"nested value in configs", dst + link + "    mirrorTopics:\n      - name: a\n        configs: {retention.ms: [1]}\n", "links[0].mirrorTopics[0].configs.retention.ms", "single value"},
		{"empty destination bootstrap", "destination: {bootstrap: []}\n", "destination.bootstrap", "at least one"},
		{"missing destination", "stateDir: /x\n", "destination.bootstrap", "at least one"},
		{"empty source bootstrap", dst + "links:\n  - name: l1\n    source: {bootstrap: []}\n", "links[0].source.bootstrap", "at least one"},
		{"bad bootstrap address", dst + "links:\n  - name: l1\n    source: {bootstrap: [\"s:9092\", \"nohost\"]}\n", "links[0].source.bootstrap[1]", "host:port"},
		{"bad port", "destination: {bootstrap: [\"d:99999\"]}\n", "destination.bootstrap[0]", "invalid port"},
		{"missing link name", dst + "links:\n  - source: {bootstrap: [\"s:9092\"]}\n", "links[0].name", "required"},
		{"bad link name", dst + "links:\n  - name: \"a b\"\n    source: {bootstrap: [\"s:9092\"]}\n", "links[0].name", "letters"},
		{"duplicate link name", dst + link + "  - name: l1\n    source: {bootstrap: [\"s:9092\"]}\n", "links[1].name", "duplicate link name"},
		{"missing mirror name", dst + link + "    mirrorTopics:\n      - {sourceTopicName: a}\n", "links[0].mirrorTopics[0].name", "required"},
		{"duplicate mirror name", dst + link + "    mirrorTopics:\n      - {name: a}\n      - {name: b}\n      - {name: a}\n", "links[0].mirrorTopics[2].name", "already mirrored by links[0].mirrorTopics[0]"},
		{"two mirrors onto one destination topic across links", dst + link + "    mirrorTopics:\n      - {name: a}\n  - name: l2\n    source: {bootstrap: [\"s2:9092\"]}\n    mirrorTopics:\n      - {name: x, sourceTopicName: y}\n      - {name: a, sourceTopicName: other}\n", "links[1].mirrorTopics[1].name", "already mirrored by links[0].mirrorTopics[0]"},
		{"invalid topic name", dst + link + "    mirrorTopics:\n      - {name: \"or/ders\"}\n", "links[0].mirrorTopics[0].name", "topic names"},
		{"internal topic", dst + link + "    mirrorTopics:\n      - {name: a, sourceTopicName: __consumer_offsets}\n", "links[0].mirrorTopics[0].sourceTopicName", "internal topic"},
		{"explicit mirror ignores the prefix", dst + "links:\n  - name: l\n    source: {bootstrap: [\"h:1\"]}\n    mirrorTopicOptions: {prefix: \"east.\"}\n    mirrorTopics:\n      - {name: orders}\n", "links[0].mirrorTopics[0].name", `must be named "east.orders"`},
		{"bad filter type", dst + "links:\n  - name: l\n    source: {bootstrap: [\"h:1\"]}\n    mirrorTopicOptions:\n      autoCreateTopics:\n        enabled: true\n        topicFilters: [{filterType: include, name: \"*\"}]\n", "links[0].mirrorTopicOptions.autoCreateTopics.topicFilters[0].filterType", "INCLUDE or EXCLUDE"},
		{"auto-create without filters", dst + "links:\n  - name: l\n    source: {bootstrap: [\"h:1\"]}\n    mirrorTopicOptions: {autoCreateTopics: {enabled: true}}\n", "links[0].mirrorTopicOptions.autoCreateTopics.topicFilters", "required"},
		{"bad acl resource type", dst + "links:\n  - name: l\n    source: {bootstrap: [\"h:1\"]}\n    aclFilters:\n      - resourceFilter: {resourceType: topics, name: \"*\", patternType: any}\n        accessFilter: {principal: \"*\", host: \"*\", operation: any, permissionType: any}\n", "links[0].aclFilters[0].resourceFilter.resourceType", "transactionalId"},
		{"bad acl permission", dst + "links:\n  - name: l\n    source: {bootstrap: [\"h:1\"]}\n    aclFilters:\n      - resourceFilter: {resourceType: topic, name: \"*\", patternType: any}\n        accessFilter: {operation: any, permissionType: maybe}\n", "links[0].aclFilters[0].accessFilter.permissionType", "allow or deny"},
		{"unknown mirror state", dst + link + "    mirrorTopics:\n      - {name: a, state: paused}\n", "links[0].mirrorTopics[0].state", "not a mirror state"},
		{"bad retry timeout", dst + "links:\n  - name: l\n    source: {bootstrap: [\"h:1\"]}\n    configs: {cluster.link.retry.timeout.ms: soon}\n", "links[0].configs.cluster.link.retry.timeout.ms", "milliseconds"},
		{"replication factor out of range", dst + link + "    mirrorTopics:\n      - {name: a, replicationFactor: 40000}\n", "links[0].mirrorTopics[0].replicationFactor", "out of range"},
		{"unknown link config", dst + link + "    configs: {consumer.offset.sync.mss: 5}\n", "links[0].configs.consumer.offset.sync.mss", "not a link config"},
		{"bad start offset spec", dst + link + "    configs: {mirror.start.offset.spec: beginning}\n", "links[0].configs.mirror.start.offset.spec", "earliest or latest"},
		{"compression override", dst + link + "    mirrorTopics:\n      - name: a\n        configs: {compression.type: lz4}\n", "links[0].mirrorTopics[0].configs.compression.type", "producer"},
		{"log append time override", dst + link + "    mirrorTopics:\n      - name: a\n        configs: {message.timestamp.type: LogAppendTime}\n", "links[0].mirrorTopics[0].configs.message.timestamp.type", "CreateTime"},
		{"bad log level", dst + "log: {level: loud}\n", "log.level", "unknown level"},
		{"bad log format", dst + "log: {format: xml}\n", "log.format", "unknown format"},
		{"bad admin listen", dst + "admin: {listen: localhost}\n", "admin.listen", "host:port"},
		{"not yaml", "destination: [\n", "", "not valid YAML"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			var line string
			for _, l := range strings.Split(err.Error(), "\n") {
				if tc.path == "" || strings.HasPrefix(l, tc.path+": ") {
					line = l
					break
				}
			}
			if line == "" {
				t.Fatalf("no error line starts with %q:\n%v", tc.path+": ", err)
			}
			if !strings.Contains(line, tc.contains) {
				t.Fatalf("error line %q does not say %q", line, tc.contains)
			}
		})
	}
}

// All problems are reported at once, so a reload tells the whole story.
func TestAllErrorsReported(t *testing.T) {
	_, err := Parse([]byte("destination: {bootstrap: []}\nlog: {level: loud}\nlinks:\n  - name: \"\"\n    source: {bootstrap: []}\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, p := range []string{"destination.bootstrap: ", "log.level: ", "links[0].name: ", "links[0].source.bootstrap: "} {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("missing %q in:\n%v", p, err)
		}
	}
}

func TestTopicFilters(t *testing.T) {
	a := AutoCreateTopics{Enabled: true, TopicFilters: []TopicFilter{
		{FilterType: "INCLUDE", Name: "*", PatternType: "LITERAL"},
		{FilterType: "EXCLUDE", Name: "tmp.", PatternType: "PREFIXED"},
		{FilterType: "EXCLUDE", Name: "secret"},
	}}
	for topic, want := range map[string]bool{"orders": true, "tmp.x": false, "tmp": true, "secret": false, "secrets": true, "__consumer_offsets": false, "__transaction_state": false} {
		if got := a.Selects(topic); got != want {
			t.Errorf("Selects(%q) = %v, want %v", topic, got, want)
		}
	}
	a.Enabled = false
	if a.Selects("orders") {
		t.Error("a disabled auto-create selects topics")
	}
	only := AutoCreateTopics{Enabled: true, TopicFilters: []TopicFilter{{FilterType: "INCLUDE", Name: "app.", PatternType: "PREFIXED"}}}
	if !only.Selects("app.orders") || only.Selects("orders") {
		t.Error("PREFIXED INCLUDE")
	}
}

func TestClusterSection(t *testing.T) {
	base := "destination:\n  bootstrap: [\"d:9092\"]\nlinks:\n  - name: a\n    source:\n      bootstrap: [\"s:9092\"]\n"
	c, err := Parse([]byte(base + "cluster:\n  group: klink-west\n  member: vm-3\n  sessionTimeout: 12s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cluster.Enabled() || c.Cluster.MemberName() != "vm-3" || c.Cluster.Session() != 12*time.Second || c.Cluster.Topic() != "_klink-klink-west-state" {
		t.Fatalf("cluster section read as %+v", c.Cluster)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"cluster:\n  member: x\n", "cluster.group: required"},
		{"cluster:\n  group: \"a b\"\n", "cluster.group: \"a b\""},
		{"cluster:\n  group: g\n  sessionTimeout: ten\n", "cluster.sessionTimeout: \"ten\" is not a duration"},
		{"cluster:\n  group: g\n  sessionTimeout: 1s\n", "cluster.sessionTimeout: 1s is out of range"},
		{"cluster:\n  group: g\n  stateTopic: \"..\"\n", "cluster.stateTopic:"},
	} {
		_, err := Parse([]byte(base + tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	// Members differ in their own names and local settings, never in the
	// hash; any shared setting changes it.
	a, _ := Parse([]byte(base + "cluster:\n  group: g\n  member: one\nstateDir: /a\n"))
	b, _ := Parse([]byte(base + "cluster:\n  group: g\n  member: two\nstateDir: /b\n"))
	d, _ := Parse([]byte(base + "cluster:\n  group: g\n  member: two\n  sessionTimeout: 20s\n"))
	if a.Hash() != b.Hash() {
		t.Errorf("members with only their own settings different hash apart: %s %s", a.Hash(), b.Hash())
	}
	if a.Hash() == d.Hash() {
		t.Errorf("a different session timeout hashes the same")
	}
}

func TestAdoptKeys(t *testing.T) {
	cfg, err := Parse([]byte("destination: {bootstrap: [\"d:9092\"]}\nlinks:\n  - name: back\n    source: {bootstrap: [\"s:9092\"]}\n    mirrorTopicOptions: {adopt: true}\n    mirrorTopics:\n      - {name: orders, adopt: true}\n      - {name: other}\n"))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Links[0]
	if !l.MirrorTopicOptions.Adopt || !l.MirrorTopics[0].Adopt || l.MirrorTopics[1].Adopt {
		t.Fatalf("adopt: options %v, orders %v, other %v", l.MirrorTopicOptions.Adopt, l.MirrorTopics[0].Adopt, l.MirrorTopics[1].Adopt)
	}
	if _, err := Parse([]byte("destination: {bootstrap: [\"d:9092\"]}\nlinks:\n  - name: back\n    source: {bootstrap: [\"s:9092\"]}\n    mirrorTopics:\n      - {name: orders, adopt: maybe}\n")); err == nil || !strings.Contains(err.Error(), "links[0].mirrorTopics[0].adopt") {
		t.Fatalf("adopt: maybe: %v", err)
	}
}
