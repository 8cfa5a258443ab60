package config

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// validate checks the decoded config as a whole and returns every problem.
func (c *Config) validate() []FieldError {
	var errs []FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, FieldError{path, fmt.Sprintf(format, args...)})
	}

	if c.Admin.Listen != "off" {
		if err := checkListen(c.Admin.Listen); err != nil {
			add("admin.listen", "%v (use host:port, or \"off\")", err)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "unknown level %q (use debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		add("log.format", "unknown format %q (use console or json)", c.Log.Format)
	}
	// A file that only runs network link services (klink netlink serve)
	// has no destination.
	destinationSide := false
	for _, l := range c.Links {
		destinationSide = destinationSide || !l.IsSource()
	}
	if destinationSide || len(c.Destination.Bootstrap) > 0 || len(c.Links)+len(c.NetworkLinks.Services) == 0 {
		errs = append(errs, checkBootstrap("destination.bootstrap", c.Destination.Bootstrap)...)
	}
	errs = append(errs, checkSecurity("destination", c.Destination.TLS, c.Destination.SASL)...)
	errs = append(errs, checkNetworkLinks(c.NetworkLinks, c.Links)...)
	errs = append(errs, checkCluster(c.Cluster)...)

	linkNames := map[string]int{}
	destTopics := map[string]string{} // destination topic -> path of the mirror that claims it
	for i, l := range c.Links {
		lp := fmt.Sprintf("links[%d]", i)
		switch {
		case l.Name == "":
			add(lp+".name", "required")
		case !validName(l.Name):
			add(lp+".name", "%q: use letters, digits, '.', '_' and '-' only (at most 249)", l.Name)
		default:
			if j, dup := linkNames[l.Name]; dup {
				add(lp+".name", "duplicate link name %q (also links[%d])", l.Name, j)
			} else {
				linkNames[l.Name] = i
			}
		}
		errs = append(errs, checkBootstrap(lp+".source.bootstrap", l.Source.Bootstrap)...)
		errs = append(errs, checkSecurity(lp+".source", l.Source.TLS, l.Source.SASL)...)
		errs = append(errs, checkLinkConfigs(lp+".configs", l.Configs)...)

		errs = append(errs, checkMirrorTopicOptions(lp+".mirrorTopicOptions", l.MirrorTopicOptions)...)
		errs = append(errs, checkLinkMode(lp, l)...)
		for i, f := range l.ACLFilters {
			errs = append(errs, checkACLFilter(fmt.Sprintf("%s.aclFilters[%d]", lp, i), f)...)
		}
		for i, f := range l.ConsumerGroupFilters {
			errs = append(errs, checkFilter(fmt.Sprintf("%s.consumerGroupFilters[%d]", lp, i), f, true)...)
		}
		for j, m := range l.MirrorTopics {
			mp := fmt.Sprintf("%s.mirrorTopics[%d]", lp, j)
			if pre := l.MirrorTopicOptions.Prefix; pre != "" && m.Name != "" && m.Name != pre+m.SourceTopic() {
				add(mp+".name", "%q: with mirrorTopicOptions.prefix %q the destination topic must be named %q", m.Name, pre, pre+m.SourceTopic())
			}
			if m.Name == "" {
				add(mp+".name", "required")
			} else if err := CheckTopicName(m.Name); err != nil {
				add(mp+".name", "%v", err)
			} else if other, dup := destTopics[m.Name]; dup {
				add(mp+".name", "destination topic %q is already mirrored by %s", m.Name, other)
			} else {
				destTopics[m.Name] = mp
			}
			if m.SourceTopicName != "" {
				if err := CheckTopicName(m.SourceTopicName); err != nil {
					add(mp+".sourceTopicName", "%v", err)
				}
			}
			if rf := m.ReplicationFactor; rf != 0 && rf != -1 && (rf < 1 || rf > 32767) {
				add(mp+".replicationFactor", "%d is out of range (1..32767, or leave it out for the broker default)", rf)
			}
			switch m.State {
			case "", StateActive, StatePause, StatePromote, StateFailover:
			default:
				add(mp+".state", "%q is not a mirror state (ACTIVE, PAUSE, PROMOTE or FAILOVER)", m.State)
			}
			errs = append(errs, checkTopicConfigs(mp+".configs", m.Configs)...)
		}
	}
	return errs
}

func checkBootstrap(path string, addrs []string) []FieldError {
	if len(addrs) == 0 {
		return []FieldError{{path, "at least one host:port is required"}}
	}
	var errs []FieldError
	for i, a := range addrs {
		if err := checkHostPort(a); err != nil {
			errs = append(errs, FieldError{fmt.Sprintf("%s[%d]", path, i), err.Error()})
		}
	}
	return errs
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q has an invalid port", addr)
	}
	return nil
}

// checkListen checks a listener address: the host may be empty (all
// interfaces) and the port 0 (any free port).
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q has an invalid port", addr)
	}
	return nil
}

func checkLinkConfigs(path string, props Properties) []FieldError {
	var errs []FieldError
	for _, k := range sortedKeys(props) {
		v := props[k]
		if _, ok := LinkConfigs[k]; !ok {
			known := sortedKeys(LinkConfigs)
			errs = append(errs, FieldError{joinPath(path, k), fmt.Sprintf("not a link config this klink version supports (supported: %s)", strings.Join(known, ", "))})
			continue
		}
		switch k {
		case "mirror.start.offset.spec":
			if v != StartEarliest && v != StartLatest {
				errs = append(errs, FieldError{joinPath(path, k), fmt.Sprintf("%q: use earliest or latest", v)})
			}
		case "consumer.offset.sync.enable", "acl.sync.enable":
			if v != "true" && v != "false" {
				errs = append(errs, FieldError{joinPath(path, k), fmt.Sprintf("%q: use true or false", v)})
			}
		case "cluster.link.retry.timeout.ms", "auto.create.mirror.topics.refresh.ms", "consumer.offset.sync.ms", "topic.config.sync.ms", "acl.sync.ms":
			if ms, err := strconv.ParseInt(v, 10, 64); err != nil || ms < 1 {
				errs = append(errs, FieldError{joinPath(path, k), fmt.Sprintf("%q: a whole number of milliseconds, at least 1", v)})
			}
		}
	}
	return errs
}

