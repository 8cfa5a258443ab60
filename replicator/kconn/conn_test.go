package kconn

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/replicator/batch"
)

func produceReq(t *testing.T, c *Conn, topic string, b batch.Batch) *kmsg.ProduceRequest {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(min(c.MaxVersion(0), 11))
	req.Acks = -1
	req.TimeoutMillis = 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = b
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

// Many produce requests for one partition in flight on one connection land
// in order, at consecutive offsets.
func TestPipelinedProduceKeepsOrder(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := Dial(ctx, c.ListenAddrs()[0], Options{ClientID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.MaxVersion(0) < 3 {
		t.Fatalf("produce max version %d", conn.MaxVersion(0))
	}
	ipid := kmsg.NewPtrInitProducerIDRequest()
	ipid.SetVersion(min(conn.MaxVersion(22), 4))
	ipid.TransactionTimeoutMillis = 60000
	r, err := conn.Do(ctx, ipid)
	if err != nil {
		t.Fatal(err)
	}
	pid := r.(*kmsg.InitProducerIDResponse)

	const n = 50
	type result struct {
		i    int
		base int64
		code int16
		err  error
	}
	results := make(chan result, n)
	var seq int32
	for i := 0; i < n; i++ {
		bs, err := batch.Fillers(3, 1, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		bs[0].Rewrite(batch.Producer{ID: pid.ProducerID, Epoch: pid.ProducerEpoch, Sequence: seq}, 0, bs[0].RecordsCRC())
		seq += 3
		i := i
		conn.Send(produceReq(t, conn, "t", bs[0]), 0, func(resp kmsg.Response, err error) {
			if err != nil {
				results <- result{i: i, err: err}
				return
			}
			p := resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]
			results <- result{i: i, base: p.BaseOffset, code: p.ErrorCode}
		})
	}
	for i := 0; i < n; i++ {
		r := <-results
		if r.err != nil || r.code != 0 {
			t.Fatalf("request %d: %v code %d", r.i, r.err, r.code)
		}
		if r.i != i || r.base != int64(3*i) {
			t.Fatalf("response %d for request %d at offset %d, want offset %d", i, r.i, r.base, 3*i)
		}
	}
}

// When the connection dies, every request in flight and every later one
// gets an answer exactly once, in the order sent; none hangs.
func TestDeadConnectionFailsEveryCall(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := Dial(ctx, c.ListenAddrs()[0], Options{ClientID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	// Hold every metadata request so that calls pile up in flight.
	c.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		time.Sleep(50 * time.Millisecond)
		return nil, nil, false
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	calls := map[int]int{}
	var order []int
	for i := 0; i < 20; i++ {
		wg.Add(1)
		i := i
		req := kmsg.NewPtrMetadataRequest()
		req.SetVersion(4)
		conn.Send(req, 0, func(_ kmsg.Response, err error) {
			mu.Lock()
			calls[i]++
			order = append(order, i)
			mu.Unlock()
			wg.Done()
		})
		if i == 5 {
			conn.Close()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("calls hang after the connection died")
	}
	for i := 0; i < 20; i++ {
		if calls[i] != 1 {
			t.Fatalf("call %d completed %d times", i, calls[i])
		}
		if order[i] != i {
			t.Fatalf("answers out of order: %v", order)
		}
	}
	if !errors.Is(conn.Err(), ErrClosed) {
		t.Fatalf("Err = %v", conn.Err())
	}
}
