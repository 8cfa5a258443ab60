package replicator

import (
	"context"
	"crypto/tls"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/netlink"
	"github.com/klink-io/klink/netlink/netlinktest"
	"github.com/klink-io/klink/replicator/kafkatest"
)

// Loopback: klink reaches its source only through a network link
// (endpoint -> service -> kfake source) and mirrors record by record; an
// endpoint whose network is not accepted is refused; a dial outside the
// source's brokers is refused; taking the network off the accept list
// disconnects the endpoint within a second, the link's mirrors show it, and
// putting it back recovers them.
func TestNetworkLink(t *testing.T) {
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "orders", 2, nil)
	produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 2, 50, "nl")
	c := netlinktest.New(t)
	brokers := func(ctx context.Context) ([]string, error) {
		md, err := kadm.NewClient(newClient(t, src)).BrokerMetadata(ctx)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, b := range md.Brokers {
			out = append(out, net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))))
		}
		return out, nil
	}
	svc, err := netlink.Listen("127.0.0.1:0", netlink.ServiceConfig{Name: "east", TLS: &tls.Config{Certificates: []tls.Certificate{c.Server}, ClientCAs: c.Pool},
		Accept: netlink.Accept{Networks: []string{"n-1"}}, Bootstrap: src.ListenAddrs()[:1], Brokers: brokers}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go svc.Serve(ctx)

	cert, key := c.Endpoint(t, "env-1", "n-1")
	cfg := testConfig(t, src, dst, config.Properties{"cluster.link.retry.timeout.ms": "500"}, config.MirrorTopic{Name: "orders"})
	ep := config.NetworkLinkEndpoint{Name: "to-east", TLS: config.TLS{Enabled: true, CAFile: c.CAFile, CertFile: cert, KeyFile: key}}
	ep.Service.Address, ep.Service.ServerName = svc.Addr(), "127.0.0.1"
	cfg.NetworkLinks.Endpoints = []config.NetworkLinkEndpoint{ep}
	cfg.Links[0].Source.NetworkLink = "to-east"
	r, _ := runReplicator(t, cfg)
	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "orders"})
	requireSameRecords(t, readAll(t, src, "orders"), readAll(t, dst, "orders"))
	as := svc.Associations()
	if len(as) != 1 || as[0].Identity != "klink://env-1/n-1" || as[0].Bytes == 0 {
		t.Fatalf("associations %+v: the mirror's traffic did not go through the link", as)
	}
	if st := r.Status().NetworkLinks; st == nil || len(st.Endpoints) != 1 || st.Endpoints[0].State != netlink.Ready {
		t.Fatalf("endpoint status %+v", st)
	}

	// An endpoint of another network is refused, with the reason.
	tc := func(cert, key string) *tls.Config { return c.ClientTLS(t, cert, key) }
	other := netlink.NewEndpoint(netlink.EndpointConfig{Name: "other", Address: svc.Addr(), TLS: tc(c.Endpoint(t, "env-2", "n-2"))}, zap.NewNop())
	go other.Run(ctx)
	waitFor(t, 10*time.Second, "the other network refused", func() bool {
		s := other.Status()
		return s.State == netlink.Disconnected && strings.Contains(s.Reason, "accept list")
	})
	// Never an open proxy: a dial outside the source's brokers is refused.
	probe := netlink.NewEndpoint(netlink.EndpointConfig{Name: "probe", Address: svc.Addr(), TLS: tc(cert, key)}, zap.NewNop())
	go probe.Run(ctx)
	waitFor(t, 10*time.Second, "the probe endpoint READY", func() bool { return probe.Status().State == netlink.Ready })
	if _, err := probe.Dial(ctx, "tcp", dst.ListenAddrs()[0]); err == nil || !strings.Contains(err.Error(), "not a broker of the source cluster") {
		t.Fatalf("dial outside the allow list: %v", err)
	}

	// Revoked on reload: disconnected within a second, mirrors show it.
	svc.SetAccept(netlink.Accept{Networks: []string{"n-9"}})
	revoked := time.Now()
	waitFor(t, 5*time.Second, "klink's endpoint disconnected", func() bool {
		st := r.Status().NetworkLinks
		return st.Endpoints[0].State == netlink.Disconnected
	})
	if d := time.Since(revoked); d > time.Second {
		t.Fatalf("disconnected %s after the revocation, want within 1s", d)
	}
	waitState(t, r, "orders", "LINK_FAILED", 20*time.Second)
	svc.SetAccept(netlink.Accept{Networks: []string{"n-1"}})
	waitState(t, r, "orders", "ACTIVE", 40*time.Second)
	produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 2, 20, "after")
	waitCaughtUp(t, src, dst, 40*time.Second, [2]string{"orders", "orders"})
	requireSameRecords(t, readAll(t, src, "orders"), readAll(t, dst, "orders"))
}

