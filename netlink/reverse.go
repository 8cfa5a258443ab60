package netlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"
)

// Source-initiated links: for a source that may only dial out, the tunnel
// is dialed the other way. The source side (Dialout) connects out to the
// destination side (an inbound Endpoint), which checks its certificate
// against its accept list; then the destination side opens streams over
// that connection as an ordinary endpoint would, and the source side
// relays them to the source's brokers. The destination side never dials
// the source.

// InboundConfig is the destination side of a source-initiated link.
type InboundConfig struct {
	Name   string
	Listen string
	// TLS is the listener's certificate and the CAs the source side's
	// certificate must be signed by (mTLS both ways).
	TLS    *tls.Config
	Accept Accept
}

// NewInboundEndpoint makes an endpoint whose tunnel is the connection the
// source side opens to Listen. Run listens.
func NewInboundEndpoint(cfg InboundConfig, log *zap.Logger) (*Endpoint, error) {
	if cfg.TLS == nil || len(cfg.TLS.Certificates) == 0 || cfg.TLS.ClientCAs == nil {
		return nil, fmt.Errorf("inbound link %s: a certificate and client CAs are required", cfg.Name)
	}
	tc := cfg.TLS.Clone()
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	tc.MinVersion = max(tc.MinVersion, tls.VersionTLS12)
	ln, err := tls.Listen("tcp", cfg.Listen, tc)
	if err != nil {
		return nil, fmt.Errorf("inbound link %s: %w", cfg.Name, err)
	}
	e := NewEndpoint(EndpointConfig{Name: cfg.Name, Address: ln.Addr().String()}, log)
	e.inbound = &inbound{ln: ln, accept: cfg.Accept}
	return e, nil
}

type inbound struct {
	ln     net.Listener
	accept Accept   // e.mu
	peer   Identity // the source side connected now (e.mu)
}

// SetAccept replaces an inbound endpoint's accept list (a reload): a
// connected source side no longer on it is disconnected at once, and
// refused when it comes back.
func (e *Endpoint) SetAccept(a Accept) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inbound == nil {
		return
	}
	e.inbound.accept = a
	if e.sess != nil && a.Allows(e.inbound.peer) != nil {
		e.log.Warn("source side no longer accepted: disconnected", zap.Stringer("source", e.inbound.peer))
		e.sess.Close()
	}
}

// runInbound accepts the source side's connections; the newest accepted
// one is the tunnel.
func (e *Endpoint) runInbound(ctx context.Context) {
	go func() {
		<-ctx.Done()
		e.inbound.ln.Close()
	}()
	for {
		c, err := e.inbound.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go e.acceptSource(ctx, c.(*tls.Conn))
	}
}

func (e *Endpoint) acceptSource(ctx context.Context, c *tls.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.HandshakeContext(ctx); err != nil {
		e.log.Info("source side TLS handshake failed", zap.Stringer("from", c.RemoteAddr()), zap.Error(err))
		c.Close()
		return
	}
	id, err := IdentityOf(c.ConnectionState().PeerCertificates[0])
	if err == nil {
		e.mu.Lock()
		err = e.inbound.accept.Allows(id)
		e.mu.Unlock()
	}
	if err != nil {
		e.log.Warn("source side refused", zap.Stringer("from", c.RemoteAddr()), zap.Error(err))
		fmt.Fprintf(c, "REFUSED %s\n", oneLine(err.Error()))
		c.Close()
		return
	}
	fmt.Fprintf(c, "OK %s\n", id)
	c.SetDeadline(time.Time{})
	sess, err := yamux.Client(c, yamuxConfig())
	if err != nil {
		c.Close()
		return
	}
	e.mu.Lock()
	if err := e.inbound.accept.Allows(id); err != nil { // a reload in between
		e.mu.Unlock()
		sess.Close()
		return
	}
	old := e.sess
	e.sess, e.inbound.peer = sess, id
	e.mu.Unlock()
	if old != nil {
		old.Close()
	}
	e.set(Ready, "")
	e.log.Info("source side connected", zap.Stringer("source", id), zap.Stringer("from", c.RemoteAddr()))
	select {
	case <-ctx.Done():
		sess.Close()
	case <-sess.CloseChan():
	}
	e.mu.Lock()
	current := e.sess == sess
	if current {
		e.sess = nil
	}
	e.mu.Unlock()
	if current && ctx.Err() == nil {
		e.set(Disconnected, "the source side's connection was closed; waiting for it to connect again")
	}
}

// DialoutConfig is the source side of a source-initiated link.
type DialoutConfig struct {
	Name string
	// Address is the destination side's inbound listener; TLS verifies it
	// and carries the source side's certificate (its identity).
	Address string
	TLS     *tls.Config
	// Bootstrap, Brokers and Allow bound what the relay dials, as for a
	// Service.
	Bootstrap []string
	Allow     []string
	Brokers   func(ctx context.Context) ([]string, error)
}

// Dialout keeps a connection out to the destination side and relays its
// streams to the source's brokers.
type Dialout struct {
	cfg   DialoutConfig
	log   *zap.Logger
	relay *relayer
	state atomic.Value // EndpointStatus
	bytes atomic.Int64
}

// NewDialout prepares the source side; Run connects it.
func NewDialout(cfg DialoutConfig, log *zap.Logger) *Dialout {
	l := log.With(zap.String("sourceLink", cfg.Name))
	d := &Dialout{cfg: cfg, log: l, relay: &relayer{log: l, bootstrap: cfg.Bootstrap, allow: cfg.Allow, brokersFn: cfg.Brokers, brokers: map[string]bool{}}}
	d.state.Store(EndpointStatus{Name: cfg.Name, Service: cfg.Address, State: Connecting, Since: time.Now().UTC()})
	return d
}

func (d *Dialout) set(state, reason string) {
	if cur := d.state.Load().(EndpointStatus); cur.State != state || cur.Reason != reason {
		d.state.Store(EndpointStatus{Name: d.cfg.Name, Service: d.cfg.Address, State: state, Reason: reason, Since: time.Now().UTC()})
	}
}

// Status reports the source side.
func (d *Dialout) Status() EndpointStatus { return d.state.Load().(EndpointStatus) }

// Bytes is what the relay carried.
func (d *Dialout) Bytes() int64 { return d.bytes.Load() }

// Run keeps the connection up until ctx ends, reconnecting with a backoff.
func (d *Dialout) Run(ctx context.Context) {
	reconnect(ctx, d.log, "source side", d.connect, func(err error) { d.set(Disconnected, err.Error()) }, func(sess *yamux.Session) {
		d.set(Ready, "")
		d.log.Info("source side connected to the destination side", zap.String("destination", d.cfg.Address))
		stop := context.AfterFunc(ctx, func() { sess.Close() })
		defer stop()
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				break
			}
			go d.relay.relay(ctx, "destination side", &d.bytes, st)
		}
		if ctx.Err() == nil {
			d.set(Disconnected, "the connection to the destination side was closed")
		}
	})
}

func (d *Dialout) connect(ctx context.Context) (*yamux.Session, error) {
	c, err := dialAccepted(ctx, "destination side", d.cfg.Address, d.cfg.TLS)
	if err != nil {
		return nil, err
	}
	return yamux.Server(c, yamuxConfig()) // the destination side opens the streams
}
