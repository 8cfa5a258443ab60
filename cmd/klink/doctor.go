package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/kconn"
	"github.com/klink-io/klink/replicator/secure"
)

// doctorCheck is one line of klink doctor's table.
type doctorCheck struct {
	cluster, check, target string
	ok                     bool
	detail                 string
}

// doctorCmd checks, for every cluster in the config, what klink needs to
// work: each bootstrap address (DNS, TCP, TLS, SASL), then every broker
// address the cluster advertises (the classic cross-network failure:
// bootstrap works, advertised brokers do not), then the operations klink
// needs on its topics, as far as the brokers report them.
func doctorCmd(args []string) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	path := fs.String("config", config.DefaultPath, "config file")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of each network check")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	var checks []doctorCheck
	var dstTopics []string
	for _, l := range cfg.Links {
		var src []string
		for _, m := range l.MirrorTopics {
			src = append(src, m.SourceTopic())
			dstTopics = append(dstTopics, m.Name)
		}
		if l.Source.NetworkLink != "" || l.IsInbound() || l.IsSource() {
			// Reached through a tunnel this host cannot dial into on its
			// own: checking it directly would report false failures.
			checks = append(checks, doctorCheck{cluster: "source of link " + l.Name, check: "reach", target: strings.Join(l.Source.Bootstrap, ","), ok: true,
				detail: "not checked from here: reached through a network link or a source-initiated link (see klink netlink status)"})
			continue
		}
		checks = append(checks, doctorCluster("source of link "+l.Name, l.Source.Bootstrap, l.Source.TLS, l.Source.SASL, src, sourceOps, *timeout)...)
	}
	checks = append(checks, doctorCluster("destination", cfg.Destination.Bootstrap, cfg.Destination.TLS, cfg.Destination.SASL, dstTopics, destinationOps, *timeout)...)
	failed := printDoctor(os.Stdout, checks)
	if failed > 0 {
		return fmt.Errorf("doctor: %d of %d checks failed", failed, len(checks))
	}
	fmt.Printf("doctor: all %d checks passed\n", len(checks))
	return nil
}

// The operations klink needs on its topics.
var (
	sourceOps      = []kmsg.ACLOperation{kmsg.ACLOperationDescribe, kmsg.ACLOperationRead, kmsg.ACLOperationDescribeConfigs}
	destinationOps = []kmsg.ACLOperation{kmsg.ACLOperationDescribe, kmsg.ACLOperationWrite, kmsg.ACLOperationDescribeConfigs, kmsg.ACLOperationAlterConfigs}
)

func doctorCluster(name string, bootstrap []string, t config.TLS, s config.SASL, topics []string, ops []kmsg.ACLOperation, timeout time.Duration) []doctorCheck {
	var out []doctorCheck
	add := func(check, target string, err error, detail string) bool {
		c := doctorCheck{cluster: name, check: check, target: target, ok: err == nil, detail: detail}
		if err != nil {
			c.detail = err.Error()
		}
		out = append(out, c)
		return err == nil
	}
	sec, err := secure.New(name, t, s, zap.NewNop())
	if !add("settings", "tls, sasl", err, "certificates and secrets read") {
		return out
	}
	var conn *kconn.Conn
	seen := map[string]bool{}
	for _, addr := range bootstrap {
		seen[addr] = true
		if c := doctorBroker(add, "bootstrap", addr, sec, t.Enabled, timeout); c != nil {
			if conn == nil {
				conn = c
			} else {
				c.Close()
			}
		}
	}
	if conn == nil {
		return out
	}
	defer conn.Close()
	md, err := doctorMetadata(conn, topics, timeout)
	detail := ""
	if err == nil {
		detail = fmt.Sprintf("%d brokers advertised", len(md.Brokers))
	}
	if !add("metadata", conn.Addr(), err, detail) {
		return out
	}
	sort.Slice(md.Brokers, func(i, j int) bool { return md.Brokers[i].NodeID < md.Brokers[j].NodeID })
	for _, b := range md.Brokers {
		addr := net.JoinHostPort(b.Host, fmt.Sprint(b.Port))
		if seen[addr] {
			continue
		}
		seen[addr] = true
		if c := doctorBroker(add, fmt.Sprintf("advertised broker %d", b.NodeID), addr, sec, t.Enabled, timeout); c != nil {
			c.Close()
		}
	}
	for _, mt := range md.Topics {
		topic := ""
		if mt.Topic != nil {
			topic = *mt.Topic
		}
		if err := kerr.ErrorForCode(mt.ErrorCode); err != nil {
			switch {
			case errors.Is(err, kerr.UnknownTopicOrPartition) && name == "destination":
				add("topic", topic, nil, "does not exist yet: klink creates it (needs CREATE)")
			case errors.Is(err, kerr.UnknownTopicOrPartition):
				add("topic", topic, fmt.Errorf("the source topic does not exist: its mirror waits for it"), "")
			default:
				add("permissions", "topic "+topic, err, "")
			}
			continue
		}
		if mt.AuthorizedOperations == math.MinInt32 {
			add("permissions", "topic "+topic, nil, "not reported by the broker (no authorizer, or an old version): not checked")
			continue
		}
		var missing []string
		for _, op := range ops {
			if mt.AuthorizedOperations&(1<<int(op)) == 0 {
				missing = append(missing, op.String())
			}
		}
		var perr error
		if len(missing) > 0 {
			perr = fmt.Errorf("klink may not %v", missing)
		}
		add("permissions", "topic "+topic, perr, fmt.Sprintf("%v allowed", ops))
	}
	return out
}

// doctorBroker checks one broker address: DNS, TCP, TLS, then the Kafka
// handshake with SASL. It returns the connection when all pass.
func doctorBroker(add func(check, target string, err error, detail string) bool, what, addr string, sec *secure.Client, tlsOn bool, timeout time.Duration) *kconn.Conn {
	host, _, err := net.SplitHostPort(addr)
	if !add(what+": address", addr, err, "") {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if !add(what+": dns", addr, err, fmt.Sprint(ips)) {
		return nil
	}
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if !add(what+": tcp", addr, err, "connected") {
		return nil
	}
	nc.Close()
	if tlsOn {
		tc, err := sec.Dial(ctx, "tcp", addr)
		if !add(what+": tls", addr, err, "handshake and certificate verified") {
			return nil
		}
		tc.Close()
	}
	conn, err := kconn.Dial(ctx, addr, kconn.Options{ClientID: "klink-doctor", Dial: sec.Dial, SASL: sec.SASL, Timeout: timeout})
	detail := "ApiVersions answered"
	if sec.SASL != nil {
		detail = "ApiVersions answered; SASL " + sec.SASL.Name() + " authenticated"
	}
	if !add(what+": kafka", addr, err, detail) {
		return nil
	}
	return conn
}

func doctorMetadata(conn *kconn.Conn, topics []string, timeout time.Duration) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(min(max(conn.MaxVersion(req.Key()), 0), 12))
	req.Topics = []kmsg.MetadataRequestTopic{}
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	req.IncludeTopicAuthorizedOperations = true
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := conn.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*kmsg.MetadataResponse), nil
}

// printDoctor prints the table and returns how many checks failed.
func printDoctor(w io.Writer, checks []doctorCheck) int {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tCHECK\tTARGET\tRESULT\tDETAIL")
	failed := 0
	for _, c := range checks {
		res := "ok"
		if !c.ok {
			res = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.cluster, c.check, c.target, res, c.detail)
	}
	tw.Flush()
	return failed
}
