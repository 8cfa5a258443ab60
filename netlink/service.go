package netlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"
)

// ServiceConfig is a network link service.
type ServiceConfig struct {
	Name string
	// TLS is the listener's: its certificate, and the CAs client
	// certificates must be signed by (a client certificate is required).
	TLS    *tls.Config
	Accept Accept
	// Bootstrap are the source cluster's bootstrap addresses; they, the
	// brokers the cluster advertises (Brokers) and Allow are the only
	// addresses the service dials.
	Bootstrap []string
	Allow     []string
	// Brokers returns the addresses the source cluster advertises.
	Brokers func(ctx context.Context) ([]string, error)
}

// Service is a running network link service.
type Service struct {
	cfg ServiceConfig
	log *zap.Logger
	ln  net.Listener

	mu     sync.Mutex
	accept Accept
	assocs map[*association]struct{}
	relay  *relayer
}

// relayer serves tunnel streams: a target address, then bytes both ways,
// to allowed addresses only. A service uses one; so does the source side of
// a source-initiated link (see Dialout).
type relayer struct {
	log       *zap.Logger
	bootstrap []string
	allow     []string
	brokersFn func(ctx context.Context) ([]string, error)

	refreshMu   sync.Mutex // one metadata refresh at a time
	mu          sync.Mutex
	brokers     map[string]bool
	lastRefresh time.Time
}

// association is one connected endpoint.
type association struct {
	id    Identity
	since time.Time
	bytes atomic.Int64
	conn  net.Conn
	sess  *yamux.Session
}

// AssociationStatus is a connected endpoint, for status.
type AssociationStatus struct {
	Identity string    `json:"identity"`
	Since    time.Time `json:"since"`
	Bytes    int64     `json:"bytes"`
}

// Listen starts a service on addr.
func Listen(addr string, cfg ServiceConfig, log *zap.Logger) (*Service, error) {
	if cfg.TLS == nil || len(cfg.TLS.Certificates) == 0 || cfg.TLS.ClientCAs == nil {
		return nil, fmt.Errorf("network link service %s: a certificate and client CAs are required", cfg.Name)
	}
	tc := cfg.TLS.Clone()
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	tc.MinVersion = max(tc.MinVersion, tls.VersionTLS12)
	ln, err := tls.Listen("tcp", addr, tc)
	if err != nil {
		return nil, fmt.Errorf("network link service %s: %w", cfg.Name, err)
	}
	l := log.With(zap.String("networkLinkService", cfg.Name))
	s := &Service{cfg: cfg, log: l, ln: ln, accept: cfg.Accept, assocs: map[*association]struct{}{},
		relay: &relayer{log: l, bootstrap: cfg.Bootstrap, allow: cfg.Allow, brokersFn: cfg.Brokers, brokers: map[string]bool{}}}
	return s, nil
}

// Addr is where the service listens.
func (s *Service) Addr() string { return s.ln.Addr().String() }

// Serve accepts endpoints until ctx ends.
func (s *Service) Serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accepting an endpoint failed", zap.Error(err))
			continue
		}
		go s.handle(ctx, conn.(*tls.Conn))
	}
}

// Close stops listening and drops every association.
func (s *Service) Close() {
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for a := range s.assocs {
		a.sess.Close()
		a.conn.Close()
	}
}

// SetAccept replaces the accept list (a reload): endpoints no longer on it
// are disconnected at once, and refused when they come back.
func (s *Service) SetAccept(a Accept) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accept = a
	for as := range s.assocs {
		if err := a.Allows(as.id); err != nil {
			s.log.Warn("endpoint no longer accepted: disconnected", zap.Stringer("endpoint", as.id))
			as.sess.Close()
			as.conn.Close()
			delete(s.assocs, as)
		}
	}
}

// Associations lists the endpoints connected now.
func (s *Service) Associations() []AssociationStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []AssociationStatus
	for a := range s.assocs {
		out = append(out, AssociationStatus{Identity: a.id.String(), Since: a.since, Bytes: a.bytes.Load()})
	}
	slices.SortFunc(out, func(a, b AssociationStatus) int { return strings.Compare(a.Identity, b.Identity) })
	return out
}

