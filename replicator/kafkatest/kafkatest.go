// Package kafkatest gives klink's tests a source and a destination Kafka
// cluster of either kind, behind one type, so that one piece of test code
// proves a scenario on both:
//
//   - KFake: franz-go's in-process kfake, always available and fast. It is
//     looser than Kafka (see KAFKA-FACTS.md), so its produce path is made
//     to refuse what a real broker refuses (StrictProduce).
//   - Kafka: real Apache Kafka brokers, started by the test from
//     $KLINK_KAFKA_HOME (a folder with start.sh and stop.sh, such as
//     ../shared/kafka), fresh for every test and killed when it ends; or
//     clusters a user already runs, named by $KLINK_TEST_SOURCE and
//     $KLINK_TEST_DESTINATION (bootstrap lists). Tests that need to
//     restart, kill or configure brokers skip on the latter.
//
// With neither variable set, every real-broker test skips with a message
// naming them, so that `make test` needs no Java.
package kafkatest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/netlink/netlinktest"
)

// Kind is a kind of Kafka cluster.
type Kind string

const (
	KFake Kind = "kfake" // franz-go's in-process kfake
	Kafka Kind = "kafka" // real Apache Kafka brokers
)

// The environment variables that enable the real-broker tests.
const (
	EnvKafkaHome   = "KLINK_KAFKA_HOME"
	EnvSource      = "KLINK_TEST_SOURCE"
	EnvDestination = "KLINK_TEST_DESTINATION"
)

// SkipReason is why the real-broker tests skip when they do.
const SkipReason = "real-broker tests skipped: set " + EnvKafkaHome + " to a folder with start.sh/stop.sh (../shared/kafka), " +
	"or " + EnvSource + " and " + EnvDestination + " to the bootstraps of two clusters you run"

// Kinds are the kinds of cluster a scenario runs on: kfake, and real Kafka.
var Kinds = []Kind{KFake, Kafka}

// Each runs test once per kind of cluster, as subtests named after the
// kind. The real-broker subtest skips (SkipReason) when no real brokers
// are available.
func Each(t *testing.T, test func(t *testing.T, k Kind)) {
	t.Helper()
	for _, k := range Kinds {
		t.Run(string(k), func(t *testing.T) {
			if k == Kafka {
				RequireKafka(t)
			}
			test(t, k)
		})
	}
}

// RequireKafka skips the test unless real brokers are available.
func RequireKafka(t testing.TB) {
	t.Helper()
	if KafkaHome() == "" && !external() {
		t.Skip(SkipReason)
	}
}

// RequireManaged skips the test unless the harness starts the brokers
// itself (it must restart, kill, pause or configure them).
func RequireManaged(t testing.TB) {
	t.Helper()
	RequireKafka(t)
	if KafkaHome() == "" {
		t.Skip("needs brokers the test starts itself: set " + EnvKafkaHome + " (the clusters of " + EnvSource + "/" + EnvDestination + " cannot be restarted or reconfigured by a test)")
	}
}

// KafkaHome is the folder real brokers are started from, or "".
func KafkaHome() string { return os.Getenv(EnvKafkaHome) }

// external reports clusters given by the user (and no KafkaHome).
func external() bool {
	return KafkaHome() == "" && os.Getenv(EnvSource) != "" && os.Getenv(EnvDestination) != ""
}

// Cluster is a running Kafka cluster of either kind.
type Cluster struct {
	kind Kind
	name string // "source", "destination", ... for messages
	o    options

	mu       sync.Mutex
	fake     *kfake.Cluster // KFake
	ports    []int          // KFake, restartable: the ports it listens on
	dir      string         // KFake, restartable: its data
	keystore string         // Kafka with TLS: the server's PEM keystore
	nodes    []*node        // Kafka, started by the harness
	id       string         // cluster ID, once known
	addrs    []string       // what clients bootstrap from
	admin    []string       // Kafka: the PLAINTEXT listener (ANONYMOUS is a super user)
}

// Kind is the cluster's kind.
func (c *Cluster) Kind() Kind { return c.kind }

// Name is the name the test gave the cluster.
func (c *Cluster) Name() string { return c.name }

// IsFake reports a kfake cluster.
func (c *Cluster) IsFake() bool { return c.kind == KFake }

// Fake is the kfake cluster (nil for real brokers), for what only kfake
// can do: inject faults and answers, compact on demand, move leaders
// instantly.
func (c *Cluster) Fake() *kfake.Cluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fake
}

