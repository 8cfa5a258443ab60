package kconn

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/klink-io/klink/replicator/batch"
)

// StreamedFetch is a Fetch response read from the socket as a stream: each
// partition's record set is read straight into a buffer of its own, so no
// batch is ever copied out of a shared response (a partition that appends
// slowly holds only its own bytes).
type StreamedFetch struct {
	// Resp is the response; each partition's RecordBatches aliases the
	// buffer in Records.
	Resp *kmsg.FetchResponse
	// Records[i][j] holds topic i partition j's record set, one
	// reference; nil where the set is empty.
	Records [][]*Buffer
}

// Release drops every record buffer's reference (what was not handed on).
func (s *StreamedFetch) Release() {
	for _, t := range s.Records {
		for _, b := range t {
			if b != nil {
				b.Release()
			}
		}
	}
	s.Records = nil
}

// DoFetch sends req and reads the answer as a StreamedFetch, the record
// sets into buffers from pool.
func (c *Conn) DoFetch(ctx context.Context, req *kmsg.FetchRequest, timeout time.Duration, pool *BufferPool) (*StreamedFetch, error) {
	type result struct {
		s   *StreamedFetch
		err error
	}
	ch := make(chan result, 1)
	formatter := kmsg.NewRequestFormatter(kmsg.FormatterClientID(c.opts.ClientID))
	version := req.GetVersion()
	cl := &call{req: req, done: func(kmsg.Response, error) {}}
	cl.stream = func(r *bufio.Reader, n int) error {
		s, err := ReadFetchResponse(r, n, version, pool)
		if err == nil {
			ch <- result{s: s}
		}
		return err
	}
	cl.done = func(_ kmsg.Response, err error) {
		if err != nil {
			ch <- result{err: err}
		}
	}
	c.sendCall(cl, timeout, func(corr int32) net.Buffers {
		return net.Buffers{formatter.AppendRequest(nil, req, corr)}
	})
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		// The answer still comes; its buffers must go back.
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Release()
			}
		}()
		return nil, ctx.Err()
	}
}

// MaxStreamedFetchVersion is the newest Fetch response ReadFetchResponse
// knows the layout of: callers cap their requests at it.
const MaxStreamedFetchVersion = 18

// ReadFetchResponse reads a Fetch response body of n bytes (after the
// correlation id) of the given version from r. Everything but the record
// sets is copied into a small skeleton, with each record set replaced by
// an empty one, and decoded by kmsg, so every field is checked as kmsg
// checks it; the record sets are read straight into buffers from pool.
// Exactly n bytes are consumed unless an error is returned (the
// connection's framing is then lost).
func ReadFetchResponse(r *bufio.Reader, n int, version int16, pool *BufferPool) (s *StreamedFetch, err error) {
	if version < 4 || version > MaxStreamedFetchVersion {
		return nil, fmt.Errorf("fetch response version %d: streaming reads 4 to %d", version, MaxStreamedFetchVersion)
	}
	w := &walker{r: r, left: n, flexible: version >= 12}
	s = &StreamedFetch{}
	defer func() {
		if err != nil {
			s.Release()
		}
	}()
	var sets []*Buffer
	if w.flexible {
		w.tags() // response header v1
	}
	if version >= 1 {
		w.copy(4) // throttle
	}
	if version >= 7 {
		w.copy(2 + 4) // error code, session id
	}
	topics := w.arrayLen()
	var perTopic []int
	for range max(topics, 0) {
		if w.err != nil {
			break
		}
		if version >= 13 {
			w.copy(16)
		} else {
			w.str()
		}
		parts := w.arrayLen()
		perTopic = append(perTopic, max(parts, 0))
		for range max(parts, 0) {
			if w.err != nil {
				break
			}
			w.copy(4 + 2 + 8) // partition, error code, high watermark
			w.copy(8)         // last stable offset (v4+)
			if version >= 5 {
				w.copy(8) // log start offset
			}
			aborted := w.arrayLen()
			for range max(aborted, 0) {
				if w.err != nil {
					break
				}
				w.copy(8 + 8)
				if w.flexible {
					w.tags()
				}
			}
			if version >= 11 {
				w.copy(4) // preferred read replica
			}
			sets = append(sets, w.records(pool))
			if w.flexible {
				w.tags()
			}
		}
		if w.flexible {
			w.tags()
		}
	}
	// What is left is the top-level tag section (flexible versions).
	if w.err == nil {
		w.copy(w.left)
	}
	if w.err != nil {
		for _, b := range sets {
			if b != nil {
				b.Release()
			}
		}
		return s, fmt.Errorf("reading a fetch response v%d: %w", version, w.err)
	}
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(version)
	skeleton := w.skeleton
	if w.flexible {
		// The header's tags were copied too: kmsg decodes the body only.
		if skeleton, err = skipTags(skeleton); err != nil {
			releaseAll(sets)
			return s, err
		}
	}
	if err := resp.ReadFrom(skeleton); err != nil {
		releaseAll(sets)
		return s, fmt.Errorf("decoding a fetch response v%d: %w", version, err)
	}
	// The skeleton names as many partitions as were walked (checked
	// first, before any buffer is handed out): attach each record set to
	// its partition, in order.
	if len(resp.Topics) != len(perTopic) {
		releaseAll(sets)
		return s, fmt.Errorf("decoding a fetch response v%d: %d topics, walked %d", version, len(resp.Topics), len(perTopic))
	}
	for ti := range resp.Topics {
		if got := len(resp.Topics[ti].Partitions); got != perTopic[ti] {
			releaseAll(sets)
			return s, fmt.Errorf("decoding a fetch response v%d: topic %d has %d partitions, walked %d", version, ti, got, perTopic[ti])
		}
	}
	i := 0
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		bufs := make([]*Buffer, len(t.Partitions))
		for pi := range t.Partitions {
			if b := sets[i]; b != nil {
				bufs[pi] = b
				t.Partitions[pi].RecordBatches = b.Bytes()
			}
			i++
		}
		s.Records = append(s.Records, bufs)
	}
	s.Resp = resp
	return s, nil
}

