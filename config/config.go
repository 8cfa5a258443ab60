// Package config is klink's configuration file: its schema, loading (koanf,
// YAML), defaults and validation. Every error names the key path at fault,
// e.g. "links[0].mirrorTopics[2].name: ...", so that an operator can find it.
package config

import (
	"strconv"
	"strings"
	"time"
)

// DefaultPath is where klink looks for its config when none is given.
const DefaultPath = "/etc/klink/klink.yaml"

// Config is the whole file. Field tags are the YAML key names; they are part
// of klink's interface and must not be renamed.
type Config struct {
	// StateDir holds the bbolt state file (klink.db).
	StateDir     string       `koanf:"stateDir"`
	Admin        Admin        `koanf:"admin"`
	Log          Log          `koanf:"log"`
	Destination  Destination  `koanf:"destination"`
	NetworkLinks NetworkLinks `koanf:"networkLinks"`
	Links        []Link       `koanf:"links"`
	// Cluster, if set, makes this daemon one member of a klink cluster.
	Cluster *Cluster `koanf:"cluster"`
}

// Admin is the HTTP listener for /status and /healthz.
type Admin struct {
	// Listen is host:port; empty disables the listener.
	Listen string `koanf:"listen"`
	// PartitionMetrics exports per-partition series on /metrics (on by
	// default; past 10,000 partitions only per-mirror series are).
	PartitionMetrics *bool `koanf:"partitionMetrics"`
}

// Log configures zap.
type Log struct {
	Level  string `koanf:"level"`  // debug | info | warn | error
	Format string `koanf:"format"` // console | json
}

// Destination is the Kafka cluster klink runs beside and writes into.
type Destination struct {
	Bootstrap []string `koanf:"bootstrap"`
	TLS       TLS      `koanf:"tls"`
	SASL      SASL     `koanf:"sasl"`
}

// Link mirrors topics from one source cluster into the destination.
type Link struct {
	Name   string `koanf:"name"`
	Source Source `koanf:"source"`
	// Configs takes Confluent cluster-link config names
	// (e.g. mirror.start.offset.spec); see LinkConfigs for what is known.
	Configs            Properties         `koanf:"configs"`
	MirrorTopicOptions MirrorTopicOptions `koanf:"mirrorTopicOptions"`
	MirrorTopics       []MirrorTopic      `koanf:"mirrorTopics"`
	// ConsumerGroupFilters select the source consumer groups whose offsets
	// are copied (consumer.offset.sync.enable); EXCLUDE wins, name
	// defaults to "*".
	ConsumerGroupFilters []TopicFilter `koanf:"consumerGroupFilters"`
	// ACLFilters select the source ACLs copied to the destination
	// (acl.sync.enable), as in the CFK ClusterLink resource.
	ACLFilters []ACLFilter `koanf:"aclFilters"`
	// Source-initiated links: LinkMode SOURCE is the klink beside a source
	// that may only dial out: it connects to Destination (the other
	// klink) and relays its Kafka connections to the source. LinkMode
	// DESTINATION (the default) with ConnectionMode INBOUND is that other
	// klink: it listens (Inbound) and reaches the source only over that
	// connection. Same link name on both sides; mTLS both ways.
	LinkMode       string          `koanf:"linkMode"`
	ConnectionMode string          `koanf:"connectionMode"`
	Inbound        LinkInbound     `koanf:"inbound"`
	Destination    LinkDestination `koanf:"destination"`
}

// Link modes and connection modes.
const (
	LinkModeDestination = "DESTINATION"
	LinkModeSource      = "SOURCE"
	ConnectionOutbound  = "OUTBOUND"
	ConnectionInbound   = "INBOUND"
)

// IsSource reports whether the link runs in source mode (relaying only).
func (l Link) IsSource() bool { return l.LinkMode == LinkModeSource }

// IsInbound reports whether the link reaches its source over the
// connection the source side opens.
func (l Link) IsInbound() bool { return !l.IsSource() && l.ConnectionMode == ConnectionInbound }

// LinkInbound is where the destination side of a source-initiated link
// listens for the source side.
type LinkInbound struct {
	Listen string `koanf:"listen"`
	// TLS: certFile and keyFile are this side's certificate; caFile signs
	// the source side's certificate (its identity).
	TLS    TLS `koanf:"tls"`
	Accept struct {
		Networks     []string `koanf:"networks"`
		Environments []string `koanf:"environments"`
	} `koanf:"accept"`
}

// LinkDestination is the destination-side klink a source-mode link dials.
type LinkDestination struct {
	Address    string `koanf:"address"`
	ServerName string `koanf:"serverName"`
	TLS        TLS    `koanf:"tls"`
}