// ListenAddrs are the addresses clients bootstrap from (the listener with
// the cluster's security, if any).
func (c *Cluster) ListenAddrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fake != nil {
		return c.fake.ListenAddrs()
	}
	return append([]string(nil), c.addrs...)
}

// AdminAddrs are addresses a client reaches the cluster at as a super user
// without credentials: the PLAINTEXT listener of a real broker, the
// ordinary listener otherwise.
func (c *Cluster) AdminAddrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.admin != nil {
		return append([]string(nil), c.admin...)
	}
	if c.fake != nil {
		return c.fake.ListenAddrs()
	}
	return append([]string(nil), c.addrs...)
}

// ID is the cluster ID.
func (c *Cluster) ID(t testing.TB) string {
	t.Helper()
	c.mu.Lock()
	id := c.id
	c.mu.Unlock()
	if id != "" {
		return id
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.AdminAddrs()...)}, c.adminOpts()...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		t.Fatalf("%s: cluster ID: %v", c.name, err)
	}
	c.mu.Lock()
	c.id = md.Cluster
	c.mu.Unlock()
	return md.Cluster
}

// Opt configures a cluster.
type Opt func(*options)

type options struct {
	brokers     int
	clusterID   string // kfake only: real brokers need a UUID
	brokerConf  []string
	fakeOpts    []kfake.Opt
	restartable bool
	strict      bool
	users       []User
	anonACLs    []kfake.ACL // ACLs enforced, these granted to User:ANONYMOUS
	acls        bool
	tls         *netlinktest.Certs
	mtls        bool
	oauth       bool
}

// Brokers sets the number of brokers: kfake defaults to 3; real Kafka to 1
// (3 gives a cluster with replication factor 3 and min.insync.replicas 2).
func Brokers(n int) Opt { return func(o *options) { o.brokers = n } }

// ClusterID names a kfake cluster (real clusters get a random ID; read it
// with Cluster.ID).
func ClusterID(id string) Opt { return func(o *options) { o.clusterID = id } }

// BrokerConfig adds server.properties settings ("key=value") on real
// brokers; kfake ignores them.
func BrokerConfig(kv ...string) Opt {
	return func(o *options) { o.brokerConf = append(o.brokerConf, kv...) }
}

// FakeOpts adds kfake options; real brokers ignore them.
func FakeOpts(opts ...kfake.Opt) Opt {
	return func(o *options) { o.fakeOpts = append(o.fakeOpts, opts...) }
}

// Restartable lets Stop and Start keep a kfake cluster's data and ports
// (real brokers always keep them).
func Restartable() Opt { return func(o *options) { o.restartable = true } }

// Strict makes a kfake cluster refuse produced batches a real broker
// refuses (see StrictProduce); Pair sets it on the destination.
func Strict() Opt { return func(o *options) { o.strict = true } }

// User is a SASL user.
type User struct {
	Mechanism string // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	Name      string
	Password  string
	Super     bool        // a super user: no ACL applies
	ACLs      []kfake.ACL // with ACLs enforced, what the user may do
}

// SASL makes the cluster's client listener require SASL, with these users.
func SASL(users ...User) Opt { return func(o *options) { o.users = append(o.users, users...) } }

// OAuthBearer adds OAUTHBEARER to a SASL listener (real brokers only:
// Kafka's unsecured JWS validator, which takes unsigned tokens).
func OAuthBearer() Opt { return func(o *options) { o.oauth = true } }

// ACLs makes the cluster enforce ACLs, granting the client identity what
// grants lists: User:ANONYMOUS on kfake; on a real broker, whose
// User:ANONYMOUS is the brokers' own super user, a SASL PLAIN user
// "client" (see Principal).
func ACLs(grants ...kfake.ACL) Opt {
	return func(o *options) { o.acls, o.anonACLs = true, append(o.anonACLs, grants...) }
}

// TLS makes the cluster's client listener TLS with the server certificate
// of certs; with mtls it requires a client certificate signed by its CA.
func TLS(certs *netlinktest.Certs, mtls bool) Opt {
	return func(o *options) { o.tls, o.mtls = certs, mtls }
}

func (o *options) secure() bool { return len(o.users) > 0 || o.tls != nil || o.acls || o.oauth }

