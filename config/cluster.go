package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"time"
)

// Cluster makes klink one member of a group of daemons that share the links
// through Kafka's group protocol on the destination cluster. Absent, klink
// runs alone.
type Cluster struct {
	// Group is the group id on the destination cluster, the same on every
	// member.
	Group string `koanf:"group"`
	// Member is this daemon's stable name (static membership); default:
	// the host name.
	Member string `koanf:"member"`
	// SessionTimeout: a member not heard from for this long loses what it
	// owns (Go duration, e.g. "10s"; default 10s).
	SessionTimeout string `koanf:"sessionTimeout"`
	// StateTopic is the compacted topic on the destination holding the
	// state every member shares; default "_klink-<group>-state".
	StateTopic string `koanf:"stateTopic"`
}

// Cluster defaults and bounds. Kafka refuses session timeouts outside the
// brokers' group.min/max.session.timeout.ms (6 s and 30 min by default).
const (
	DefaultSessionTimeout = 10 * time.Second
	minSessionTimeout     = 6 * time.Second
	maxSessionTimeout     = 5 * time.Minute
)

// Enabled reports whether the config makes klink a cluster member.
func (c *Cluster) Enabled() bool { return c != nil && c.Group != "" }

// Session is the session timeout (validated).
func (c *Cluster) Session() time.Duration {
	if c == nil || c.SessionTimeout == "" {
		return DefaultSessionTimeout
	}
	d, err := time.ParseDuration(c.SessionTimeout)
	if err != nil {
		return DefaultSessionTimeout
	}
	return d
}

// MemberName is the member's name: cluster.member, else the host name.
func (c *Cluster) MemberName() string {
	if c.Member != "" {
		return c.Member
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "klink"
	}
	return h
}

// Topic is the state topic's name.
func (c *Cluster) Topic() string {
	if c.StateTopic != "" {
		return c.StateTopic
	}
	return "_klink-" + c.Group + "-state"
}

func checkCluster(c *Cluster) []FieldError {
	if c == nil {
		return nil
	}
	var errs []FieldError
	switch {
	case c.Group == "":
		errs = append(errs, FieldError{"cluster.group", "required when cluster is set (the group id every member shares)"})
	case !validName(c.Group):
		errs = append(errs, FieldError{"cluster.group", "\"" + c.Group + "\": use letters, digits, '.', '_' and '-' only (at most 249)"})
	}
	if c.Member != "" && !validName(c.Member) {
		errs = append(errs, FieldError{"cluster.member", "\"" + c.Member + "\": use letters, digits, '.', '_' and '-' only (at most 249)"})
	}
	if c.SessionTimeout != "" {
		d, err := time.ParseDuration(c.SessionTimeout)
		switch {
		case err != nil:
			errs = append(errs, FieldError{"cluster.sessionTimeout", "\"" + c.SessionTimeout + "\" is not a duration (e.g. 10s)"})
		case d < minSessionTimeout || d > maxSessionTimeout:
			errs = append(errs, FieldError{"cluster.sessionTimeout", c.SessionTimeout + " is out of range (" + minSessionTimeout.String() + ".." + maxSessionTimeout.String() + ")"})
		}
	}
	if c.StateTopic != "" {
		if err := CheckTopicName(c.StateTopic); err != nil {
			errs = append(errs, FieldError{"cluster.stateTopic", err.Error()})
		}
	}
	return errs
}

// Hash digests what every member of a klink cluster must agree on: the
// whole config except what is each host's own (stateDir, admin, log, the
// member's name, network link endpoints). Members compare it in the group
// protocol.
func (c *Config) Hash() string {
	shared := *c
	shared.StateDir, shared.Admin, shared.Log = "", Admin{}, Log{}
	shared.NetworkLinks.Endpoints = nil
	if c.Cluster != nil {
		cl := *c.Cluster
		cl.Member = ""
		shared.Cluster = &cl
	}
	raw, err := json.Marshal(shared)
	if err != nil {
		return "unhashable: " + err.Error()
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}
