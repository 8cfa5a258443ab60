// Package secure turns a cluster's tls and sasl settings into what the
// Kafka clients need: a TLS config, a SASL mechanism, and the kgo options
// and dialer built from them. Secrets are read from their files here, when
// klink connects (so a reload re-reads them), and never logged.
package secure

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sys/unix"

	"github.com/klink-io/klink/config"
)

// Client is how to reach one cluster.
type Client struct {
	TLS  *tls.Config    // nil: plaintext
	SASL sasl.Mechanism // nil: no SASL
	// Tunnel, if set, opens the network connections (a network link
	// endpoint); TLS runs on top of it, end to end with the broker.
	Tunnel func(ctx context.Context, network, addr string) (net.Conn, error)
	// UserTimeout, if set, bounds how long data written to a connection
	// may stay unacknowledged by the peer's kernel (TCP_USER_TIMEOUT):
	// then the connection dies, and with it what it had not delivered,
	// instead of arriving after a network partition heals. Closing the
	// connection discards unsent data too (SO_LINGER 0). klink's produce
	// connections carry it in a klink cluster, so that an append's
	// lifetime is bounded (see the README's timing argument).
	UserTimeout time.Duration
}

// New reads the files a cluster's settings name and builds its client
// settings. role ("source of link east", "destination") names the cluster in
// errors and warnings.
func New(role string, t config.TLS, s config.SASL, log *zap.Logger) (*Client, error) {
	c := &Client{}
	var err error
	if t.Enabled {
		if c.TLS, err = tlsConfig(role, t, log); err != nil {
			return nil, err
		}
	}
	if s.Mechanism != "" {
		if c.SASL, err = mechanism(role, s, log); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// KgoOpts are the kgo options for the cluster.
func (c *Client) KgoOpts() []kgo.Opt {
	var opts []kgo.Opt
	switch {
	case c.Tunnel != nil, c.UserTimeout > 0:
		opts = append(opts, kgo.Dialer(c.Dial)) // tunnel or socket options, then TLS if any
	case c.TLS != nil:
		opts = append(opts, kgo.DialTLSConfig(c.TLS.Clone()))
	}
	if c.SASL != nil {
		opts = append(opts, kgo.SASL(c.SASL))
	}
	return opts
}

// Dial opens a connection to a broker, with TLS if the cluster uses it
// (the server name is the broker's host unless the settings override it).
func (c *Client) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := c.Tunnel
	if dial == nil {
		d := net.Dialer{Control: userTimeout(c.UserTimeout)}
		dial = d.DialContext
	}
	conn, err := dial(ctx, network, addr)
	if err != nil || c.TLS == nil {
		return conn, err
	}
	cfg := c.TLS.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			conn.Close()
			return nil, err
		}
		cfg.ServerName = host
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

// readSecret reads a file holding a secret, warning when others may read
// it; the secret is trimmed of surrounding white space.
func readSecret(role, what, path string, log *zap.Logger) (string, error) {
	b, err := readPrivate(role, what, path, log)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: %s file %s is empty", role, what, path)
	}
	return s, nil
}

// readPrivate reads a secret or key file, warning when its mode lets group
// or others read it.
func readPrivate(role, what, path string, log *zap.Logger) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", role, what, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("secret file is readable by group or others; chmod 600 it", zap.String("cluster", role), zap.String("file", path), zap.String("mode", fi.Mode().Perm().String()))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", role, what, err)
	}
	return b, nil
}

