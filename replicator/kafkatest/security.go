package kafkatest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// A secure cluster (SASL, TLS or ACLs) has, on a real broker, two client
// listeners: CLIENT, with the security asked for, which ListenAddrs name;
// and PLAINTEXT, where User:ANONYMOUS is a super user, which the brokers
// use among themselves and the harness uses to create users and ACLs
// (AdminAddrs). kfake has one listener with the security asked for.
//
// The client identity is who the test's clients and klink connect as: the
// first SASL user, else User:ANONYMOUS. On a real broker User:ANONYMOUS is
// a super user (the brokers' own principal), so ACLs without SASL users
// get a SASL PLAIN user "client" holding the grants there.

// clientUser is the SASL user the test's clients connect as, if any.
func (c *Cluster) clientUser() *User {
	if len(c.o.users) > 0 {
		return &c.o.users[0]
	}
	return nil
}

// Principal is the client identity's principal ("User:name").
func (c *Cluster) Principal() string {
	if u := c.clientUser(); u != nil {
		return "User:" + u.Name
	}
	return "User:ANONYMOUS"
}

// withDefaults completes the options once the kind is known.
func (c *Cluster) withDefaults() {
	if c.kind == Kafka && c.o.acls && len(c.o.users) == 0 {
		c.o.users = []User{{Mechanism: config.MechPlain, Name: "client", Password: "client-secret", ACLs: c.o.anonACLs}}
		c.o.anonACLs = nil
	}
}

func mechanism(u User) sasl.Mechanism {
	switch u.Mechanism {
	case config.MechPlain:
		return plain.Auth{User: u.Name, Pass: u.Password}.AsMechanism()
	case config.MechScram256:
		return scram.Auth{User: u.Name, Pass: u.Password}.AsSha256Mechanism()
	default:
		return scram.Auth{User: u.Name, Pass: u.Password}.AsSha512Mechanism()
	}
}

// clientTLS is what a client needs for the cluster's TLS listener.
func (c *Cluster) clientTLS() *tls.Config {
	certs := c.o.tls
	cfg := &tls.Config{RootCAs: certs.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if c.o.mtls {
		pair, err := tls.LoadX509KeyPair(certs.ClientCert, certs.ClientKey)
		if err == nil {
			cfg.Certificates = []tls.Certificate{pair}
		}
	}
	return cfg
}

// ClientOpts are the kgo options a client needs to connect as the client
// identity. They are registered with mirrorcheck for ListenAddrs, so that
// mirrorcheck.NewClient and ReadAll connect the same way.
func (c *Cluster) ClientOpts() []kgo.Opt {
	var opts []kgo.Opt
	if c.o.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(c.clientTLS()))
	}
	if u := c.clientUser(); u != nil {
		opts = append(opts, kgo.SASL(mechanism(*u)))
	}
	return opts
}

// adminOpts are what the harness's own clients need: nothing on a real
// broker's PLAINTEXT listener; on kfake, a super user's credentials.
func (c *Cluster) adminOpts() []kgo.Opt {
	if c.kind == Kafka {
		return nil
	}
	var opts []kgo.Opt
	if c.o.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(c.clientTLS()))
	}
	for _, u := range c.o.users {
		if u.Super {
			return append(opts, kgo.SASL(mechanism(u)))
		}
	}
	if u := c.clientUser(); u != nil {
		opts = append(opts, kgo.SASL(mechanism(*u)))
	}
	return opts
}

// registerClient tells mirrorcheck how to connect to the cluster.
func (c *Cluster) registerClient() {
	if opts := c.ClientOpts(); len(opts) > 0 {
		mirrorcheck.ClientOpts(c.ListenAddrs(), opts...)
	}
}

// Klink is the tls and sasl settings klink needs to connect as the client
// identity (a password file is written for it).
func (c *Cluster) Klink(t testing.TB) (config.TLS, config.SASL) {
	t.Helper()
	var tc config.TLS
	var sc config.SASL
	if certs := c.o.tls; certs != nil {
		tc = config.TLS{Enabled: true, CAFile: certs.CAFile}
		if c.o.mtls {
			tc.CertFile, tc.KeyFile = certs.ClientCert, certs.ClientKey
		}
	}
	if u := c.clientUser(); u != nil {
		pw := filepath.Join(t.TempDir(), c.name+".pass")
		if err := os.WriteFile(pw, []byte(u.Password), 0o600); err != nil {
			t.Fatal(err)
		}
		sc = config.SASL{Mechanism: u.Mechanism, Username: u.Name, PasswordFile: pw}
	}
	return tc, sc
}

