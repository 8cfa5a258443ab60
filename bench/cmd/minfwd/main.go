// Command minfwd is a measuring stick, not a replicator: the least klink's
// design does to a batch (a streamed Fetch from each source leader, the
// CRC check, the rewrite to its own idempotent producer, a pipelined
// Produce to the destination leader), with nothing else: no state, no
// restarts, no retries (any error ends it), no goroutine per partition, no
// sinks. It takes klink's `run --config FILE` arguments (the file's shape as
// klinkbench writes it) so that klinkbench can run it in klink's place with
// -klink-binary, on the same data and with the same record-by-record
// check: what it costs per GiB is what klink's own machinery is measured
// against.
//
//	go build -o /tmp/minfwd ./bench/cmd/minfwd
//	go run ./bench/cmd/klinkbench -klink-binary /tmp/minfwd -size 1GiB -runs 3 -skip-baseline
package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/config"
	"github.com/klink-io/klink/replicator/batch"
	"github.com/klink-io/klink/replicator/kconn"
)

func fail(err error) { fmt.Fprintln(os.Stderr, err); os.Exit(1) }

func main() {
	if len(os.Args) != 4 || os.Args[1] != "run" || os.Args[2] != "--config" {
		fail(fmt.Errorf("usage: minfwd run --config FILE"))
	}
	// klink's own config parser: the file is the one klinkbench writes for
	// klink, one link with one mirror topic.
	cfg, err := config.Load(os.Args[3])
	if err != nil {
		fail(err)
	}
	if len(cfg.Links) != 1 || len(cfg.Links[0].MirrorTopics) != 1 {
		fail(fmt.Errorf("%s: minfwd takes one link with one mirror topic", os.Args[3]))
	}
	link := cfg.Links[0]
	dstAddr, srcAddr := cfg.Destination.Bootstrap[0], link.Source.Bootstrap[0]
	dstTopic, srcTopic := link.MirrorTopics[0].Name, link.MirrorTopics[0].SourceTopic()
	ctx := context.Background()

	scl, err := kgo.NewClient(kgo.SeedBrokers(srcAddr))
	if err != nil {
		fail(err)
	}
	dcl, err := kgo.NewClient(kgo.SeedBrokers(dstAddr))
	if err != nil {
		fail(err)
	}
	sadm, dadm := kadm.NewClient(scl), kadm.NewClient(dcl)
	smeta, err := sadm.Metadata(ctx, srcTopic)
	if err != nil {
		fail(err)
	}
	st := smeta.Topics[srcTopic]
	// klink sizes the mirror's max.message.bytes from the source; here,
	// large enough for any batch of the data set.
	if _, err := dadm.CreateTopic(ctx, int32(len(st.Partitions)), 1, map[string]*string{"max.message.bytes": kadm.StringPtr("16777216")}, dstTopic); err != nil {
		fail(err)
	}
	var dmeta kadm.Metadata
	for {
		dmeta, err = dadm.Metadata(ctx, dstTopic)
		if err == nil && len(dmeta.Topics[dstTopic].Partitions) == len(st.Partitions) {
			ok := true
			for _, p := range dmeta.Topics[dstTopic].Partitions {
				ok = ok && p.Leader >= 0 && p.Err == nil
			}
			if ok {
				time.Sleep(time.Second)
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	dconns := map[int32]*kconn.Conn{}
	for _, b := range dmeta.Brokers {
		c, err := kconn.Dial(ctx, fmt.Sprintf("%s:%d", b.Host, b.Port), kconn.Options{})
		if err != nil {
			fail(err)
		}
		dconns[b.NodeID] = c
	}
	var first *kconn.Conn // any destination broker answers InitProducerId
	for _, c := range dconns {
		first = c
		break
	}
	ipr := kmsg.NewPtrInitProducerIDRequest()
	ipr.ProducerID, ipr.ProducerEpoch = -1, -1
	resp, err := first.Do(ctx, ipr)
	if err != nil {
		fail(err)
	}
	ip := resp.(*kmsg.InitProducerIDResponse)
	dleader := map[int32]int32{}
	for _, p := range dmeta.Topics[dstTopic].Partitions {
		dleader[p.Partition] = p.Leader
	}
	byBroker := map[int32][]int32{}
	for _, p := range st.Partitions {
		byBroker[p.Leader] = append(byBroker[p.Leader], p.Partition)
	}
	pool := kconn.NewBufferPool(64 << 20)
	var wg sync.WaitGroup
	for id, parts := range byBroker {
		var addr string
		for _, b := range smeta.Brokers {
			if b.NodeID == id {
				addr = fmt.Sprintf("%s:%d", b.Host, b.Port)
			}
		}
		sc, err := kconn.Dial(ctx, addr, kconn.Options{})
		if err != nil {
			fail(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := map[int32]int64{}
			seq := map[int32]int32{}
			inflight := make(chan struct{}, 8) // Produce requests in flight from this source broker
			for {
				req := kmsg.NewPtrFetchRequest()
				req.SetVersion(min(sc.MaxVersion(1), kconn.MaxStreamedFetchVersion))
				req.ReplicaID = -1
				req.MaxWaitMillis = 500
				req.MinBytes = 1
				req.MaxBytes = 4 << 20
				req.IsolationLevel = 1
				req.SessionEpoch = -1
				rt := kmsg.NewFetchRequestTopic()
				rt.Topic = srcTopic
				rt.TopicID = st.ID
				for _, p := range parts {
					rp := kmsg.NewFetchRequestTopicPartition()
					rp.Partition = p
					rp.FetchOffset = next[p]
					rp.PartitionMaxBytes = 1 << 20
					rp.CurrentLeaderEpoch = -1
					rt.Partitions = append(rt.Partitions, rp)
				}
				req.Topics = append(req.Topics, rt)
				sf, err := sc.DoFetch(ctx, req, 30*time.Second, pool)
				if err != nil {
					fail(err)
				}
				for ti, t := range sf.Resp.Topics {
					for pi, p := range t.Partitions {
						buf := sf.Records[ti][pi]
						if buf == nil {
							continue
						}
						sf.Records[ti][pi] = nil
						bs, err := batch.Split(p.RecordBatches)
						if err != nil {
							fail(err)
						}
						for _, b := range bs {
							if b.BaseOffset() < next[p.Partition] {
								continue
							}
							rc, err := b.Verify()
							if err != nil {
								fail(err)
							}
							next[p.Partition] = b.NextOffset()
							b.Rewrite(batch.Producer{ID: ip.ProducerID, Epoch: ip.ProducerEpoch, Sequence: seq[p.Partition]}, 0, rc)
							seq[p.Partition] += b.NumRecords()
							buf.Retain(1)
							inflight <- struct{}{}
							dconns[dleader[p.Partition]].SendProduce(&kconn.Produce{Version: 9, Acks: -1, TimeoutMillis: 30000,
								Topics: []kconn.ProduceTopic{{Topic: dstTopic, Partitions: []kconn.ProducePartition{{Partition: p.Partition, Records: b}}}}},
								30*time.Second, func(r *kmsg.ProduceResponse, err error) {
									if err == nil && r.Topics[0].Partitions[0].ErrorCode != 0 {
										err = fmt.Errorf("produce error %d", r.Topics[0].Partitions[0].ErrorCode)
									}
									if err != nil {
										fail(err)
									}
									buf.Release()
									<-inflight
								})
						}
						buf.Release()
					}
				}
				sf.Release()
			}
		}()
	}
	wg.Wait()
}
