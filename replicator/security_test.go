package replicator

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/netlink/netlinktest"
	"github.com/klink-io/klink/replicator/kafkatest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// logCapture is a zap logger that keeps every line it writes, as JSON.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *logCapture) Sync() error { return nil }

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func (c *logCapture) logger() *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, c, zapcore.DebugLevel))
}

// writeSecret writes a secret file with the given mode.
func writeSecret(t *testing.T, dir, name, secret string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(secret+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// requireNoSecret fails if a secret shows in klink's log, its status or
// its state file.
func requireNoSecret(t *testing.T, secret string, logs *logCapture, r *Replicator, stateDir string) {
	t.Helper()
	st, err := json.Marshal(r.Status())
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(filepath.Join(stateDir, "klink.db"))
	if err != nil {
		t.Fatal(err)
	}
	for what, text := range map[string]string{"log": logs.String(), "status": string(st), "state file": string(db)} {
		if strings.Contains(text, secret) {
			t.Fatalf("the secret appears in klink's %s", what)
		}
	}
}

// SASL PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and (on real brokers, with
// Kafka's unsecured JWS validator) OAUTHBEARER on both the source and the
// destination: klink mirrors record by record, and its secret, read from a
// file, appears in no log, status or state file.
func TestSASLMirroring(t *testing.T) {
	for _, mech := range []string{config.MechPlain, config.MechScram256, config.MechScram512, config.MechOAuthBearer} {
		t.Run(mech, func(t *testing.T) {
			kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
				if k == kafkatest.Kafka {
					kafkatest.RequireManaged(t)
				} else if mech == config.MechOAuthBearer {
					t.Skip("kfake has no OAUTHBEARER (its token flow is tested against an httptest endpoint in package secure)")
				}
				secret := "pw-" + strings.ToLower(mech) + "-Zq81x"
				var opts []kafkatest.Opt
				if mech == config.MechOAuthBearer {
					opts = []kafkatest.Opt{kafkatest.OAuthBearer()}
				} else {
					opts = []kafkatest.Opt{kafkatest.SASL(kafkatest.User{Mechanism: mech, Name: "klink", Password: secret, Super: true})}
				}
				src, dst := testClusters(t, k, append(opts, kafkatest.Brokers(1))...)
				cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "orders"})
				if mech == config.MechOAuthBearer {
					s := unsecuredJWSEndpoint(t, secret, src, dst)
					cfg.Destination.SASL, cfg.Links[0].Source.SASL = s, s
				}
				createTopic(t, src, "orders", 2, nil)
				logs := &logCapture{}
				r, _ := runReplicatorLogged(t, cfg, logs.logger())
				cl := newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner()))
				produceN(t, cl, "orders", 2, 50, "sasl")
				waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "orders"})
				requireSameRecords(t, readAll(t, src, "orders"), readAll(t, dst, "orders"))
				requireNoSecret(t, secret, logs, r, cfg.StateDir)
			})
		})
	}
}

// unsecuredJWSEndpoint runs an OAuth token endpoint (client credentials,
// client "klink" with the given secret) that hands out the unsigned JWTs
// Kafka's unsecured validator takes, and registers the same tokens for
// the test's own clients of every cluster (mirrorcheck). It returns
// klink's sasl settings for it.
func unsecuredJWSEndpoint(t *testing.T, secret string, clusters ...*kafkatest.Cluster) config.SASL {
	t.Helper()
	token := func() string {
		enc := base64.RawURLEncoding.EncodeToString
		now := time.Now().Unix()
		claims, _ := json.Marshal(map[string]any{"sub": "klink", "iat": now, "exp": now + 3600, "scope": "kafka"})
		return enc([]byte(`{"alg":"none"}`)) + "." + enc(claims) + "."
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, sec, ok := r.BasicAuth(); !ok || id != "klink" || sec != secret {
			http.Error(w, "bad client credentials", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": token(), "token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(srv.Close)
	for _, c := range clusters {
		mirrorcheck.ClientOpts(c.ListenAddrs(), kgo.SASL(oauth.Oauth(func(context.Context) (oauth.Auth, error) { return oauth.Auth{Token: token()}, nil })))
	}
	return config.SASL{Mechanism: config.MechOAuthBearer, TokenEndpoint: srv.URL, ClientID: "klink",
		ClientSecretFile: writeSecret(t, t.TempDir(), "client.secret", secret, 0o600), Scopes: []string{"kafka"}}
}

// TLS with a CA made by the test, and mTLS: brokers that require a client
// certificate signed by the CA. klink mirrors record by record over both.
func TestTLSAndMTLSMirroring(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		name := "TLS"
		if mtls {
			name = "mTLS"
		}
		t.Run(name, func(t *testing.T) {
			kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
				if k == kafkatest.Kafka {
					kafkatest.RequireManaged(t)
				}
				src, dst := testClusters(t, k, kafkatest.TLS(netlinktest.New(t), mtls), kafkatest.Brokers(1))
				cfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "orders"})
				if !cfg.Destination.TLS.Enabled || (cfg.Destination.TLS.CertFile != "") != mtls {
					t.Fatalf("destination tls settings %+v", cfg.Destination.TLS)
				}
				createTopic(t, src, "orders", 2, nil)
				runReplicator(t, cfg)
				produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 2, 50, "tls")
				waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "orders"})
				requireSameRecords(t, readAll(t, src, "orders"), readAll(t, dst, "orders"))
			})
		})
	}
}