// securityConfig is a real node's listener, SASL, TLS and authorizer
// settings.
func (c *Cluster) securityConfig(nd *node) []string {
	if !c.o.secure() {
		return nil
	}
	proto := "PLAINTEXT"
	switch {
	case c.o.tls != nil && (len(c.o.users) > 0 || c.o.oauth):
		proto = "SASL_SSL"
	case c.o.tls != nil:
		proto = "SSL"
	case len(c.o.users) > 0 || c.o.oauth:
		proto = "SASL_PLAINTEXT"
	}
	out := []string{
		fmt.Sprintf("listeners=PLAINTEXT://127.0.0.1:%d,CLIENT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", nd.port, nd.clientPort, nd.cport),
		fmt.Sprintf("advertised.listeners=PLAINTEXT://127.0.0.1:%d,CLIENT://127.0.0.1:%d", nd.port, nd.clientPort),
		"listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,CLIENT:" + proto,
	}
	if strings.HasPrefix(proto, "SASL") {
		mechs := map[string]bool{}
		var plainUsers []string
		for _, u := range c.o.users {
			mechs[u.Mechanism] = true
			if u.Mechanism == config.MechPlain {
				plainUsers = append(plainUsers, fmt.Sprintf("user_%s=%q", u.Name, u.Password))
			}
		}
		if c.o.oauth {
			mechs[config.MechOAuthBearer] = true
		}
		var names []string
		for _, m := range []string{config.MechPlain, config.MechScram256, config.MechScram512, config.MechOAuthBearer} {
			if mechs[m] {
				names = append(names, m)
			}
		}
		out = append(out, "sasl.enabled.mechanisms="+strings.Join(names, ","))
		if mechs[config.MechPlain] {
			out = append(out, "listener.name.client.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "+strings.Join(plainUsers, " ")+";")
		}
		for _, m := range []string{config.MechScram256, config.MechScram512} {
			if mechs[m] {
				out = append(out, "listener.name.client."+strings.ToLower(m)+".sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;")
			}
		}
		if c.o.oauth {
			// Kafka's unsecured JWS login and validator: unsigned tokens
			// (tests only).
			out = append(out, `listener.name.client.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";`)
		}
	}
	if certs := c.o.tls; certs != nil {
		out = append(out,
			"listener.name.client.ssl.keystore.type=PEM",
			"listener.name.client.ssl.keystore.location="+c.keystore,
			"listener.name.client.ssl.truststore.type=PEM",
			"listener.name.client.ssl.truststore.location="+certs.CAFile,
			"listener.name.client.ssl.endpoint.identification.algorithm=",
		)
		if c.o.mtls {
			out = append(out, "listener.name.client.ssl.client.auth=required")
		}
	}
	if c.o.acls || c.hasUserACLs() {
		supers := []string{"User:ANONYMOUS"}
		for _, u := range c.o.users {
			if u.Super {
				supers = append(supers, "User:"+u.Name)
			}
		}
		out = append(out,
			"authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
			"super.users="+strings.Join(supers, ";"),
			"allow.everyone.if.no.acl.found=false")
	}
	return out
}

func (c *Cluster) hasUserACLs() bool {
	for _, u := range c.o.users {
		if len(u.ACLs) > 0 {
			return true
		}
	}
	return false
}

// writeKeystore writes the server certificate and its key (PKCS#8, which
// Kafka's PEM keystore takes) into one file.
func (c *Cluster) writeKeystore(t testing.TB) {
	t.Helper()
	certs := c.o.tls
	if certs == nil {
		return
	}
	chain, err := os.ReadFile(certs.ServerCert)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs.Server.PrivateKey
	der, err := x509.MarshalPKCS8PrivateKey(leaf)
	if err != nil {
		t.Fatal(err)
	}
	ks := append(chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...)
	c.keystore = filepath.Join(t.TempDir(), "keystore.pem")
	if err := os.WriteFile(c.keystore, ks, 0o600); err != nil {
		t.Fatal(err)
	}
}

// setupSecurity creates, once the brokers run, what is not in their
// configuration: SCRAM credentials and ACLs.
func (c *Cluster) setupSecurity(t testing.TB) {
	t.Helper()
	if !c.o.secure() {
		return
	}
	adm := c.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var up []kadm.UpsertSCRAM
	for _, u := range c.o.users {
		switch u.Mechanism {
		case config.MechScram256:
			up = append(up, kadm.UpsertSCRAM{User: u.Name, Mechanism: kadm.ScramSha256, Password: u.Password, Iterations: 4096})
		case config.MechScram512:
			up = append(up, kadm.UpsertSCRAM{User: u.Name, Mechanism: kadm.ScramSha512, Password: u.Password, Iterations: 4096})
		}
	}
	if len(up) > 0 {
		var last error
		for attempt := 0; attempt < 20; attempt++ {
			res, err := adm.AlterUserSCRAMs(ctx, nil, up)
			if err == nil {
				err = res.Error()
			}
			if last = err; err == nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if last != nil {
			t.Fatalf("%s: creating SCRAM users: %v", c.name, last)
		}
	}
	for _, u := range c.o.users {
		c.CreateACLs(t, "User:"+u.Name, u.ACLs...)
	}
	c.CreateACLs(t, "User:ANONYMOUS", c.o.anonACLs...)
	// Credentials and ACLs reach the brokers through the metadata log:
	// wait until the client identity gets in.
	if u := c.clientUser(); u != nil {
		deadline := time.Now().Add(30 * time.Second)
		for {
			cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, c.ClientOpts()...)...)
			if err == nil {
				err = cl.Ping(ctx)
				cl.Close()
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the client user %s cannot connect: %v", c.name, u.Name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// GrantAll is every operation on every resource kind: what an ordinary
// test client needs on a cluster that enforces ACLs.
func GrantAll() []kfake.ACL {
	var out []kfake.ACL
	for _, r := range []struct {
		rt   kmsg.ACLResourceType
		name string
	}{{kmsg.ACLResourceTypeCluster, "kafka-cluster"}, {kmsg.ACLResourceTypeTopic, "*"}, {kmsg.ACLResourceTypeGroup, "*"}, {kmsg.ACLResourceTypeTransactionalId, "*"}} {
		out = append(out, kfake.ACL{Resource: r.rt, Name: r.name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true})
	}
	return out
}