// Start starts a cluster of kind k for the test; it is closed (real
// brokers killed) when the test ends.
func Start(t testing.TB, k Kind, name string, opts ...Opt) *Cluster {
	t.Helper()
	c := &Cluster{kind: k, name: name}
	for _, opt := range opts {
		opt(&c.o)
	}
	c.withDefaults()
	switch {
	case k == KFake:
		c.startFake(t)
	case external():
		c.useExternal(t)
	default:
		RequireKafka(t)
		c.startReal(t)
	}
	c.registerClient()
	return c
}

// Pair starts a source and a destination cluster of kind k, both with
// opts, the destination strict (see StrictProduce). Real brokers start
// side by side.
func Pair(t testing.TB, k Kind, opts ...Opt) (src, dst *Cluster) {
	t.Helper()
	if k == KFake || external() {
		return Start(t, k, "source", opts...), Start(t, k, "destination", append(opts, Strict())...)
	}
	RequireKafka(t) // here: a skip inside the goroutines would not stop the test
	var wg sync.WaitGroup
	var srcErr, dstErr error
	wg.Add(2)
	go func() { defer wg.Done(); src, srcErr = startGuarded(t, k, "source", opts...) }()
	go func() { defer wg.Done(); dst, dstErr = startGuarded(t, k, "destination", opts...) }()
	wg.Wait()
	if srcErr != nil || dstErr != nil {
		t.Fatalf("starting clusters: %v %v", srcErr, dstErr)
	}
	return src, dst
}

// startGuarded is Start from another goroutine: a Fatal there would not
// stop the test, so it is turned into an error.
func startGuarded(t testing.TB, k Kind, name string, opts ...Opt) (c *Cluster, err error) {
	ft := &fatalCatcher{TB: t}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fatalCatcher); !ok {
				panic(r)
			}
			err = fmt.Errorf("%s: %s", name, ft.msg)
		}
	}()
	return Start(ft, k, name, opts...), nil
}

type fatalCatcher struct {
	testing.TB
	msg string
}

func (f *fatalCatcher) Fatal(args ...any) { f.msg = fmt.Sprint(args...); panic(*f) }
func (f *fatalCatcher) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(*f)
}

// Admin is a kadm client to the cluster as a super user, closed when the
// test ends.
func (c *Cluster) Admin(t testing.TB) *kadm.Client {
	t.Helper()
	return kadm.NewClient(c.AdminClient(t))
}

// AdminClient is a kgo client to the cluster as a super user, closed when
// the test ends.
func (c *Cluster) AdminClient(t testing.TB) *kgo.Client {
	t.Helper()
	// kgo answers kadm's metadata reads from a cache up to MetadataMinAge
	// old (5 s by default): a test listing topics right after creating or
	// deleting them would read the past.
	opts := append([]kgo.Opt{kgo.SeedBrokers(c.AdminAddrs()...), kgo.MetadataMinAge(100 * time.Millisecond)}, c.adminOpts()...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// CreateACLs creates ACLs through the admin listener.
func (c *Cluster) CreateACLs(t testing.TB, principal string, acls ...kfake.ACL) {
	t.Helper()
	if len(acls) == 0 {
		return
	}
	req := kmsg.NewPtrCreateACLsRequest()
	for _, a := range acls {
		cr := kmsg.NewCreateACLsRequestCreation()
		cr.ResourceType, cr.ResourceName, cr.ResourcePatternType = a.Resource, a.Name, a.Pattern
		cr.Principal = principal
		if a.Principal != "" && principal == "" {
			cr.Principal = a.Principal
		}
		cr.Host = a.Host
		if cr.Host == "" {
			cr.Host = "*"
		}
		cr.Operation = a.Operation
		cr.PermissionType = kmsg.ACLPermissionTypeDeny
		if a.Allow {
			cr.PermissionType = kmsg.ACLPermissionTypeAllow
		}
		req.Creations = append(req.Creations, cr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := c.AdminClient(t)
	var last error
	for attempt := 0; attempt < 20; attempt++ {
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			for _, r := range resp.Results {
				if r.ErrorCode != 0 {
					msg := ""
					if r.ErrorMessage != nil {
						msg = *r.ErrorMessage
					}
					err = fmt.Errorf("error %d: %s", r.ErrorCode, msg)
				}
			}
		}
		if err == nil {
			return
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: creating ACLs for %s: %v", c.name, principal, last)
}
