// Package kconn is one TCP connection to one Kafka broker on which many
// requests may be in flight at once, answered in the order they were sent.
//
// klink uses it for Produce: Kafka handles a connection's requests one at a
// time and in order, so pipelining several appends for one partition on one
// connection keeps their order and their idempotent sequence intact. kgo's
// Broker.Request cannot promise that order between concurrent calls, so the
// produce path owns its connections; everything else goes through kgo.
package kconn

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
)

// Options configure a connection.
type Options struct {
	// ClientID is sent in every request header.
	ClientID string
	// Dial opens the network connection; nil means a plain TCP dial. TLS
	// and tunnels plug in here.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// SASL, if set, authenticates the connection before it is used.
	SASL sasl.Mechanism
	// Timeout bounds each request from write to response (a request with
	// its own server-side timeout, like Produce, should be given more).
	Timeout time.Duration
}

// ErrClosed is returned for requests on a connection that has died.
var ErrClosed = errors.New("connection closed")

// Conn is a pipelined connection. Send may be called from many goroutines;
// requests are written, and answered, in the order Send was called, also
// when the connection fails (every call then gets the error, in order).
type Conn struct {
	addr     string
	nc       net.Conn
	br       *bufio.Reader // the reader goroutine's: large reads, few system calls
	opts     Options
	versions map[int16]int16 // api key -> max version the broker supports

	// mu serialises writes and correlation ids, and guards queue and
	// drained, so that queue order is write order.
	mu       sync.Mutex
	corr     int32
	queue    []*call       // written, awaiting a response, in write order
	queued   chan struct{} // capacity 1: tells the reader the queue grew
	drained  bool          // the connection died and every queued call was answered
	dead     chan struct{}
	deadOnce sync.Once
	err      error // set before dead is closed
}

type call struct {
	req      kmsg.Request
	corr     int32
	deadline time.Time
	done     func(kmsg.Response, error)
	// With a pool, the body is read into a pooled Buffer and pooledDone
	// is called instead of done.
	pool       *BufferPool
	pooledDone func(kmsg.Response, *Buffer, error)
	// stream, if set, reads the body (n bytes after the correlation id)
	// itself, straight from the connection; an error loses the framing
	// and fails the connection. done is then called with (nil, nil).
	stream func(r *bufio.Reader, n int) error
}

// finish hands the call its outcome.
func (cl *call) finish(resp kmsg.Response, buf *Buffer, err error) {
	if cl.pooledDone != nil {
		cl.pooledDone(resp, buf, err)
		return
	}
	cl.done(resp, err)
}

// Dial connects to addr and learns which request versions it supports.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	dial := opts.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c := newConn(addr, nc, opts)
	go c.readLoop()
	if err := c.loadVersions(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	if opts.SASL != nil {
		if err := c.authenticate(ctx, opts.SASL); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", addr, err)
		}
	}
	return c, nil
}

func newConn(addr string, nc net.Conn, opts Options) *Conn {
	return &Conn{
		addr:   addr,
		nc:     nc,
		br:     bufio.NewReaderSize(nc, readBufferSize),
		opts:   opts,
		queued: make(chan struct{}, 1),
		dead:   make(chan struct{}),
	}
}

// authenticate runs the SASL exchange (SaslHandshake v1, then
// SaslAuthenticate until the mechanism is done).
func (c *Conn) authenticate(ctx context.Context, mech sasl.Mechanism) error {
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.SetVersion(1)
	hs.Mechanism = mech.Name()
	kresp, err := c.Do(ctx, hs)
	if err != nil {
		return fmt.Errorf("SASL handshake: %w", err)
	}
	if resp := kresp.(*kmsg.SASLHandshakeResponse); resp.ErrorCode != 0 {
		return fmt.Errorf("SASL %s: %w (the broker offers %v)", mech.Name(), kerr.ErrorForCode(resp.ErrorCode), resp.SupportedMechanisms)
	}
	host, _, _ := net.SplitHostPort(c.addr)
	sess, out, err := mech.Authenticate(ctx, host)
	if err != nil {
		return fmt.Errorf("SASL %s: %w", mech.Name(), err)
	}
	for {
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.SetVersion(min(max(c.MaxVersion(req.Key()), 0), 1))
		req.SASLAuthBytes = out
		kresp, err := c.Do(ctx, req)
		if err != nil {
			return fmt.Errorf("SASL %s: %w", mech.Name(), err)
		}
		resp := kresp.(*kmsg.SASLAuthenticateResponse)
		if resp.ErrorCode != 0 {
			msg := ""
			if resp.ErrorMessage != nil {
				msg = ": " + *resp.ErrorMessage
			}
			return fmt.Errorf("SASL %s authentication failed: %w%s", mech.Name(), kerr.ErrorForCode(resp.ErrorCode), msg)
		}
		done, next, err := sess.Challenge(resp.SASLAuthBytes)
		if err != nil {
			return fmt.Errorf("SASL %s: %w", mech.Name(), err)
		}
		if done {
			return nil
		}
		out = next
	}
}

