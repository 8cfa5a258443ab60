package kconn

import (
	"context"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Buffer is a response body read into memory from a BufferPool. The
// response's byte fields (record batches) alias it, so it is shared by
// reference count and goes back to the pool when the last holder releases
// it. Reusing fetch buffers matters: a fresh 16 MiB buffer per fetch costs
// more in page faults than copying the data does.
type Buffer struct {
	b    []byte
	refs atomic.Int32
	pool *BufferPool
	// Sums holds, for a record set read by ReadFetchResponse, the
	// records-section CRC32C of each whole batch at its start, in order
	// (batch.RecordsCRCs): computed while the bytes were still in the
	// CPU's cache, for the batches' checks later.
	Sums []uint32
}

// Get returns a buffer of n bytes holding one reference.
func (p *BufferPool) Get(n int) *Buffer {
	b := &Buffer{b: p.get(n), pool: p}
	b.refs.Store(1)
	p.outstanding.Add(1)
	return b
}

// Bytes is the buffer's memory.
func (b *Buffer) Bytes() []byte { return b.b }

// Retain adds n references.
func (b *Buffer) Retain(n int) { b.refs.Add(int32(n)) }

// Release drops one reference; the last one returns the memory to the pool.
func (b *Buffer) Release() {
	switch n := b.refs.Add(-1); {
	case n == 0:
		b.pool.outstanding.Add(-1)
		b.pool.put(b.b)
		b.b = nil
	case n < 0:
		panic("kconn: Buffer released more often than retained")
	}
}

// BufferPool keeps released buffers for reuse, up to a total size. A
// request for n bytes takes the smallest free buffer that holds n and is
// not more than twice n (so a buffer never pins much more memory than its
// content); new buffers are rounded up to a size class so that sizes recur.
type BufferPool struct {
	mu        sync.Mutex
	free      [][]byte // sorted by capacity
	freeBytes int
	maxBytes  int
	// uniform, if set, is the size of every buffer asked for more than
	// 1 MiB (or the size asked, if larger), and any such buffer serves any
	// such request: for buffers that are given back at once, like fetch
	// responses whose batches are copied out, one size fits all.
	uniform int

	outstanding atomic.Int64 // buffers handed out and not yet released
}

// Outstanding is the number of buffers handed out and not released: zero
// once everything that fetched has finished with what it fetched.
func (p *BufferPool) Outstanding() int64 { return p.outstanding.Load() }

// NewBufferPool returns a pool retaining at most maxBytes of free buffers.
func NewBufferPool(maxBytes int) *BufferPool { return &BufferPool{maxBytes: maxBytes} }

// NewUniformBufferPool is NewBufferPool where every request over 1 MiB gets
// a buffer of at least uniform bytes.
func NewUniformBufferPool(maxBytes, uniform int) *BufferPool {
	return &BufferPool{maxBytes: maxBytes, uniform: uniform}
}

const uniformFrom = 1 << 20

// minPooledSize is the smallest buffer: a page. (It was 64 KiB; with
// 10,000 partitions catching up a few records each, every tiny record set
// then held 64 KiB.)
const minPooledSize = 4 << 10

// sizeClass rounds n up to a page at least, else to a multiple of the
// power of two that is between 1/16 and 1/8 of n: at most a quarter of a
// buffer is slack.
func sizeClass(n int) int {
	if n <= minPooledSize {
		return minPooledSize
	}
	step := 1
	for step<<3 < n {
		step <<= 1
	}
	return (n + step - 1) / step * step
}

func (p *BufferPool) get(n int) []byte {
	p.mu.Lock()
	i := sort.Search(len(p.free), func(i int) bool { return cap(p.free[i]) >= n })
	uniform := p.uniform > 0 && n > uniformFrom
	if i < len(p.free) && (uniform || cap(p.free[i]) <= 2*max(n, minPooledSize)) {
		b := p.free[i]
		p.free = append(p.free[:i], p.free[i+1:]...)
		p.freeBytes -= cap(b)
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	if uniform {
		return make([]byte, n, max(n, p.uniform))
	}
	return make([]byte, n, sizeClass(n))
}

func (p *BufferPool) put(b []byte) {
	if poisonReleased {
		// Under the race detector, a released buffer is overwritten so
		// that any use after release shows up as corrupt data.
		b = b[:cap(b)]
		for i := range b {
			b[i] = 0xdd
		}
	}
	c := cap(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if c > p.maxBytes {
		return
	}
	for p.freeBytes+c > p.maxBytes {
		// Make room by dropping the smallest: big buffers are the
		// costly ones to fault in again.
		p.freeBytes -= cap(p.free[0])
		p.free = p.free[1:]
	}
	i := sort.Search(len(p.free), func(i int) bool { return cap(p.free[i]) >= c })
	p.free = append(p.free, nil)
	copy(p.free[i+1:], p.free[i:])
	p.free[i] = b[:0]
	p.freeBytes += c
}

// SendPooled is Send with the response body read into a buffer from pool.
// done gets the buffer with one reference, which it (or whoever it hands
// the response's byte fields to) must release.
func (c *Conn) SendPooled(req kmsg.Request, timeout time.Duration, pool *BufferPool, done func(kmsg.Response, *Buffer, error)) {
	formatter := kmsg.NewRequestFormatter(kmsg.FormatterClientID(c.opts.ClientID))
	c.sendCall(&call{req: req, pool: pool, pooledDone: done}, timeout, func(corr int32) net.Buffers {
		return net.Buffers{formatter.AppendRequest(nil, req, corr)}
	})
}

// DoPooled is SendPooled, waiting for the answer.
func (c *Conn) DoPooled(ctx context.Context, req kmsg.Request, timeout time.Duration, pool *BufferPool) (kmsg.Response, *Buffer, error) {
	type result struct {
		resp kmsg.Response
		buf  *Buffer
		err  error
	}
	ch := make(chan result, 1)
	c.SendPooled(req, timeout, pool, func(r kmsg.Response, b *Buffer, err error) { ch <- result{r, b, err} })
	select {
	case r := <-ch:
		return r.resp, r.buf, r.err
	case <-ctx.Done():
		// The answer still comes; its buffer must go back.
		go func() {
			if r := <-ch; r.buf != nil {
				r.buf.Release()
			}
		}()
		return nil, nil, ctx.Err()
	}
}
