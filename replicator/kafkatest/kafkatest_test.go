package kafkatest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/netlink/netlinktest"
	"github.com/klink-io/klink/replicator/mirrorcheck"
)

// roundTrip creates a topic, writes a record and reads it back through
// mirrorcheck, as the client identity.
func roundTrip(t *testing.T, c *Cluster, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Admin(t).CreateTopic(ctx, 1, -1, nil, topic); err != nil {
		t.Fatalf("%s: create %s: %v", c.Name(), topic, err)
	}
	cl, err := mirrorcheck.NewClient(c.ListenAddrs(), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("k"), Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("%s: produce: %v", c.Name(), err)
	}
	rs, err := mirrorcheck.ReadAll(ctx, c.ListenAddrs(), topic, mirrorcheck.ReadUncommitted)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Count() != 1 || string(rs[0][0].Value) != "v" {
		t.Fatalf("%s: read back %v", c.Name(), rs)
	}
}

func TestPair(t *testing.T) {
	Each(t, func(t *testing.T, k Kind) {
		src, dst := Pair(t, k)
		if src.ID(t) == dst.ID(t) || src.ID(t) == "" {
			t.Fatalf("cluster IDs %q and %q", src.ID(t), dst.ID(t))
		}
		roundTrip(t, src, "a")
		roundTrip(t, dst, "a")
	})
}

func TestRestart(t *testing.T) {
	Each(t, func(t *testing.T, k Kind) {
		if k == Kafka {
			RequireManaged(t)
		}
		c := Start(t, k, "source", Restartable(), Brokers(1))
		roundTrip(t, c, "a")
		c.Kill(t)
		c.Restart(t)
		rs, err := mirrorcheck.ReadAll(context.Background(), c.ListenAddrs(), "a", mirrorcheck.ReadUncommitted)
		if err != nil || rs.Count() != 1 {
			t.Fatalf("after a restart: %v %v", rs, err)
		}
	})
}

func TestSecurity(t *testing.T) {
	for name, opts := range map[string]func(*testing.T) []Opt{
		"PLAIN": func(*testing.T) []Opt {
			return []Opt{SASL(User{Mechanism: config.MechPlain, Name: "klink", Password: "pw1"})}
		},
		"SCRAM": func(*testing.T) []Opt {
			return []Opt{SASL(User{Mechanism: config.MechScram512, Name: "klink", Password: "pw2"})}
		},
		"TLS":  func(t *testing.T) []Opt { return []Opt{TLS(netlinktest.New(t), false)} },
		"mTLS": func(t *testing.T) []Opt { return []Opt{TLS(netlinktest.New(t), true)} },
		"ACLs": func(*testing.T) []Opt { return []Opt{ACLs(GrantAll()...)} },
		"SASLSSL": func(t *testing.T) []Opt {
			return []Opt{TLS(netlinktest.New(t), false), SASL(User{Mechanism: config.MechScram256, Name: "klink", Password: "pw3"})}
		},
	} {
		t.Run(name, func(t *testing.T) {
			Each(t, func(t *testing.T, k Kind) {
				if k == Kafka {
					RequireManaged(t)
				}
				c := Start(t, k, "source", append(opts(t), Brokers(1))...)
				roundTrip(t, c, "a")
			})
		})
	}
}