// ACLFilter selects source ACLs: a resource filter and an access filter.
type ACLFilter struct {
	ResourceFilter ACLResourceFilter `koanf:"resourceFilter"`
	AccessFilter   ACLAccessFilter   `koanf:"accessFilter"`
}

// ACLResourceFilter: resourceType any|cluster|group|topic|transactionalId|
// delegationToken; name ("*" or empty: any); patternType
// prefixed|literal|any|match.
type ACLResourceFilter struct {
	ResourceType string `koanf:"resourceType"`
	Name         string `koanf:"name"`
	PatternType  string `koanf:"patternType"`
}

// ACLAccessFilter: principal and host ("*" or empty: any); operation (any,
// all, read, write, ...); permissionType any|allow|deny.
type ACLAccessFilter struct {
	Principal      string `koanf:"principal"`
	Host           string `koanf:"host"`
	Operation      string `koanf:"operation"`
	PermissionType string `koanf:"permissionType"`
}

// ACLSync reports whether acl.sync.enable is on, and how often ACLs are
// copied (acl.sync.ms).
func (l Link) ACLSync() (bool, time.Duration) {
	return l.flag("acl.sync.enable"), l.millis("acl.sync.ms")
}

// SelectsGroup reports whether the link's consumerGroupFilters select a
// consumer group.
func (l Link) SelectsGroup(group string) bool {
	in := false
	for _, f := range l.ConsumerGroupFilters {
		if f.Name == "" {
			f.Name = "*"
		}
		if !f.matches(group) {
			continue
		}
		if f.FilterType == "EXCLUDE" {
			return false
		}
		in = true
	}
	return in
}

// OffsetSync reports whether consumer.offset.sync.enable is on, and how
// often offsets are copied (consumer.offset.sync.ms).
func (l Link) OffsetSync() (bool, time.Duration) {
	return l.flag("consumer.offset.sync.enable"), l.millis("consumer.offset.sync.ms")
}

// TopicConfigSync is how often source topic configs are applied to the
// mirrors (topic.config.sync.ms).
func (l Link) TopicConfigSync() time.Duration {
	return l.millis("topic.config.sync.ms")
}

func (l Link) flag(key string) bool {
	v, ok := l.Configs[key]
	if !ok {
		v = LinkConfigs[key]
	}
	return v == "true"
}

// MirrorTopicOptions apply to all of a link's mirrors.
type MirrorTopicOptions struct {
	// Prefix is put before the source topic name to name the destination
	// topic of auto-created mirrors; explicit mirrors must follow it too.
	Prefix           string           `koanf:"prefix"`
	AutoCreateTopics AutoCreateTopics `koanf:"autoCreateTopics"`
	// DeleteOnRemove deletes the destination topic of a mirror removed
	// from the config (default false: the topic stays, failed over).
	DeleteOnRemove bool `koanf:"deleteOnRemove"`
	// Adopt lets auto-created mirrors adopt existing destination topics
	// (see MirrorTopic.Adopt).
	Adopt bool `koanf:"adopt"`
}

// AutoCreateTopics mirrors every source topic the filters select.
type AutoCreateTopics struct {
	Enabled      bool          `koanf:"enabled"`
	TopicFilters []TopicFilter `koanf:"topicFilters"`
}

// TopicFilter selects source topics by name. EXCLUDE overrides INCLUDE;
// name "*" with patternType LITERAL means every topic.
type TopicFilter struct {
	FilterType  string `koanf:"filterType"`  // INCLUDE | EXCLUDE
	Name        string `koanf:"name"`        // a topic name, a prefix, or "*"
	PatternType string `koanf:"patternType"` // LITERAL (default) | PREFIXED
}

// Selects reports whether the filters select a source topic for
// auto-creation. Internal topics (names starting with "__") never are.
func (a AutoCreateTopics) Selects(topic string) bool {
	if !a.Enabled || strings.HasPrefix(topic, "__") {
		return false
	}
	in := false
	for _, f := range a.TopicFilters {
		if !f.matches(topic) {
			continue
		}
		if f.FilterType == "EXCLUDE" {
			return false
		}
		in = true
	}
	return in
}

func (f TopicFilter) matches(topic string) bool {
	if f.PatternType == "PREFIXED" {
		return strings.HasPrefix(topic, f.Name)
	}
	return f.Name == "*" || f.Name == topic
}

// Source is the cluster a link reads from.
type Source struct {
	Bootstrap []string `koanf:"bootstrap"`
	// ClusterID, when set, makes klink refuse to run against any other
	// cluster (a guard against a DNS or config mix-up).
	ClusterID string `koanf:"clusterID"`
	TLS       TLS    `koanf:"tls"`
	SASL      SASL   `koanf:"sasl"`
	// NetworkLink names the networkLinks endpoint the source is reached
	// through (empty: directly).
	NetworkLink string `koanf:"networkLink"`
	// FetchSessions: incremental fetch sessions (KIP-227) with every
	// source broker that offers them; default true. false makes every
	// fetch name every partition (for a broker whose sessions misbehave,
	// and to measure what sessions save).
	FetchSessions *bool `koanf:"fetchSessions"`
}