// checkTopicConfigs refuses destination topic settings that would break
// offset-exact, byte-identical mirroring.
func checkTopicConfigs(path string, props Properties) []FieldError {
	var errs []FieldError
	for _, k := range sortedKeys(props) {
		v := props[k]
		p := joinPath(path, k)
		switch {
		case k == "":
			errs = append(errs, FieldError{path, "empty config name"})
		case k == "compression.type" && v != "producer":
			errs = append(errs, FieldError{p, fmt.Sprintf("%q: a mirror topic must keep compression.type=producer so that batches are stored as the source stored them", v)})
		case k == "message.timestamp.type" && v != "CreateTime":
			errs = append(errs, FieldError{p, fmt.Sprintf("%q: a mirror topic must use CreateTime so that records keep their source timestamps", v)})
		}
	}
	return errs
}

// CheckTopicName applies Kafka's rules for topic names
// (kafka.common.internals.Topic).
func CheckTopicName(name string) error {
	switch {
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a valid topic name", name)
	case len(name) > 249:
		return fmt.Errorf("topic name is %d characters long (at most 249)", len(name))
	case !validName(name):
		return fmt.Errorf("%q: topic names use letters, digits, '.', '_' and '-' only", name)
	case name == "__consumer_offsets" || name == "__transaction_state" || name == "__cluster_metadata":
		return fmt.Errorf("%q is a Kafka internal topic and cannot be mirrored", name)
	}
	return nil
}

func validName(s string) bool { return s != "" && len(s) <= 249 && nameChars(s) }

// nameChars reports whether s holds only the characters of link and
// Kafka topic names: letters, digits, '.', '_' and '-'.
func nameChars(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func checkMirrorTopicOptions(path string, o MirrorTopicOptions) []FieldError {
	var errs []FieldError
	add := func(p, format string, args ...any) {
		errs = append(errs, FieldError{p, fmt.Sprintf(format, args...)})
	}
	if o.Prefix != "" {
		if err := CheckTopicName(o.Prefix + "x"); err != nil {
			add(path+".prefix", "%q cannot start a topic name: %v", o.Prefix, err)
		}
	}
	a := o.AutoCreateTopics
	if a.Enabled && len(a.TopicFilters) == 0 {
		add(path+".autoCreateTopics.topicFilters", "required when autoCreateTopics is enabled (e.g. {filterType: INCLUDE, name: \"*\", patternType: LITERAL})")
	}
	for i, f := range a.TopicFilters {
		errs = append(errs, checkFilter(fmt.Sprintf("%s.autoCreateTopics.topicFilters[%d]", path, i), f, false)...)
	}
	return errs
}

// checkFilter checks one INCLUDE/EXCLUDE name filter.
func checkFilter(fp string, f TopicFilter, nameOptional bool) []FieldError {
	var errs []FieldError
	if f.FilterType != "INCLUDE" && f.FilterType != "EXCLUDE" {
		errs = append(errs, FieldError{fp + ".filterType", fmt.Sprintf("%q: use INCLUDE or EXCLUDE", f.FilterType)})
	}
	if f.PatternType != "" && f.PatternType != "LITERAL" && f.PatternType != "PREFIXED" {
		errs = append(errs, FieldError{fp + ".patternType", fmt.Sprintf("%q: use LITERAL or PREFIXED", f.PatternType)})
	}
	if f.Name == "" && !nameOptional {
		errs = append(errs, FieldError{fp + ".name", "required (a name, a prefix, or \"*\" for all)"})
	}
	return errs
}

// checkACLFilter checks the names and values of one aclFilters entry
// (Kafka's spellings, case and separators ignored: transactionalId,
// TRANSACTIONAL_ID).
func checkACLFilter(fp string, f ACLFilter) []FieldError {
	var errs []FieldError
	check := func(key, v string, parse func(string) error, want string) {
		if v == "" {
			errs = append(errs, FieldError{fp + "." + key, "required (" + want + ")"})
		} else if parse(v) != nil {
			errs = append(errs, FieldError{fp + "." + key, fmt.Sprintf("%q: use %s", v, want)})
		}
	}
	check("resourceFilter.resourceType", f.ResourceFilter.ResourceType, func(s string) error {
		t, err := kmsg.ParseACLResourceType(s)
		if err == nil && t == kmsg.ACLResourceTypeUser {
			err = errors.New("not a link resource")
		}
		return err
	}, "any, cluster, group, topic, transactionalId or delegationToken")
	check("resourceFilter.patternType", f.ResourceFilter.PatternType, func(s string) error { _, err := kmsg.ParseACLResourcePatternType(s); return err }, "prefixed, literal, any or match")
	check("accessFilter.operation", f.AccessFilter.Operation, func(s string) error { _, err := kmsg.ParseACLOperation(s); return err }, "any, all, read, write, create, delete, alter, describe, clusterAction, describeConfigs, alterConfigs or idempotentWrite")
	check("accessFilter.permissionType", f.AccessFilter.PermissionType, func(s string) error { _, err := kmsg.ParseACLPermissionType(s); return err }, "any, allow or deny")
	return errs
}
