package netlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"
)

// Endpoint states.
const (
	Connecting   = "CONNECTING"
	Ready        = "READY"
	Disconnected = "DISCONNECTED"
)

// EndpointConfig is a network link endpoint: where its service is, and the
// TLS to reach it with (klink's client certificate carries its identity).
type EndpointConfig struct {
	Name    string
	Address string
	TLS     *tls.Config
}

// Endpoint keeps a tunnel to a service and dials through it.
type Endpoint struct {
	cfg EndpointConfig
	log *zap.Logger

	inbound *inbound // set for the destination side of a source-initiated link

	mu     sync.Mutex
	sess   *yamux.Session
	state  string
	reason string
	since  time.Time
}

// EndpointStatus is an endpoint, for status.
type EndpointStatus struct {
	Name    string    `json:"name"`
	Service string    `json:"service"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Since   time.Time `json:"since"`
}

// NewEndpoint prepares an endpoint; Run connects it.
func NewEndpoint(cfg EndpointConfig, log *zap.Logger) *Endpoint {
	return &Endpoint{cfg: cfg, log: log.With(zap.String("networkLink", cfg.Name)), state: Connecting, since: time.Now().UTC()}
}

// Run keeps the tunnel up until ctx ends, reconnecting with a backoff.
func (e *Endpoint) Run(ctx context.Context) {
	if e.inbound != nil {
		e.runInbound(ctx)
		return
	}
	reconnect(ctx, e.log, "network link", e.connect, func(err error) { e.set(Disconnected, err.Error()) }, func(sess *yamux.Session) {
		e.mu.Lock()
		e.sess = sess
		e.mu.Unlock()
		e.set(Ready, "")
		e.log.Info("network link READY", zap.String("service", e.cfg.Address))
		select {
		case <-ctx.Done():
			sess.Close()
		case <-sess.CloseChan():
		}
		e.mu.Lock()
		e.sess = nil
		e.mu.Unlock()
		if ctx.Err() == nil {
			e.set(Disconnected, "the connection to the service was closed (revoked, or the network failed)")
			e.log.Warn("network link disconnected")
		}
	})
}

// reconnect calls connect until ctx ends. On failure it reports the error
// and waits (100 ms, doubling up to 30 s); on success it hands the session
// to up, which returns when the session has ended.
func reconnect(ctx context.Context, log *zap.Logger, what string, connect func(context.Context) (*yamux.Session, error), failed func(error), up func(*yamux.Session)) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		sess, err := connect(ctx)
		if err != nil {
			failed(err)
			log.Warn(what+" not connected; retrying", zap.Error(err), zap.Duration("backoff", wait))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 30*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
		up(sess)
	}
}

func (e *Endpoint) set(state, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state != state || e.reason != reason {
		e.state, e.reason, e.since = state, reason, time.Now().UTC()
	}
}

// connect dials the service, reads its verdict and starts the session.
func (e *Endpoint) connect(ctx context.Context) (*yamux.Session, error) {
	c, err := dialAccepted(ctx, "network link service", e.cfg.Address, e.cfg.TLS)
	if err != nil {
		return nil, err
	}
	return yamux.Client(c, yamuxConfig())
}

// dialAccepted dials the other side of a tunnel with TLS and reads its
// verdict on this side's certificate: the connection, once accepted.
func dialAccepted(ctx context.Context, what, addr string, cfg *tls.Config) (net.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, addr, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := readLine(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s %s: %w", what, addr, err)
	}
	if verdict, rest, _ := strings.Cut(line, " "); verdict != "OK" {
		c.Close()
		return nil, fmt.Errorf("%s %s refused this side: %s", what, addr, rest)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// Dial opens a connection to addr from inside the service's network.
func (e *Endpoint) Dial(ctx context.Context, _, addr string) (net.Conn, error) {
	e.mu.Lock()
	sess, state, reason := e.sess, e.state, e.reason
	e.mu.Unlock()
	if sess == nil {
		return nil, fmt.Errorf("network link %s is %s: %s", e.cfg.Name, state, reason)
	}
	st, err := sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("network link %s: %w", e.cfg.Name, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	} else {
		st.SetDeadline(time.Now().Add(20 * time.Second))
	}
	if _, err := io.WriteString(st, addr+"\n"); err != nil {
		st.Close()
		return nil, fmt.Errorf("network link %s: %w", e.cfg.Name, err)
	}
	line, err := readLine(st)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("network link %s: dial %s: %w", e.cfg.Name, addr, err)
	}
	if line != "OK" {
		st.Close()
		return nil, fmt.Errorf("network link %s: dial %s: %w", e.cfg.Name, addr, errors.New(strings.TrimPrefix(line, "ERR ")))
	}
	st.SetDeadline(time.Time{})
	return st, nil
}

// Status reports the endpoint.
func (e *Endpoint) Status() EndpointStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	return EndpointStatus{Name: e.cfg.Name, Service: e.cfg.Address, State: e.state, Reason: e.reason, Since: e.since}
}
