package kafkatest

import (
	"crypto/tls"
	"fmt"
	"net"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/replicator/batch"
)

// fakeOpts turns the options into kfake's.
func (c *Cluster) fakeOpts(t testing.TB) []kfake.Opt {
	n := c.o.brokers
	if n == 0 {
		n = 3
	}
	opts := []kfake.Opt{kfake.NumBrokers(n)}
	if c.o.clusterID == "" {
		c.o.clusterID = c.name + "-cluster" // kfake's default ("kfake") would be the same on both sides
	}
	opts = append(opts, kfake.ClusterID(c.o.clusterID))
	if len(c.o.users) > 0 {
		opts = append(opts, kfake.EnableSASL())
		for _, u := range c.o.users {
			if u.Super {
				opts = append(opts, kfake.Superuser(u.Mechanism, u.Name, u.Password))
			} else {
				opts = append(opts, kfake.User(u.Mechanism, u.Name, u.Password, u.ACLs...))
			}
		}
	}
	if c.o.acls {
		opts = append(opts, kfake.EnableACLs())
		if len(c.o.anonACLs) > 0 {
			opts = append(opts, kfake.User("PLAIN", "ANONYMOUS", "unused", c.o.anonACLs...))
		}
	}
	if c.o.oauth {
		t.Fatal("kfake has no OAUTHBEARER")
	}
	if certs := c.o.tls; certs != nil {
		cfg := &tls.Config{Certificates: []tls.Certificate{certs.Server}, MinVersion: tls.VersionTLS12}
		if c.o.mtls {
			cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, certs.Pool
		}
		opts = append(opts, kfake.TLS(cfg))
	}
	if c.o.restartable {
		if c.ports == nil {
			for i := 0; i < n; i++ {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				c.ports = append(c.ports, ln.Addr().(*net.TCPAddr).Port)
				ln.Close()
			}
		}
		opts = append(opts, kfake.Ports(c.ports...), kfake.DataDir(c.dataDir(t)))
	}
	return append(opts, c.o.fakeOpts...)
}

func (c *Cluster) startFake(t testing.TB) {
	t.Helper()
	k, err := kfake.NewCluster(c.fakeOpts(t)...)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	c.mu.Lock()
	c.fake = k
	c.id = c.o.clusterID
	c.mu.Unlock()
	if c.o.strict {
		StrictProduce(t, k)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		k := c.fake
		c.fake = nil
		c.mu.Unlock()
		if k != nil {
			k.Close()
		}
	})
}

// dataDir is where a restartable cluster keeps its data.
func (c *Cluster) dataDir(t testing.TB) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir == "" {
		c.dir = t.TempDir()
	}
	return c.dir
}

// StrictProduce makes a kfake cluster refuse, as a real Kafka broker does,
// produced batches that kfake would take (see KAFKA-FACTS.md): the
// LogAppendTime flag, empty batches, batches with holes, control batches,
// an idempotent producer id without a sequence. A refused batch fails the
// test: klink must never send one.
func StrictProduce(t testing.TB, c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		for ti := range req.Topics {
			rt := &req.Topics[ti]
			for pi := range rt.Partitions {
				rp := &rt.Partitions[pi]
				bs, err := batch.Split(rp.Records)
				var why string
				switch {
				case err != nil:
					why = err.Error()
				case len(bs) != 1 || len(bs[0]) != len(rp.Records):
					why = fmt.Sprintf("%d batches in one partition", len(bs))
				case bs[0].BaseOffset() != 0:
					why = "baseOffset is not 0"
				case bs[0].IsLogAppendTime():
					why = "LogAppendTime flag set"
				case bs[0].IsControl():
					why = "control batch"
				case bs[0].NumRecords() == 0:
					why = "empty batch"
				case int64(bs[0].NumRecords()) != bs[0].OffsetSpan():
					why = "lastOffsetDelta is not record count - 1"
				case bs[0].ProducerID() >= 0 && bs[0].BaseSequence() < 0:
					why = "producer id without sequence"
				}
				if why != "" {
					t.Errorf("klink sent %s[%d] a batch real Kafka refuses: %s", rt.Topic, rp.Partition, why)
					rp.Records = []byte{} // kfake answers CORRUPT_MESSAGE
				}
			}
		}
		return nil, nil, false
	})
}