// Addr is the broker address.
func (c *Conn) Addr() string { return c.addr }

// loadVersions asks ApiVersions, v3 first, and v0 from a broker that only
// speaks that (it answers an unsupported version in v0 form).
func (c *Conn) loadVersions(ctx context.Context) error {
	for _, v := range []int16{3, 0} {
		req := kmsg.NewPtrApiVersionsRequest()
		req.SetVersion(v)
		req.ClientSoftwareName = "klink"
		req.ClientSoftwareVersion = "1"
		kresp, err := c.Do(ctx, req)
		if err != nil {
			return fmt.Errorf("ApiVersions: %w", err)
		}
		resp := kresp.(*kmsg.ApiVersionsResponse)
		if resp.ErrorCode == kerr.UnsupportedVersion.Code && v != 0 {
			continue
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return fmt.Errorf("ApiVersions: %w", err)
		}
		c.versions = make(map[int16]int16, len(resp.ApiKeys))
		for _, k := range resp.ApiKeys {
			c.versions[k.ApiKey] = k.MaxVersion
		}
		return nil
	}
	return errors.New("ApiVersions: no version accepted")
}

// MaxVersion is the highest version of a request the broker supports, or -1.
func (c *Conn) MaxVersion(key int16) int16 {
	if v, ok := c.versions[key]; ok {
		return v
	}
	return -1
}

// Dead is closed when the connection has failed or been closed.
func (c *Conn) Dead() <-chan struct{} { return c.dead }

// Err is why the connection died (nil while alive).
func (c *Conn) Err() error {
	select {
	case <-c.dead:
		return c.err
	default:
		return nil
	}
}

// Close closes the connection; requests in flight fail with ErrClosed.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	return nil
}

func (c *Conn) fail(err error) {
	c.deadOnce.Do(func() {
		c.err = err
		close(c.dead)
		c.nc.Close()
	})
}

// Send writes req (its version must be set) and calls done with the
// response or an error. done runs on the connection's reader goroutine (or
// on the caller's, if the connection is already dead) and must not block.
func (c *Conn) Send(req kmsg.Request, timeout time.Duration, done func(kmsg.Response, error)) {
	formatter := kmsg.NewRequestFormatter(kmsg.FormatterClientID(c.opts.ClientID))
	c.send(req, timeout, func(corr int32) net.Buffers {
		// Each request gets its own buffer: AppendRequest writes the
		// size at the start of the slice it is given.
		return net.Buffers{formatter.AppendRequest(nil, req, corr)}
	}, done)
}

// send writes the request encode returns for the next correlation id; req
// decodes the response.
func (c *Conn) send(req kmsg.Request, timeout time.Duration, encode func(corr int32) net.Buffers, done func(kmsg.Response, error)) {
	c.sendCall(&call{req: req, done: done}, timeout, encode)
}

func (c *Conn) sendCall(cl *call, timeout time.Duration, encode func(corr int32) net.Buffers) {
	if timeout <= 0 {
		timeout = c.opts.Timeout
	}
	c.mu.Lock()
	if c.drained {
		// Every earlier call has been answered: answering now keeps
		// the order.
		err := c.err
		c.mu.Unlock()
		cl.finish(nil, nil, err)
		return
	}
	c.corr++
	cl.corr = c.corr
	cl.deadline = time.Now().Add(timeout)
	// Queue before the write, so that the reader expects the response;
	// on a dead connection the reader's drain answers it, after the
	// calls before it.
	c.queue = append(c.queue, cl)
	select {
	case c.queued <- struct{}{}:
	default:
	}
	var err error
	select {
	case <-c.dead:
	default:
		bufs := encode(cl.corr)
		c.nc.SetWriteDeadline(time.Now().Add(c.opts.Timeout))
		_, err = bufs.WriteTo(c.nc)
	}
	c.mu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("write to %s: %w", c.addr, err))
	}
}