func releaseAll(bs []*Buffer) {
	for _, b := range bs {
		if b != nil {
			b.Release()
		}
	}
}

// walker reads a response body field by field, copying all of it but the
// record sets into skeleton.
type walker struct {
	r        *bufio.Reader
	left     int // bytes of the body not read yet
	flexible bool
	skeleton []byte
	err      error
}

var errShort = errors.New("the response ends inside a field")

// copy moves k bytes from the body into the skeleton.
func (w *walker) copy(k int) {
	if w.err != nil {
		return
	}
	if k < 0 || k > w.left {
		w.err = errShort
		return
	}
	start := len(w.skeleton)
	w.skeleton = append(w.skeleton, make([]byte, k)...)
	if _, err := io.ReadFull(w.r, w.skeleton[start:]); err != nil {
		w.err = err
		return
	}
	w.left -= k
}

// uvarint reads (and copies) an unsigned varint.
func (w *walker) uvarint() uint64 {
	var x uint64
	for shift := 0; w.err == nil; shift += 7 {
		if shift > 63 || w.left < 1 {
			w.err = errors.New("bad varint")
			return 0
		}
		c, err := w.r.ReadByte()
		if err != nil {
			w.err = err
			return 0
		}
		w.left--
		w.skeleton = append(w.skeleton, c)
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x
		}
	}
	return 0
}

// int32 reads (and copies) a big-endian int32.
func (w *walker) int32() int32 {
	w.copy(4)
	if w.err != nil {
		return 0
	}
	return int32(binary.BigEndian.Uint32(w.skeleton[len(w.skeleton)-4:]))
}

// arrayLen reads an array length: -1 for a null array.
func (w *walker) arrayLen() int {
	if w.flexible {
		n := w.uvarint()
		if n > uint64(w.left)+1 {
			w.err = fmt.Errorf("array of %d elements in %d bytes", n-1, w.left)
			return 0
		}
		return int(n) - 1
	}
	n := w.int32()
	if int64(n) > int64(w.left) {
		w.err = fmt.Errorf("array of %d elements in %d bytes", n, w.left)
		return 0
	}
	return int(n)
}

// str copies a string (compact in flexible versions).
func (w *walker) str() {
	if w.flexible {
		n := w.uvarint()
		if n > 0 {
			w.copy(int(min(n-1, uint64(w.left)+1)))
		}
		return
	}
	w.copy(2)
	if w.err != nil {
		return
	}
	if n := int16(binary.BigEndian.Uint16(w.skeleton[len(w.skeleton)-2:])); n > 0 {
		w.copy(int(n))
	}
}

// tags copies a tag section.
func (w *walker) tags() {
	n := w.uvarint()
	for i := uint64(0); i < n && w.err == nil; i++ {
		w.uvarint() // key
		size := w.uvarint()
		if size > uint64(w.left) {
			w.err = errShort
			return
		}
		w.copy(int(size))
	}
}

// records reads a record set into a buffer of its own and puts an empty
// one in the skeleton in its place.
func (w *walker) records(pool *BufferPool) *Buffer {
	if w.err != nil {
		return nil
	}
	var n int64
	if w.flexible {
		mark := len(w.skeleton)
		n = int64(w.uvarint()) - 1 // -1: null
		w.skeleton = append(w.skeleton[:mark], 1)
	} else {
		n = int64(w.int32())
		w.skeleton = binary.BigEndian.AppendUint32(w.skeleton[:len(w.skeleton)-4], 0)
	}
	if w.err != nil || n <= 0 {
		return nil
	}
	if n > int64(w.left) {
		w.err = errShort
		return nil
	}
	b := pool.Get(int(n))
	if _, err := io.ReadFull(w.r, b.Bytes()); err != nil {
		b.Release()
		w.err = err
		return nil
	}
	w.left -= int(n)
	b.Sums = batch.RecordsCRCs(nil, b.Bytes())
	return b
}