func (s *Service) handle(ctx context.Context, conn *tls.Conn) {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.HandshakeContext(ctx); err != nil {
		s.log.Info("endpoint TLS handshake failed", zap.Stringer("from", conn.RemoteAddr()), zap.Error(err))
		conn.Close()
		return
	}
	id, err := IdentityOf(conn.ConnectionState().PeerCertificates[0])
	if err == nil {
		s.mu.Lock()
		err = s.accept.Allows(id)
		s.mu.Unlock()
	}
	if err != nil {
		s.log.Warn("endpoint refused", zap.Stringer("from", conn.RemoteAddr()), zap.Error(err))
		fmt.Fprintf(conn, "REFUSED %s\n", oneLine(err.Error()))
		conn.Close()
		return
	}
	fmt.Fprintf(conn, "OK %s\n", id)
	conn.SetDeadline(time.Time{})
	sess, err := yamux.Server(conn, yamuxConfig())
	if err != nil {
		conn.Close()
		return
	}
	a := &association{id: id, since: time.Now().UTC(), conn: conn, sess: sess}
	s.mu.Lock()
	if err := s.accept.Allows(id); err != nil { // a reload in between
		s.mu.Unlock()
		sess.Close()
		return
	}
	s.assocs[a] = struct{}{}
	s.mu.Unlock()
	s.log.Info("endpoint connected", zap.Stringer("endpoint", id), zap.Stringer("from", conn.RemoteAddr()))
	defer func() {
		s.mu.Lock()
		delete(s.assocs, a)
		s.mu.Unlock()
		sess.Close()
		s.log.Info("endpoint disconnected", zap.Stringer("endpoint", id))
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		go s.relay.relay(ctx, a.id.String(), &a.bytes, st)
	}
}

// relay serves one stream: the target address, then bytes both ways.
func (r *relayer) relay(ctx context.Context, who string, bytes *atomic.Int64, st net.Conn) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	target, err := readLine(st)
	if err != nil {
		return
	}
	if !r.allowed(ctx, target) {
		r.log.Warn("refused a dial outside the source cluster's brokers and the allow list", zap.String("endpoint", who), zap.String("target", target))
		fmt.Fprintf(st, "ERR %s is not a broker of the source cluster nor on the allow list\n", target)
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	up, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		fmt.Fprintf(st, "ERR %s\n", oneLine(err.Error()))
		return
	}
	defer up.Close()
	st.SetDeadline(time.Time{})
	if _, err := io.WriteString(st, "OK\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(counting{dst, bytes}, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(up, st)
	go pipe(st, up)
	<-done
	<-done
}

// allowed reports whether the relay may dial target: a bootstrap address,
// an allow-list entry, or a broker the cluster advertises (learnt again,
// at most every 5 s, when an address is not known).
func (r *relayer) allowed(ctx context.Context, target string) bool {
	if slices.Contains(r.bootstrap, target) || slices.Contains(r.allow, target) {
		return true
	}
	check := func() (known, stale bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.brokers[target], time.Since(r.lastRefresh) > 5*time.Second
	}
	if known, stale := check(); known || !stale || r.brokersFn == nil {
		return known
	}
	// Streams asking at once wait for one refresh, not one each.
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	if known, stale := check(); known || !stale {
		return known
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := r.brokersFn(rctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastRefresh = time.Now()
	if err != nil {
		r.log.Warn("learning the source cluster's brokers failed", zap.Error(err))
		return false
	}
	r.brokers = map[string]bool{}
	for _, b := range addrs {
		r.brokers[b] = true
	}
	return r.brokers[target]
}

// counting is a writer that adds what it writes to n (the association's
// bytes, live, not only when a connection ends).
type counting struct {
	w io.Writer
	n *atomic.Int64
}

func (c counting) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// readLine reads up to '\n', a byte at a time (nothing after the line may
// be consumed), at most 512 bytes.
func readLine(r io.Reader) (string, error) {
	var b []byte
	var c [1]byte
	for len(b) < 512 {
		if _, err := io.ReadFull(r, c[:]); err != nil {
			return "", err
		}
		if c[0] == '\n' {
			return string(b), nil
		}
		b = append(b, c[0])
	}
	return "", errors.New("line too long")
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 10 * time.Second
	c.LogOutput = io.Discard
	// Kafka fetch responses are large: a bigger window keeps one stream
	// from waiting for window updates on every megabyte.
	c.MaxStreamWindowSize = 16 << 20
	return c
}