// A wrong password: the link shows LINK_FAILED with a reason naming the
// cluster and the failure; the password file fixed and a reload, it runs,
// and mirrors record by record. Neither password appears in any output.
func TestWrongPasswordFixedByReload(t *testing.T) {
	const right, wrong = "the-right-Pw0rd", "a-wrong-Pw0rd"
	src, dst := testClusters(t, kafkatest.KFake, kafkatest.Brokers(1), kafkatest.SASL(kafkatest.User{Mechanism: config.MechScram256, Name: "klink", Password: right, Super: true}))
	createTopic(t, src, "orders", 1, nil)
	produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 1, 30, "x")

	dir := t.TempDir()
	srcPw := writeSecret(t, dir, "source.pass", wrong, 0o600)
	dstPw := writeSecret(t, dir, "destination.pass", right, 0o644) // too open: warned about
	cfg := testConfig(t, src, dst, config.Properties{"cluster.link.retry.timeout.ms": "500"}, config.MirrorTopic{Name: "orders"})
	cfg.Links[0].Source.SASL = config.SASL{Mechanism: config.MechScram256, Username: "klink", PasswordFile: srcPw}
	cfg.Destination.SASL = config.SASL{Mechanism: config.MechScram256, Username: "klink", PasswordFile: dstPw}
	logs := &logCapture{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("klink log:\n%s", logs.String())
		}
	})
	r, _ := runReplicatorLogged(t, cfg, logs.logger())
	waitFor(t, 20*time.Second, "the link to show LINK_FAILED", func() bool {
		l := r.Status().Links[0]
		return l.State == LinkUnreachable && strings.Contains(l.Error, "source") && strings.Contains(l.Error, "SASL")
	})
	t.Logf("reason: %s", r.Status().Links[0].Error)
	if !strings.Contains(logs.String(), "readable by group or others") {
		t.Fatal("no warning for a password file readable by others")
	}

	writeSecret(t, dir, "source.pass", right, 0o600)
	next := *cfg
	next.Links = slices.Clone(cfg.Links)
	res := r.Reload(&next)
	if len(res.Applied) != 1 || !strings.Contains(res.Applied[0], "rotated") {
		t.Fatalf("reload: %+v", res)
	}
	waitFor(t, 30*time.Second, "the mirror ACTIVE", func() bool {
		ms := r.Status().Links[0].Mirrors
		return r.Status().Links[0].State == LinkRunning && len(ms) == 1 && ms[0].State == "ACTIVE"
	})
	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "orders"})
	requireSameRecords(t, readAll(t, src, "orders"), readAll(t, dst, "orders"))
	requireNoSecret(t, right, logs, r, cfg.StateDir)
	requireNoSecret(t, wrong, logs, r, cfg.StateDir)
}

// The source ACLs the README lists for klink are enough to mirror from a
// source that enforces ACLs: klink authenticates as a user with only those.
func TestLeastPrivilegeSource(t *testing.T) {
	allow := func(rt kmsg.ACLResourceType, name string, ops ...kmsg.ACLOperation) []kfake.ACL {
		var out []kfake.ACL
		for _, op := range ops {
			out = append(out, kfake.ACL{Resource: rt, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true})
		}
		return out
	}
	var acls []kfake.ACL
	acls = append(acls, allow(kmsg.ACLResourceTypeTopic, "*", kmsg.ACLOperationRead, kmsg.ACLOperationDescribe, kmsg.ACLOperationDescribeConfigs)...)
	acls = append(acls, allow(kmsg.ACLResourceTypeGroup, "*", kmsg.ACLOperationDescribe)...)
	acls = append(acls, allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLOperationDescribe)...)
	kafkatest.Each(t, func(t *testing.T, k kafkatest.Kind) {
		if k == kafkatest.Kafka {
			kafkatest.RequireManaged(t)
		}
		// The test's own clients are the super user admin; klink is klink.
		src := kafkatest.Start(t, k, "source", kafkatest.Brokers(1), kafkatest.SASL(
			kafkatest.User{Mechanism: config.MechScram256, Name: "admin", Password: "admin-pw", Super: true},
			kafkatest.User{Mechanism: config.MechScram256, Name: "klink", Password: "klink-pw", ACLs: acls}))
		dst := kafkatest.Start(t, k, "destination", kafkatest.Brokers(1), kafkatest.Strict())
		createTopic(t, src, "orders", 2, map[string]*string{"retention.ms": kmsgStr("86400000")})
		produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 2, 40, "lp")
		commitOn(t, src, "app", "orders", map[int32]int64{0: 10})

		cfg := testConfig(t, src, dst, config.Properties{"consumer.offset.sync.enable": "true", "consumer.offset.sync.ms": "200"}, config.MirrorTopic{Name: "orders"})
		cfg.Links[0].ConsumerGroupFilters = []config.TopicFilter{{FilterType: "INCLUDE", Name: "*"}}
		cfg.Links[0].Source.SASL = config.SASL{Mechanism: config.MechScram256, Username: "klink", PasswordFile: writeSecret(t, t.TempDir(), "pw", "klink-pw", 0o600)}
		r, _ := runReplicator(t, cfg)
		waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "orders"})
		requireSameRecords(t, readAll(t, src, "orders"), readAll(t, dst, "orders"))
		waitCommitted(t, dst, "app", "orders", map[int32]int64{0: 10})
		if m := r.Status().Links[0].Mirrors[0]; m.State != "ACTIVE" {
			t.Fatalf("mirror %s: %s", m.State, m.Reason)
		}
	})
}
