// Command isolatedsource runs a one-broker kfake cluster for the network
// link isolation test (run inside a network namespace): it listens on
// 127.0.0.1:PORT, creates topic orders with RECORDS records made by
// netlinktest.Record, prints "ready", and runs until stdin closes.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/klink-io/klink/netlink/netlinktest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "isolatedsource:", err)
		os.Exit(1)
	}
}

func run() error {
	port, err := strconv.Atoi(os.Args[1])
	if err != nil {
		return err
	}
	records, err := strconv.Atoi(os.Args[2])
	if err != nil {
		return err
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.ClusterID("isolated-src"))
	if err != nil {
		return err
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("orders"))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "orders"); err != nil {
		return err
	}
	for i := range records {
		if err := cl.ProduceSync(ctx, netlinktest.Record(i)).FirstErr(); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}
