package kconn

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ProduceTopic is one topic of a Produce request.
type ProduceTopic struct {
	Topic      string
	Partitions []ProducePartition
}

// ProducePartition is one partition's record batch.
type ProducePartition struct {
	Partition int32
	Records   []byte
}

// Produce is a Produce request whose record batches are written to the
// socket from where they lie (writev), never copied into a request buffer:
// at a GiB a second, copying them costs more than everything else klink does
// to a batch.
type Produce struct {
	Version         int16 // 3..11
	TransactionalID *string
	Acks            int16
	TimeoutMillis   int32
	Topics          []ProduceTopic
}

// MaxProduceVersion is the newest Produce version EncodeProduce writes
// (v12 changes transaction semantics, v13 addresses topics by ID).
const MaxProduceVersion = 11

// SendProduce writes p and calls done with its response (see Send).
func (c *Conn) SendProduce(p *Produce, timeout time.Duration, done func(*kmsg.ProduceResponse, error)) {
	if p.Version < 3 || p.Version > MaxProduceVersion {
		done(nil, fmt.Errorf("produce version %d is not supported (3..%d)", p.Version, MaxProduceVersion))
		return
	}
	shadow := kmsg.NewPtrProduceRequest() // decodes the response
	shadow.SetVersion(p.Version)
	c.send(shadow, timeout, func(corr int32) net.Buffers {
		return EncodeProduce(p, c.opts.ClientID, corr)
	}, func(resp kmsg.Response, err error) {
		if err != nil {
			done(nil, err)
			return
		}
		done(resp.(*kmsg.ProduceResponse), nil)
	})
}

// EncodeProduce encodes p as a complete request (size prefix, header,
// body). Small encoded pieces and the callers' record batches alternate in
// the returned buffers.
func EncodeProduce(p *Produce, clientID string, corr int32) net.Buffers {
	flexible := p.Version >= 9
	var bufs net.Buffers
	cur := make([]byte, 4, 256) // size, filled in at the end
	total := 0
	flush := func() {
		bufs = append(bufs, cur)
		total += len(cur)
		cur = make([]byte, 0, 64)
	}
	// Header: api key, version, correlation id, client id (never compact),
	// and a tag section from header v2 (flexible requests) on.
	cur = binary.BigEndian.AppendUint16(cur, uint16(kmsg.Produce))
	cur = binary.BigEndian.AppendUint16(cur, uint16(p.Version))
	cur = binary.BigEndian.AppendUint32(cur, uint32(corr))
	cur = binary.BigEndian.AppendUint16(cur, uint16(len(clientID)))
	cur = append(cur, clientID...)
	if flexible {
		cur = append(cur, 0)
	}
	// Body.
	if flexible {
		if p.TransactionalID == nil {
			cur = binary.AppendUvarint(cur, 0)
		} else {
			cur = binary.AppendUvarint(cur, uint64(len(*p.TransactionalID))+1)
			cur = append(cur, *p.TransactionalID...)
		}
	} else {
		if p.TransactionalID == nil {
			cur = binary.BigEndian.AppendUint16(cur, 0xffff)
		} else {
			cur = binary.BigEndian.AppendUint16(cur, uint16(len(*p.TransactionalID)))
			cur = append(cur, *p.TransactionalID...)
		}
	}
	cur = binary.BigEndian.AppendUint16(cur, uint16(p.Acks))
	cur = binary.BigEndian.AppendUint32(cur, uint32(p.TimeoutMillis))
	cur = appendArrayLen(cur, len(p.Topics), flexible)
	for _, t := range p.Topics {
		if flexible {
			cur = binary.AppendUvarint(cur, uint64(len(t.Topic))+1)
		} else {
			cur = binary.BigEndian.AppendUint16(cur, uint16(len(t.Topic)))
		}
		cur = append(cur, t.Topic...)
		cur = appendArrayLen(cur, len(t.Partitions), flexible)
		for _, pp := range t.Partitions {
			cur = binary.BigEndian.AppendUint32(cur, uint32(pp.Partition))
			if flexible {
				cur = binary.AppendUvarint(cur, uint64(len(pp.Records))+1)
			} else {
				cur = binary.BigEndian.AppendUint32(cur, uint32(len(pp.Records)))
			}
			flush()
			bufs = append(bufs, pp.Records)
			total += len(pp.Records)
			if flexible {
				cur = append(cur, 0) // partition tags
			}
		}
		if flexible {
			cur = append(cur, 0) // topic tags
		}
	}
	if flexible {
		cur = append(cur, 0) // request tags
	}
	flush()
	binary.BigEndian.PutUint32(bufs[0], uint32(total-4))
	return bufs
}

func appendArrayLen(dst []byte, n int, flexible bool) []byte {
	if flexible {
		return binary.AppendUvarint(dst, uint64(n)+1)
	}
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}