func tlsConfig(role string, t config.TLS, log *zap.Logger) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s: tls.caFile: %w", role, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: tls.caFile %s holds no PEM certificate", role, t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		certPEM, err := os.ReadFile(t.CertFile)
		if err != nil {
			return nil, fmt.Errorf("%s: tls.certFile: %w", role, err)
		}
		keyPEM, err := readPrivate(role, "tls.keyFile", t.KeyFile, log)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("%s: tls.certFile and tls.keyFile: %w", role, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if t.InsecureSkipVerify {
		log.Warn("TLS CERTIFICATE VERIFICATION IS OFF (tls.insecureSkipVerify): anyone on the path can read and change this cluster's data", zap.String("cluster", role))
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

func mechanism(role string, s config.SASL, log *zap.Logger) (sasl.Mechanism, error) {
	switch s.Mechanism {
	case config.MechPlain, config.MechScram256, config.MechScram512:
		pass, err := readSecret(role, "sasl.passwordFile", s.PasswordFile, log)
		if err != nil {
			return nil, err
		}
		switch s.Mechanism {
		case config.MechPlain:
			return plain.Auth{User: s.Username, Pass: pass}.AsMechanism(), nil
		case config.MechScram256:
			return scram.Auth{User: s.Username, Pass: pass}.AsSha256Mechanism(), nil
		default:
			return scram.Auth{User: s.Username, Pass: pass}.AsSha512Mechanism(), nil
		}
	case config.MechOAuthBearer:
		secret, err := readSecret(role, "sasl.clientSecretFile", s.ClientSecretFile, log)
		if err != nil {
			return nil, err
		}
		return oauth.Oauth(TokenSource(s, secret).Token), nil
	}
	return nil, fmt.Errorf("%s: unknown SASL mechanism %q", role, s.Mechanism)
}

// tokenSource fetches OAUTHBEARER tokens with the client-credentials flow
// and caches each until shortly before it expires.
type tokenSource struct {
	mu   sync.Mutex         // connections authenticate concurrently
	ts   oauth2.TokenSource // caching
	base oauth2.TokenSource // the endpoint itself
}

// TokenSource is the OAUTHBEARER token flow for s, with the client secret.
func TokenSource(s config.SASL, secret string) interface {
	Token(context.Context) (oauth.Auth, error)
} {
	cc := &clientcredentials.Config{ClientID: s.ClientID, ClientSecret: secret, TokenURL: s.TokenEndpoint, Scopes: s.Scopes}
	// Refresh a minute before expiry, so a connection never starts with a
	// token about to lapse.
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Timeout: 15 * time.Second})
	base := cc.TokenSource(ctx)
	return &tokenSource{ts: oauth2.ReuseTokenSourceWithExpiry(nil, base, time.Minute), base: base}
}

func (t *tokenSource) Token(context.Context) (oauth.Auth, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tok, err := t.ts.Token()
	if err == nil && tok.Expiry.IsZero() {
		// No expires_in: do not trust it forever; fetch again in a while.
		cp := *tok
		cp.Expiry = time.Now().Add(5 * time.Minute)
		t.ts = oauth2.ReuseTokenSourceWithExpiry(&cp, t.base, time.Minute)
		tok = &cp
	}
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			// The endpoint's answer, without the request (which
			// holds the client secret).
			return oauth.Auth{}, fmt.Errorf("OAUTHBEARER token endpoint refused: %s %s", re.Response.Status, re.ErrorCode)
		}
		return oauth.Auth{}, fmt.Errorf("OAUTHBEARER token: %w", err)
	}
	return oauth.Auth{Token: tok.AccessToken}, nil
}

// Fingerprint is a digest of everything the settings read from files, so
// that a reload can tell a rotated certificate or secret (same path, new
// contents) and reconnect. Unreadable files make it fail.
func Fingerprint(t config.TLS, s config.SASL) (string, error) {
	h := sha256.New()
	for _, p := range []string{t.CAFile, t.CertFile, t.KeyFile, s.PasswordFile, s.ClientSecretFile} {
		if p == "" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// userTimeout sets TCP_USER_TIMEOUT on a socket before it connects (nil
// when d is 0), and SO_LINGER 0 so that a close drops unsent data.
func userTimeout(d time.Duration) func(network, address string, rc syscall.RawConn) error {
	if d <= 0 {
		return nil
	}
	return func(network, address string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d/time.Millisecond))
			if serr == nil {
				serr = unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			}
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setting TCP_USER_TIMEOUT on a connection to %s: %w", address, serr)
		}
		return nil
	}
}