// SessionsOn reports whether fetch sessions are wanted (the default).
func (s Source) SessionsOn() bool { return s.FetchSessions == nil || *s.FetchSessions }

// MirrorTopic is one destination topic fed from one source topic.
type MirrorTopic struct {
	// Name is the destination topic name.
	Name string `koanf:"name"`
	// SourceTopicName defaults to Name.
	SourceTopicName string `koanf:"sourceTopicName"`
	// ReplicationFactor of the destination topic; 0 (or -1) means the
	// broker's default.
	ReplicationFactor int `koanf:"replicationFactor"`
	// Configs override the destination topic configs copied from the
	// source topic.
	Configs Properties `koanf:"configs"`
	// State is what the operator wants of the mirror: ACTIVE (default),
	// PAUSE, PROMOTE (catch up, then stop: the topic becomes an ordinary
	// topic) or FAILOVER (stop now, whatever the lag).
	State string `koanf:"state"`
	// Adopt lets klink mirror into an existing destination topic it did
	// not create, if that topic is provably a prefix of the source topic
	// (the old primary's topic after a promote): mirroring goes on from
	// its end. A topic that is not is refused, naming the partition and
	// offsets that differ.
	Adopt bool `koanf:"adopt"`
}

// Mirror states an operator can ask for (MirrorTopic.State).
const (
	StateActive   = "ACTIVE"
	StatePause    = "PAUSE"
	StatePromote  = "PROMOTE"
	StateFailover = "FAILOVER"
)

// DesiredState is the mirror's state key, ACTIVE when left out.
func (m MirrorTopic) DesiredState() string {
	if m.State == "" {
		return StateActive
	}
	return m.State
}

// Properties is a string map of Kafka-style config names to values. YAML
// scalars of any type (numbers, booleans) are accepted and kept as text, so
// that `retention.ms: 604800000` and `retention.ms: "604800000"` mean the same.
type Properties map[string]string

// SourceTopic returns the source topic this mirror reads.
func (m MirrorTopic) SourceTopic() string {
	if m.SourceTopicName != "" {
		return m.SourceTopicName
	}
	return m.Name
}

// Start offset specs (mirror.start.offset.spec).
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"
)

// LinkConfigs are the link `configs` keys this version of klink understands,
// with their defaults. Unknown keys are refused at load: a setting that
// silently does nothing is worse at 3 a.m. than an error.
var LinkConfigs = map[string]string{
	"mirror.start.offset.spec":             StartEarliest,
	"cluster.link.retry.timeout.ms":        "300000",
	"auto.create.mirror.topics.refresh.ms": "60000",
	"consumer.offset.sync.enable":          "false",
	"consumer.offset.sync.ms":              "30000",
	"topic.config.sync.ms":                 "5000",
	"acl.sync.enable":                      "false",
	"acl.sync.ms":                          "60000",
}

// AutoCreateRefresh is the link's auto.create.mirror.topics.refresh.ms:
// how often new source topics are looked for.
func (l Link) AutoCreateRefresh() time.Duration {
	return l.millis("auto.create.mirror.topics.refresh.ms")
}

// RetryTimeout is the link's cluster.link.retry.timeout.ms: how long the
// source cluster may be unreachable before the link's mirrors show
// LINK_FAILED (they go on by themselves when it is back).
func (l Link) RetryTimeout() time.Duration {
	return l.millis("cluster.link.retry.timeout.ms")
}

// millis reads a link config in milliseconds (validated at load).
func (l Link) millis(key string) time.Duration {
	v, ok := l.Configs[key]
	if !ok {
		v = LinkConfigs[key]
	}
	ms, _ := strconv.ParseInt(v, 10, 64)
	return time.Duration(ms) * time.Millisecond
}

// StartOffsetSpec is the link's mirror.start.offset.spec (earliest|latest).
func (l Link) StartOffsetSpec() string {
	if v, ok := l.Configs["mirror.start.offset.spec"]; ok {
		return v
	}
	return LinkConfigs["mirror.start.offset.spec"]
}

// Defaults applied by Load to keys the file leaves out.
const (
	DefaultStateDir    = "/var/lib/klink"
	DefaultAdminListen = "127.0.0.1:9780"
	DefaultLogLevel    = "info"
	DefaultLogFormat   = "console"
)

// ShutdownTimeout bounds how long in-flight appends may take to finish on
// SIGTERM.
const ShutdownTimeout = 10 * time.Second