// Do sends req and waits for its response.
func (c *Conn) Do(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	type result struct {
		resp kmsg.Response
		err  error
	}
	ch := make(chan result, 1)
	c.Send(req, 0, func(r kmsg.Response, err error) { ch <- result{r, err} })
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// readLoop reads responses in order and hands each to its call.
func (c *Conn) readLoop() {
	var size [4]byte
	for {
		c.mu.Lock()
		var cl *call
		if len(c.queue) > 0 {
			cl = c.queue[0]
		}
		c.mu.Unlock()
		if cl == nil {
			select {
			case <-c.queued:
				continue
			case <-c.dead:
				c.drain()
				return
			}
		}
		c.nc.SetReadDeadline(cl.deadline)
		resp, buf, err := c.readResponse(cl, size[:])
		if err != nil {
			if buf != nil {
				buf.Release()
			}
			c.fail(fmt.Errorf("read from %s: %w", c.addr, err))
			c.drain()
			return
		}
		c.mu.Lock()
		c.queue = c.queue[1:]
		c.mu.Unlock()
		cl.finish(resp, buf, nil)
	}
}

// readBufferSize is the connection's read buffer: small fields come out of
// it; a read of at least this size (a record set) bypasses it.
const readBufferSize = 64 << 10

func (c *Conn) readResponse(cl *call, size []byte) (kmsg.Response, *Buffer, error) {
	if _, err := io.ReadFull(c.br, size); err != nil {
		return nil, nil, err
	}
	n := binary.BigEndian.Uint32(size)
	if n < 4 || n > 1<<30 {
		return nil, nil, fmt.Errorf("invalid response size %d", n)
	}
	if cl.stream != nil {
		if _, err := io.ReadFull(c.br, size); err != nil {
			return nil, nil, err
		}
		if corr := int32(binary.BigEndian.Uint32(size)); corr != cl.corr {
			return nil, nil, fmt.Errorf("response correlation id %d, expected %d", corr, cl.corr)
		}
		return nil, nil, cl.stream(c.br, int(n)-4)
	}
	var body []byte
	var buf *Buffer
	if cl.pool != nil {
		buf = cl.pool.Get(int(n))
		body = buf.b
	} else {
		body = make([]byte, n)
	}
	resp, err := c.decode(cl, body)
	return resp, buf, err
}

func (c *Conn) decode(cl *call, body []byte) (kmsg.Response, error) {
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, err
	}
	if corr := int32(binary.BigEndian.Uint32(body)); corr != cl.corr {
		return nil, fmt.Errorf("response correlation id %d, expected %d", corr, cl.corr)
	}
	body = body[4:]
	resp := cl.req.ResponseKind()
	resp.SetVersion(cl.req.GetVersion())
	// A broker that does not know the ApiVersions version asked answers
	// in v0 form with UNSUPPORTED_VERSION: decode it as v0 so that the
	// caller can ask again with v0.
	if resp.Key() == int16(kmsg.ApiVersions) && len(body) >= 2 && int16(binary.BigEndian.Uint16(body)) == kerr.UnsupportedVersion.Code {
		resp.SetVersion(0)
	}
	// Flexible responses carry a tag section in their header, except
	// ApiVersions, whose header is always v0.
	if resp.IsFlexible() && resp.Key() != int16(kmsg.ApiVersions) {
		var err error
		if body, err = skipTags(body); err != nil {
			return nil, err
		}
	}
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decoding %s v%d response: %w", kmsg.NameForKey(resp.Key()), resp.GetVersion(), err)
	}
	return resp, nil
}

// drain fails every call still queued once the connection is dead, in
// order. It holds mu while answering (answers must not block) so that no
// later call can be answered before an earlier one.
func (c *Conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drained = true
	for _, cl := range c.queue {
		cl.finish(nil, nil, c.err)
	}
	c.queue = nil
}

func skipTags(b []byte) ([]byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, errors.New("bad tag count")
	}
	b = b[k:]
	for i := uint64(0); i < n; i++ {
		if _, k = binary.Uvarint(b); k <= 0 {
			return nil, errors.New("bad tag")
		}
		b = b[k:]
		size, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < size {
			return nil, errors.New("bad tag size")
		}
		b = b[k+int(size):]
	}
	return b, nil
}