// A source-initiated link: the klink beside the source (SOURCE mode) dials
// out to the destination-side klink (INBOUND), which checks its
// certificate and then reaches the source only over that connection. The
// mirror is exact; both sides show the link READY.
func TestSourceInitiatedLink(t *testing.T) {
	src, dst := testClusters(t, kafkatest.KFake)
	createTopic(t, src, "orders", 2, nil)
	produceN(t, newClient(t, src, kgo.RecordPartitioner(kgo.ManualPartitioner())), "orders", 2, 40, "si")
	c := netlinktest.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()

	dcfg := testConfig(t, src, dst, nil, config.MirrorTopic{Name: "orders"})
	dl := &dcfg.Links[0]
	dl.ConnectionMode = config.ConnectionInbound
	dl.Inbound.Listen = listen
	dl.Inbound.TLS = config.TLS{Enabled: true, CAFile: c.CAFile, CertFile: c.ServerCert, KeyFile: c.ServerKey}
	dl.Inbound.Accept.Networks = []string{"n-onprem"}
	dr, _ := runReplicator(t, dcfg)

	cert, key := c.Endpoint(t, "env-onprem", "n-onprem")
	scfg := &config.Config{StateDir: t.TempDir(), Links: []config.Link{{Name: dl.Name, LinkMode: config.LinkModeSource,
		Source:      config.Source{Bootstrap: src.ListenAddrs()[:1]},
		Destination: config.LinkDestination{Address: listen, ServerName: "127.0.0.1", TLS: config.TLS{Enabled: true, CAFile: c.CAFile, CertFile: cert, KeyFile: key}}}}}
	sr, _ := runReplicator(t, scfg)

	waitCaughtUp(t, src, dst, 30*time.Second, [2]string{"orders", "orders"})
	requireSameRecords(t, readAll(t, src, "orders"), readAll(t, dst, "orders"))
	for side, r := range map[string]*Replicator{"destination": dr, "source": sr} {
		st := r.Status().NetworkLinks
		if st == nil || len(st.SourceLinks) != 1 || st.SourceLinks[0].State != netlink.Ready {
			t.Fatalf("%s side: %+v", side, st)
		}
	}
	if n := len(sr.Status().Links); n != 0 {
		t.Fatalf("the source side runs %d mirroring links; it only relays", n)
	}
	if sr.nl.dialouts[dl.Name].Bytes() == 0 {
		t.Fatal("the mirror's traffic did not go over the source side's connection")
	}

	// A reload that takes the source side off the accept list disconnects
	// it and refuses it from then on.
	next := *dcfg
	next.Links = slices.Clone(dcfg.Links)
	next.Links[0].Inbound.Accept.Networks = []string{"n-other"}
	dr.Reload(&next)
	waitFor(t, 10*time.Second, "the source side refused", func() bool {
		st := sr.Status().NetworkLinks.SourceLinks[0]
		return st.State == netlink.Disconnected && strings.Contains(st.Reason, "accept list")
	})
	// Removing the link on the source side stops its relay.
	res := sr.Reload(&config.Config{StateDir: scfg.StateDir})
	if len(res.Applied) != 1 || !strings.Contains(res.Applied[0], "source side stopped") {
		t.Fatalf("source side reload: %+v", res)
	}
	if st := sr.Status().NetworkLinks; st != nil && len(st.SourceLinks) != 0 {
		t.Fatalf("the removed source link still shows: %+v", st)
	}
}
